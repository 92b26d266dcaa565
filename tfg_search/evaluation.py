"""Run one trial: task + target + config + n samples + seed -> held-out metrics (and the samples).

This is the function every executor calls. It is deterministic: all randomness of a trial comes from
one CPU ``torch.Generator`` seeded with ``seed`` (so a trial draws the same noise on any device).

Example:
    >>> from tasks import get_task
    >>> from tfg_search.evaluation import evaluate, method_config, score
    >>> task = get_task("gmm2d")
    >>> result = evaluate(task, "3", method_config("dps", 0.02), n_samples=16, seed=0,
    ...                   num_inference_steps=10)
    >>> 0.0 <= result.metrics["validity"] <= 1.0
    True
    >>> score({"validity": 0.5, "fd": 2.0}, ["validity", "_fd"])
    -0.75
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from tasks.base import Task
from tfg_search.config import METHODS, TFGConfig
from tfg_search.errors import TFGSearchError
from tfg_search.guidance import guided_sample

EVAL_METHODS: tuple[str, ...] = ("unguided", *METHODS)
"""Methods accepted by :func:`method_config`: ``unguided`` (all strengths 0) plus the presets."""


@dataclass
class TrialResult:
    """The outcome of one trial.

    Attributes:
        metrics: metric name -> value (always includes ``validity`` in [0, 1]).
        samples: the samples ``[n, *task.sample_shape]`` on CPU when requested, else None.
        wall_time_s: wall time of sampling plus metrics, in seconds.
        device: the device the samples were drawn on (e.g. ``"cpu"``, ``"cuda:0"``).
        config: the configuration actually run (with the task's ``clip_x0``).
    """

    metrics: dict[str, float]
    samples: torch.Tensor | None = None
    wall_time_s: float = 0.0
    device: str = "cpu"
    config: TFGConfig | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (without the samples)."""
        return {
            "metrics": dict(self.metrics),
            "wall_time_s": self.wall_time_s,
            "device": self.device,
            "config": self.config.to_dict() if self.config is not None else None,
        }


def method_config(method: str, strength: float | None = None, **overrides: Any) -> TFGConfig:
    """The configuration of ``method`` at ``strength``, with field ``overrides`` (None = unset).

    ``tfg`` without a strength starts from all strengths 0 (set rho / mu / gamma by overrides);
    ``tfg`` with a strength sets rho = mu = strength. ``unguided`` is plain DDIM. The other methods
    are :meth:`TFGConfig.preset` points; their strength defaults to 0 and may also be given through
    the parameter it drives (e.g. ``rho`` for dps, ``mu`` for mpgd).

    Raises:
        TFGSearchError: unknown method or an invalid value (the message names the field).
    """
    key = method.lower().strip()
    if key not in EVAL_METHODS:
        raise TFGSearchError(f"unknown method {method!r}; choose one of {', '.join(EVAL_METHODS)}")
    changes = {k: v for k, v in overrides.items() if v is not None}
    try:
        if key == "unguided":
            if strength is not None or any(changes.get(k) for k in ("rho", "mu", "gamma")):
                raise TFGSearchError("method 'unguided' takes no strength (rho, mu, gamma)")
            return TFGConfig(**changes)
        if key == "tfg" and strength is None:
            return TFGConfig(**changes)
        if strength is None:
            driver = {"dps": "rho", "lgd": "rho", "freedom": "rho", "mpgd": "mu", "ugd": "rho"}[key]
            strength = changes.pop(driver, 0.0)
            if key == "ugd":
                changes.pop("mu", None)
        return TFGConfig.preset(key, strength, **changes)
    except (ValueError, TypeError) as err:
        raise TFGSearchError(f"invalid guidance setting: {err}") from err


def score(metrics: Mapping[str, float], objective: Sequence[str]) -> float:
    """Search score: the mean of the objective's metrics, each oriented so higher is better.

    A name with a leading ``_`` means lower is better (its value enters negated). A missing or
    non-finite metric makes the score ``-inf`` (the trial ranks last, never NaN in a sort).

    Raises:
        TFGSearchError: an empty objective.
    """
    if not objective:
        raise TFGSearchError("the objective needs at least one metric name")
    total = 0.0
    for name in objective:
        key, sign = (name[1:], -1.0) if name.startswith("_") else (name, 1.0)
        value = metrics.get(key)
        if value is None or not math.isfinite(float(value)):
            return -math.inf
        total += sign * float(value)
    return total / len(objective)


def check_objective(task: Task, objective: Sequence[str]) -> None:
    """Raise TFGSearchError when an objective names a metric the task does not produce."""
    unknown = [m for m in objective if m.lstrip("_") not in task.metrics]
    if unknown:
        raise TFGSearchError(
            f"objective metric(s) {', '.join(unknown)} not produced by task {task.name!r}; "
            f"its metrics: {', '.join(task.metrics)} (prefix '_' = lower is better)"
        )


def evaluate(
    task: Task,
    target: str,
    config: TFGConfig,
    n_samples: int,
    seed: int,
    *,
    device: torch.device | str | None = None,
    num_inference_steps: int | None = None,
    return_samples: bool = False,
) -> TrialResult:
    """Draw ``n_samples`` guided samples for ``target`` and judge them with the task's metrics.

    The task decides ``clip_x0`` (it knows its data range); every other field comes from ``config``.

    Args:
        task: the task (models are loaded once per process and device).
        target: a target string of the task (validated first).
        config: the guidance hyper-parameters.
        n_samples: batch size, >= 1.
        seed: seeds the CPU generator of every random draw.
        device: where to sample (default CPU); metrics are always computed on CPU.
        num_inference_steps: DDIM steps (default: the task's ``num_inference_steps``).
        return_samples: keep the samples (on CPU) in the result.

    Raises:
        TFGSearchError: bad target, ``n_samples`` < 1, ``num_inference_steps`` < 1, missing weights.
        NonFiniteSampleError: sampling went NaN/inf (a subclass of TFGSearchError; search: FAIL).
    """
    task.parse_target(target)
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise TFGSearchError(f"the number of samples must be an integer >= 1, got {n_samples!r}")
    steps = task.num_inference_steps if num_inference_steps is None else num_inference_steps
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise TFGSearchError(f"the number of inference steps must be an integer >= 1, got {steps!r}")
    dev = torch.device(device or "cpu")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise TFGSearchError(f"device {dev} requested but CUDA is not available; use --device cpu")
    run_config = config.replace(clip_x0=task.clip_x0)
    start = time.perf_counter()
    model, scheduler = task.diffusion(dev)
    log_f = task.log_f(target, dev)
    generator = torch.Generator().manual_seed(int(seed))
    samples = guided_sample(
        model,
        scheduler,
        log_f,
        run_config,
        (n_samples, *task.sample_shape),
        num_inference_steps=steps,
        generator=generator,
        device=dev,
    )
    samples = samples.detach().cpu()
    metrics = task.compute_metrics(samples, target)
    wall = time.perf_counter() - start
    return TrialResult(
        metrics=metrics,
        samples=samples if return_samples else None,
        wall_time_s=wall,
        device=str(dev),
        config=run_config,
    )

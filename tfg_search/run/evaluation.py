"""Run trials: task + target + configs + n samples + seeds -> held-out metrics (and the samples).

One path for every executor: :func:`evaluate_batch` samples several candidates of one structure in
one batch (each gets the samples it would get alone: :func:`~tfg_search.guidance.guided_sample_many`;
a conditional task's condition, a latent task's samples decoded:
:func:`~tfg_search.guidance.latent.sample_and_decode`) and judges each; :func:`evaluate` is its
one-candidate case. Both check their inputs the same way (:func:`check_run`). Deterministic: all
randomness of a trial comes from one CPU ``torch.Generator`` seeded with its seed, so a trial
draws the same noise on any device.

Example:
    >>> from tasks import get_task
    >>> from tfg_search.guidance.config import method_config
    >>> task = get_task("gmm2d")
    >>> result = evaluate(task, "3", method_config("dps", 0.02), n_samples=16, seed=0,
    ...                   num_inference_steps=10)
    >>> 0.0 <= result.metrics["validity"] <= 1.0
    True
"""

from __future__ import annotations

import socket
import time
from collections.abc import Sequence
from typing import Any

import torch

from tasks.base import Task
from tfg_search.errors import TFGSearchError
from tfg_search.guidance.config import TFGConfig
from tfg_search.guidance.latent import sample_and_decode
from tfg_search.guidance.passes import sample_passes
from tfg_search.run.devices import resolve_device
from tfg_search.trial import TrialOutcome


def check_run(
    task: Task, target: str, n_samples: int, num_inference_steps: int | None, device: Any
) -> tuple[int, torch.device]:
    """Validate a run's inputs; returns (steps, device).

    Raises:
        TFGSearchError: bad target, ``n_samples`` < 1, steps < 1, an unusable device (``device``
            None is the CPU here).
    """
    task.parse_target(target)
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise TFGSearchError(f"the number of samples must be an integer >= 1, got {n_samples!r}")
    steps = task.num_inference_steps if num_inference_steps is None else num_inference_steps
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise TFGSearchError(f"the number of inference steps must be an integer >= 1, got {steps!r}")
    return steps, resolve_device(device, default="cpu")


def evaluate_batch(
    task: Task,
    target: str,
    configs: Sequence[TFGConfig],
    n_samples: int,
    seeds: Sequence[int],
    *,
    device: torch.device | str | None = None,
    num_inference_steps: int | None = None,
    return_samples: bool = False,
) -> list[TrialOutcome | Exception]:
    """Draw ``n_samples`` guided samples per configuration, in one batch, and judge each.

    The configurations must share n_recur, n_iter, n_mc and eta (a round of a search does). The task
    decides ``clip_x0`` (it knows its data range); every other field comes from each config.

    Returns:
        Per configuration its :class:`~tfg_search.trial.TrialOutcome` (``number``: its place in
        the batch; ``wall_time_s``: its share of the batch plus its metrics; ``passes``: the model
        passes it spent, a latent task's decoder passes included) or the exception it
        raised alone (e.g. a
        :class:`~tfg_search.errors.NonFiniteSampleError`, which the search stores as FAIL).

    Raises:
        TFGSearchError: bad inputs (:func:`check_run`), no seed per configuration, missing weights.
    """
    if len(configs) != len(seeds) or not configs:
        raise TFGSearchError("evaluate_batch needs one seed per configuration (and at least one)")
    steps, dev = check_run(task, target, n_samples, num_inference_steps, device)
    runs = [c.replace(clip_x0=task.clip_x0) for c in configs]
    start = time.perf_counter()
    model, scheduler = task.diffusion(dev)
    log_f = task.log_f(target, dev)
    generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
    shape = (n_samples, *task.sample_shape)
    decoder = task.decoder(dev)
    samples, errors = sample_and_decode(  # a latent task's samples come back decoded: images
        model,
        scheduler,
        log_f,
        runs,
        shape,
        generators,
        steps,
        dev,
        conditioning=task.conditioning(target, dev),
        decoder=decoder,
    )
    sampled = time.perf_counter() - start
    results: list[TrialOutcome | Exception] = []
    for i, (part, err) in enumerate(zip(samples, errors, strict=True)):
        if err is not None:
            results.append(err)
            continue
        t0 = time.perf_counter()
        part = part.detach().cpu()
        try:
            metrics = task.compute_metrics(part, target)
        except Exception as exc:  # reported per candidate, like a failing run alone
            results.append(exc)
            continue
        wall = sampled / len(runs) + time.perf_counter() - t0
        kept = part if return_samples else None
        passes = sample_passes(runs[i], steps, n_samples, decoder=decoder is not None)
        results.append(
            TrialOutcome(
                i, metrics, None, wall, str(dev), socket.gethostname(), kept, config=runs[i], passes=passes
            )
        )
    return results


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
) -> TrialOutcome:
    """One configuration: :func:`evaluate_batch` of one, raising what it reports.

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
        TFGSearchError: bad target, ``n_samples`` < 1, steps < 1, bad device, missing weights.
        NonFiniteSampleError: sampling went NaN/inf (a subclass of TFGSearchError; search: FAIL).
    """
    (result,) = evaluate_batch(
        task,
        target,
        [config],
        n_samples,
        [seed],
        device=device,
        num_inference_steps=num_inference_steps,
        return_samples=return_samples,
    )
    if isinstance(result, Exception):
        raise result
    return result

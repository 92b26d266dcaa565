"""What a worker does with trials: task + config + n samples + seed -> metrics (or an error).

The same functions run in-process (the local executor) and inside Ray actors; task models are
loaded once per process (the tasks cache them) and reused for every trial. :func:`run_batch` is the
one evaluation path (specs of one :meth:`TrialSpec.batch_key` sampled together, each as it would be
alone); :func:`run_trial` is its one-spec case; :func:`outcome` is the one place an outcome is built.
"""

from __future__ import annotations

import socket
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tfg_search.guidance.config import TFGConfig


@dataclass(frozen=True)
class TrialSpec:
    """One evaluation to run.

    Attributes:
        number: the Optuna trial number it answers (the coordinator's key).
        task, target: what is guided.
        config: the guidance configuration (a :class:`TFGConfig`; it pickles to Ray workers).
        samples: how many samples to generate.
        seed: the seed of every random draw.
        steps: DDIM steps.
        device: "cpu", "cuda", "cuda:1", ... (None: CUDA when available, else CPU).
        keep_samples: return the samples too (for sample grids).
        task_options: options the task is built with (e.g. the custom task's model folder).
    """

    number: int
    task: str
    target: str
    config: TFGConfig
    samples: int
    seed: int
    steps: int
    device: str | None = None
    keep_samples: bool = False
    task_options: dict[str, str] | None = None

    def batch_key(self) -> tuple[Any, ...]:
        """Specs with equal keys can share one sampling batch (they differ only in strengths)."""
        from tfg_search.guidance.sampler import Structure

        options = tuple(sorted((self.task_options or {}).items()))
        return (
            self.task,
            self.target,
            options,
            self.samples,
            self.steps,
            self.device,
            self.keep_samples,
            Structure.of(self.config),
        )


@dataclass
class TrialOutcome:
    """The result of one :class:`TrialSpec`: metrics, or the error that stopped it."""

    number: int
    metrics: dict[str, float] | None
    error: str | None
    wall_time_s: float
    device: str
    node: str
    samples: Any = field(default=None, repr=False)
    attempts: int = 1
    failure: str | None = None
    """Why it failed: ``"trial"`` (the configuration's own failure, e.g. non-finite samples: final)
    or ``"environment"`` (the machine's: device, import, memory, a dead worker: retried on resume)."""

    @property
    def ok(self) -> bool:
        return self.error is None


def pick_device(device: str | None) -> Any:
    """``device``, or CUDA when available, else CPU (a ``torch.device``)."""
    import torch

    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def describe_error(err: BaseException) -> str:
    """One line for a trial's error: the exception's type and message (with its traceback, on one
    line, when the message is empty)."""
    message = f"{type(err).__name__}: {err}"
    if not str(err):
        tb = "".join(traceback.format_exception(type(err), err, err.__traceback__, limit=3))
        message += " " + tb.strip().replace("\n", " | ")
    return message


def failure_kind(err: BaseException) -> str:
    """``"trial"`` for a failure of the configuration itself (non-finite samples, a metric that
    cannot be computed from them), ``"environment"`` for everything else (see TrialOutcome)."""
    from tfg_search.errors import NonFiniteSampleError

    return "trial" if isinstance(err, (NonFiniteSampleError, FloatingPointError)) else "environment"


def outcome(
    spec: TrialSpec, result: Any, wall_time_s: float, device: str, node: str | None = None
) -> TrialOutcome:
    """The outcome of ``spec`` from a :class:`~tfg_search.run.evaluation.TrialResult` or an exception."""
    node = node or socket.gethostname()
    if isinstance(result, BaseException):
        return TrialOutcome(
            spec.number, None, describe_error(result), wall_time_s, device, node, failure=failure_kind(result)
        )
    samples = result.samples.cpu() if spec.keep_samples and result.samples is not None else None
    return TrialOutcome(spec.number, dict(result.metrics), None, wall_time_s, device, node, samples)


def run_batch(specs: Sequence[TrialSpec]) -> list[TrialOutcome]:
    """Evaluate specs that share one :meth:`TrialSpec.batch_key` in one sampling batch.

    Any exception becomes the outcome's ``error`` (the search stores the trial as FAIL): one
    candidate's failure (e.g. non-finite samples) is its own; a failure of the whole batch (e.g.
    missing weights, a bad device) is reported for each spec.
    """
    from tasks import get_task
    from tfg_search.run.evaluation import evaluate_batch

    if len({s.batch_key() for s in specs}) > 1:
        raise ValueError("run_batch needs specs with one batch_key (group them first)")
    first = specs[0]
    start = time.perf_counter()
    device = first.device or "default"
    try:
        dev = pick_device(first.device)
        device = str(dev)
        task = get_task(first.task, first.task_options)
        results: list[Any] = evaluate_batch(
            task,
            first.target,
            [s.config for s in specs],
            first.samples,
            [s.seed for s in specs],
            device=dev,
            num_inference_steps=first.steps,
            return_samples=first.keep_samples,
        )
    except Exception as err:  # the whole batch failed: report it for each spec
        wall = (time.perf_counter() - start) / len(specs)
        return [outcome(s, err, wall, device) for s in specs]
    share = (time.perf_counter() - start) / len(specs)
    return [
        outcome(s, r, r.wall_time_s if not isinstance(r, BaseException) else share, device)
        for s, r in zip(specs, results, strict=True)
    ]


def run_trial(spec: TrialSpec) -> TrialOutcome:
    """Evaluate one spec (:func:`run_batch` of one)."""
    return run_batch([spec])[0]

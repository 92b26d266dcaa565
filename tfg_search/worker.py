"""What a worker does with one trial: task + config + n samples + seed -> metrics (or an error).

The same function runs in-process (the local executor) and inside Ray actors; task models are
loaded once per process (the tasks cache them) and reused for every trial.
"""

from __future__ import annotations

import socket
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import torch

from tfg_search.config import TFGConfig


@dataclass(frozen=True)
class TrialSpec:
    """One evaluation to run.

    Attributes:
        number: the Optuna trial number it answers (the coordinator's key).
        task, target: what is guided.
        config: ``TFGConfig.to_dict()``.
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
    config: dict[str, Any]
    samples: int
    seed: int
    steps: int
    device: str | None = None
    keep_samples: bool = False
    task_options: dict[str, str] | None = None


@dataclass
class TrialOutcome:
    """The result of one :class:`TrialSpec`: metrics, or the error that stopped it."""

    number: int
    metrics: dict[str, float] | None
    error: str | None
    wall_time_s: float
    device: str
    node: str
    samples: torch.Tensor | None = field(default=None, repr=False)
    attempts: int = 1

    @property
    def ok(self) -> bool:
        return self.error is None


def pick_device(device: str | None) -> torch.device:
    """``device``, or CUDA when available, else CPU."""
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def describe_error(err: BaseException) -> str:
    """One line for a trial's ``error`` attr: the exception's type and message (its traceback
    when the message is empty). Call it inside the ``except`` block that caught ``err``."""
    message = f"{type(err).__name__}: {err}"
    if not str(err):
        message += " " + traceback.format_exc(limit=3).replace("\n", " | ")
    return message


def run_trial(spec: TrialSpec) -> TrialOutcome:
    """Evaluate one spec; any exception becomes ``error`` (the search stores the trial as FAIL)."""
    from tasks import get_task
    from tfg_search.evaluation import evaluate

    node = socket.gethostname()
    device = pick_device(spec.device)
    start = time.perf_counter()
    try:
        task = get_task(spec.task, spec.task_options)
        result = evaluate(
            task,
            spec.target,
            TFGConfig.from_dict(spec.config),
            spec.samples,
            spec.seed,
            device=device,
            num_inference_steps=spec.steps,
            return_samples=spec.keep_samples,
        )
    except Exception as err:  # reported, stored as FAIL, the search goes on
        return TrialOutcome(
            spec.number, None, describe_error(err), time.perf_counter() - start, str(device), node
        )
    samples = result.samples.cpu() if spec.keep_samples and result.samples is not None else None
    return TrialOutcome(
        spec.number, dict(result.metrics), None, time.perf_counter() - start, str(device), node, samples
    )

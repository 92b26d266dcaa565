"""A trial as the layers pass it on: what it is asked (:class:`TrialSpec`) and what it returns
(:class:`TrialOutcome`).

The coordinator (or the Ray Tune searcher) builds a spec per Optuna trial
(:mod:`tfg_search.run.loop`), an executor runs it (:mod:`tfg_search.run.executors`) through the
one evaluation path (:func:`tfg_search.run.worker.run_batch` ->
:func:`tfg_search.run.evaluation.evaluate_batch`), and the outcome is told back and stored as the
trial's record (:func:`tfg_search.store.record.told`). Both types pickle, so they travel to Ray
actors and back. Torch-free.

Example:
    >>> from tfg_search.guidance.config import TFGConfig
    >>> spec = TrialSpec(0, "gmm2d", "3", TFGConfig(rho=0.02), samples=16, seed=0, steps=10)
    >>> outcome = failed(spec.number, FloatingPointError("nan"), 0.1, "cpu", "n1")
    >>> outcome.ok, outcome.failure
    (False, 'trial')
"""

from __future__ import annotations

import socket
import traceback
from dataclasses import dataclass, field
from typing import Any

from tfg_search.errors import TFGSearchError
from tfg_search.guidance.config import TFGConfig

BATCH_SIZE = 6
"""Most candidates of a round sampled in one batch by default (``--batch-size``; the local
executor's, for the command line and the Python API alike)."""
FAILURE_TRIAL = "trial"
"""The configuration itself failed (e.g. its samples went non-finite): final, never retried."""
FAILURE_ENVIRONMENT = "environment"
"""The machine failed the trial (device, import, memory, a dead worker): retried on resume."""
FAILURE_INTERRUPTED = "interrupted"
"""The launcher was stopped (Ctrl-C, SIGTERM, kill -9) while the trial ran: retried on resume."""
FAILURE_USER = "user"
"""The user's code or input failed the trial (a custom task's predictor or evaluator raised, any
:class:`~tfg_search.errors.TFGSearchError` inside it): the search stops; retried on resume, after
the fix."""
RETRIED_ON_RESUME = (FAILURE_ENVIRONMENT, FAILURE_INTERRUPTED, FAILURE_USER)


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
    """What one evaluation returned: its metrics, or the error that stopped it.

    Attributes:
        number: the trial number of its spec (for a plain evaluation: its place in the batch).
        metrics: metric name -> value (always includes ``validity``), None when it failed.
        error: one line saying why it failed (None when it did not).
        wall_time_s: wall time of its sampling (its share of a batch) plus its metrics.
        device: where the samples were drawn (e.g. ``"cpu"``, ``"cuda:0"``).
        node: the machine (``hostname``, or ``hostname/ray-node-id`` on Ray).
        samples: the samples ``[n, *task.sample_shape]`` on CPU when asked for, else None.
        attempts: how many times it ran (a Ray actor that died mid-trial: 2).
        failure: why it failed: :data:`FAILURE_TRIAL` (the configuration's own failure, final),
            :data:`FAILURE_ENVIRONMENT` (the machine's: retried on resume) or
            :data:`FAILURE_USER` (the user's code: the search stops; retried after the fix).
        config: the configuration actually run (with the task's ``clip_x0``), when it ran.
        details: a user failure's traceback as text (shown by the CLI's ``--debug``).
        passes: the model passes the evaluation spent, as the evaluation counted them with what
            only it knows (a latent task's decoder passes:
            :func:`~tfg_search.guidance.passes.sample_passes` with ``decoder=True``); None when it
            did not run to its metrics (the record then counts them from the spec).
    """

    number: int
    metrics: dict[str, float] | None
    error: str | None = None
    wall_time_s: float = 0.0
    device: str = "cpu"
    node: str = ""
    samples: Any = field(default=None, repr=False)
    attempts: int = 1
    failure: str | None = None
    config: TFGConfig | None = field(default=None, repr=False)
    details: str | None = field(default=None, repr=False)
    passes: dict[str, int] | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return self.error is None


def describe_error(err: BaseException) -> str:
    """One line for a trial's error: the exception's type and message (with its traceback, on one
    line, when the message is empty)."""
    message = f"{type(err).__name__}: {err}"
    if not str(err):
        tb = "".join(traceback.format_exception(type(err), err, err.__traceback__, limit=3))
        message += " " + tb.strip().replace("\n", " | ")
    return message


def failure_kind(err: BaseException) -> str:
    """:data:`FAILURE_TRIAL` for a failure of the configuration itself (non-finite samples, a
    metric that cannot be computed from them), :data:`FAILURE_USER` for the user's (their code
    raised: :class:`~tfg_search.errors.UserCodeError`, or any other
    :class:`~tfg_search.errors.TFGSearchError`), :data:`FAILURE_ENVIRONMENT` for anything else.

    Example:
        >>> from tfg_search.errors import UserCodeError
        >>> failure_kind(UserCodeError("predictor", "m:f", ValueError("x"))), failure_kind(MemoryError())
        ('user', 'environment')
    """
    if isinstance(err, FloatingPointError):
        return FAILURE_TRIAL
    return FAILURE_USER if isinstance(err, TFGSearchError) else FAILURE_ENVIRONMENT


def failed(
    number: int, err: BaseException, wall_time_s: float, device: str, node: str | None = None
) -> TrialOutcome:
    """The outcome of a trial that raised ``err`` (a user failure: its own message, which names
    the function, and its traceback in ``details``)."""
    kind = failure_kind(err)
    user = kind == FAILURE_USER
    return TrialOutcome(
        number,
        None,
        " ".join(str(err).split()) if user else describe_error(err),
        wall_time_s,
        device,
        node or socket.gethostname(),
        failure=kind,
        details="".join(traceback.format_exception(err)) if user else None,
    )

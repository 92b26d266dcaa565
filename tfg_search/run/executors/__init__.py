"""Where trials run: in this process (:class:`LocalExecutor`) or on Ray actors (``RayExecutor``).

An executor takes a round of :class:`~tfg_search.trial.TrialSpec` at once and yields a
:class:`~tfg_search.trial.TrialOutcome` for each as it finishes; the coordinator tells each
result to the study as it arrives.
"""

from __future__ import annotations

from tfg_search.run.executors.base import Executor
from tfg_search.run.executors.local import LocalExecutor

__all__ = ["Executor", "LocalExecutor", "make_executor"]


def make_executor(kind: str, **options: object) -> Executor:
    """``"local"`` (options: batch_size, threads) or ``"ray"`` (options: address, num_workers,
    gpus_per_trial, cpus_per_trial, device)."""
    if kind == "local":
        return LocalExecutor(**options)  # type: ignore[arg-type]
    if kind == "ray":
        from tfg_search.run.executors.ray_pool import RayExecutor

        return RayExecutor(**options)  # type: ignore[arg-type]
    from tfg_search.errors import TFGSearchError

    raise TFGSearchError(f"unknown executor {kind!r}; choose local or ray")

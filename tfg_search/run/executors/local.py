"""The in-process executor: trials run in the coordinator's process, a round batched where it can.

Specs with equal :meth:`~tfg_search.trial.TrialSpec.batch_key` (task, target, sample count,
steps, device and structure: n_recur, n_iter, n_mc, eta) run as one sampling batch
(:func:`tfg_search.run.worker.run_batch`), each with the samples it would get alone. ``batch_size`` caps
how many candidates share a batch (1 turns batching off).

Its defaults are the command line's: ``tfg-search search`` builds this executor with the same
:data:`tfg_search.trial.BATCH_SIZE` and thread rule (:func:`tfg_search.run.threads.set_threads`),
so a search run from Python with ``run_search(settings)`` batches and threads as the same search
run from the CLI.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from tfg_search.run.executors.base import Executor
from tfg_search.run.threads import set_threads
from tfg_search.run.worker import run_batch
from tfg_search.trial import BATCH_SIZE, TrialOutcome, TrialSpec


def group(specs: Sequence[TrialSpec], batch_size: int) -> list[list[TrialSpec]]:
    """Batches of at most ``batch_size`` specs with equal batch keys, in first-seen order."""
    groups: dict[tuple[Any, ...], list[list[TrialSpec]]] = {}
    order: list[list[TrialSpec]] = []
    for spec in specs:
        chunks = groups.setdefault(spec.batch_key(), [])
        if not chunks or len(chunks[-1]) >= batch_size:
            chunks.append([])
            order.append(chunks[-1])
        chunks[-1].append(spec)
    return order


class LocalExecutor(Executor):
    """Evaluate in this process; task models are loaded once and stay warm.

    Building one sets this process's torch threads (they are process-wide).

    Args:
        batch_size: most candidates evaluated in one sampling batch (1: one at a time).
        threads: torch threads (default: :func:`~tfg_search.run.threads.default_threads`, read now).
    """

    name = "local"

    def __init__(self, batch_size: int = BATCH_SIZE, threads: int | None = None) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.threads = set_threads(threads)

    def map(self, specs: Sequence[TrialSpec]) -> Iterator[TrialOutcome]:
        for batch in group(specs, self.batch_size):
            yield from run_batch(batch)

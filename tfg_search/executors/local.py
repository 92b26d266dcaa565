"""The in-process executor: trials run one after another in the coordinator's process."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from tfg_search.executors.base import Executor
from tfg_search.worker import TrialOutcome, TrialSpec, run_trial


class LocalExecutor(Executor):
    """Evaluate in this process; task models are loaded once and stay warm."""

    name = "local"

    def map(self, specs: Sequence[TrialSpec]) -> Iterator[TrialOutcome]:
        for spec in specs:
            yield run_trial(spec)

"""The executor interface."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence

from tfg_search.trial import TrialOutcome, TrialSpec


class Executor(ABC):
    """Runs trial specs and yields their outcomes as they finish (in any order)."""

    name: str = ""

    @abstractmethod
    def map(self, specs: Sequence[TrialSpec]) -> Iterator[TrialOutcome]:
        """Run every spec; yield one outcome per spec, as each finishes."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release workers (idempotent)."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""The searches of the service, one :class:`Strategy` each: planning, trial sizes, finals, ranking.

A strategy is what differs between ``--search rungs``, ``beam`` and ``gp|tpe|random``; everything
else (asking trials, storing each result, the final re-runs, interruptions) is the one loop of
:mod:`tfg_search.run.loop`, which the coordinator, the Ray Tune searcher and the search benchmark
all drive. A strategy says:

* **planning**: the search study's sampler, and where its search stands (:meth:`Strategy.plan`:
  the round, how many trials may be asked now, whether it is over);
* **trial sizes**: how many samples a trial draws and on which seed (:meth:`Strategy.size`: the
  rung search's rungs draw more, on their own seeds);
* **finals**: which configurations are re-run at full size (:meth:`Strategy.finals`);
* **the ranking**: the search's points, best first (:meth:`Strategy.ranking`): what the progress
  display, the plot, the summary and ``tfg-search best`` on an unfinished study show, and what the
  finals re-run.

Example:
    >>> strategy = strategy_for(resolved)  # doctest: +SKIP
    >>> strategy.plan(studies.search).pending  # doctest: +SKIP
    8
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from searchers import SearchPlan, TFGBeamSampler, TFGRungSampler, optuna_internals
from searchers.base import LatticeSampler
from searchers.rungs import units
from tfg_search.guidance.config import STRUCTURES
from tfg_search.run.settings import OPTUNA_SEARCHES, ResolvedSettings
from tfg_search.store.record import TrialRecord

__all__ = [
    "BeamStrategy",
    "EarlierRungs",
    "LatticeStrategy",
    "RungStrategy",
    "Strategy",
    "is_0_2_rungs",
    "strategy_for",
]


class Strategy(ABC):
    """One search of the service (see the module docstring).

    Args:
        resolved: the search's settings.
        seeds: warm-start configurations (``resolved.seed_configs`` and the presets' points fixed
            when the study was created), evaluated first by the searches that take them.
        transfer: the earlier searches of other targets frozen into the study when it was created
            (:mod:`tfg_search.run.transfer`), used by the rung search.
    """

    def __init__(
        self,
        resolved: ResolvedSettings,
        seeds: Sequence[Mapping[str, Any]] = (),
        transfer: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        self.resolved = resolved
        self.seeds = [dict(s) for s in seeds]
        self.transfer = [dict(s) for s in transfer]
        self._sampler = self.make_sampler()

    @property
    def sampler(self) -> optuna.samplers.BaseSampler:
        """The sampler of the search study ``N:search``."""
        return self._sampler

    @abstractmethod
    def make_sampler(self) -> optuna.samplers.BaseSampler:
        """A new sampler of this search."""

    @abstractmethod
    def plan(self, search: optuna.Study) -> SearchPlan:
        """Where the search stands, from the search study's storage (``ranking`` may be empty:
        :meth:`ranking` is what ranks)."""

    points_held = False
    """Whether a trial is a point evaluated at several rungs (its record lists its evaluations,
    and it stays RUNNING between them)."""

    def new_trial(self, search: optuna.Study) -> optuna.Trial | None:
        """The next trial of the search study to evaluate: a new one (as ``study.ask()`` makes
        it, less the look for enqueued trials: nothing is enqueued in a search study); None when
        the search has nothing to hand out after all."""
        return optuna_internals.new_trial(search)

    def in_flight(self, search: optuna.Study, trial: FrozenTrial) -> bool:
        """Whether a RUNNING trial of the search study was being evaluated (to re-run in place)."""
        return True

    def finish(self, search: optuna.Study) -> None:  # noqa: B027 (most searches do nothing here)
        """What the search does once it is exhausted, before its finals (nothing, here)."""

    def tell(self, search: optuna.Study, trial: optuna.Trial, score: float | None) -> None:
        """Tell the search study a trial's score (``None``: the trial failed)."""
        if score is None:
            search.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            search.tell(trial, score)

    @abstractmethod
    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        """The trial's parameters, suggested (its sampler fixes them)."""

    def point(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """A trial's parameters as the lattice point they are (values, and schedules)."""
        return dict(params)

    def size(self, trial: optuna.Trial) -> tuple[int, int]:
        """(samples, seed) of a search trial: ``samples`` on the search's seed."""
        return self.resolved.samples, self.resolved.seed

    @abstractmethod
    def round_of(self, trial: optuna.Trial) -> int | None:
        """The round (wave) a trial was asked in."""

    @abstractmethod
    def ranking(self, search: optuna.Study, records: Sequence[TrialRecord]) -> list[TrialRecord]:
        """The search's points, best first: one record each (``records``: the search study's)."""

    def finals(self, search: optuna.Study, records: Sequence[TrialRecord]) -> list[TrialRecord]:
        """The configurations to re-run at full size: the top ``final_top`` of the ranking."""
        return self.ranking(search, records)[: self.resolved.final_top]


class LatticeStrategy(Strategy):
    """The searches of :mod:`searchers` (their sampler plans the rounds and ranks the points)."""

    _sampler: LatticeSampler

    @property
    def lattice_sampler(self) -> LatticeSampler:
        return self._sampler

    def _common(self) -> dict[str, Any]:
        r = self.resolved
        return dict(
            space=r.lattices(),
            search_schedules=r.search_schedules
            if isinstance(r.search_schedules, bool)
            else tuple(r.search_schedules),
            seed_configs=self.seeds or None,
            seed=r.seed,
        )

    def plan(self, search: optuna.Study) -> SearchPlan:
        return self._sampler.plan(search)

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        params: dict[str, Any] = {}
        scheduled = set(self.resolved.schedule_params())
        for name, lattice in self.resolved.lattices().items():
            params[name] = trial.suggest_float(name, lattice.low, lattice.cap, log=not lattice.zero)
            if name in scheduled:
                params[f"{name}_schedule"] = trial.suggest_categorical(f"{name}_schedule", list(STRUCTURES))
        return params

    def round_of(self, trial: optuna.Trial) -> int | None:
        return self._sampler.trial_round(trial)

    def ranking(self, search: optuna.Study, records: Sequence[TrialRecord]) -> list[TrialRecord]:
        by_number = {r.number: r for r in records if r.value is not None and math.isfinite(r.value)}
        return [by_number[n] for n in self._sampler.plan(search).ranking if n in by_number]


class RungStrategy(LatticeStrategy):
    """``--search rungs``: :class:`searchers.TFGRungSampler`, synchronous (the loop holds each
    round's trials): a trial is a point, evaluated at rung ``j`` on ``units(j)`` times the
    samples and seed ``seed + 1 + j`` (``seed`` at rung 0), held RUNNING between its rungs, told
    COMPLETE at the top rung and PRUNED when the search ends below it; the finals re-run the top
    of its ranking (its promotions re-evaluate the best points on fresh samples before it ranks
    them)."""

    _sampler: TFGRungSampler
    points_held = True

    def make_sampler(self) -> TFGRungSampler:
        schedule = self.resolved.rung_schedule()
        assert schedule is not None
        return TFGRungSampler(
            schedule=schedule, synchronous=True, transfer=self.transfer or None, **self._common()
        )

    def new_trial(self, search: optuna.Study) -> optuna.Trial | None:
        return self._sampler.ask(search)

    def tell(self, search: optuna.Study, trial: optuna.Trial, score: float | None) -> None:
        self._sampler.tell(search, trial, math.nan if score is None else score)

    def in_flight(self, search: optuna.Study, trial: FrozenTrial) -> bool:
        """A point's trial is in flight when its rung was asked and not reported (else it waits,
        held, for its promotion)."""
        return (self._sampler.trial_rung(trial) or 0) >= len(trial.intermediate_values)

    def finish(self, search: optuna.Study) -> None:
        self._sampler.finish(search)  # the points held below the top rung: pruned

    def size(self, trial: optuna.Trial) -> tuple[int, int]:
        rung = self._sampler.trial_rung(trial) or 0
        return self.resolved.samples * units(rung), rung_seed(self.resolved.seed, rung)


class BeamStrategy(LatticeStrategy):
    """``--search beam``: :class:`searchers.TFGBeamSampler`, every trial on ``samples`` and the
    search's seed; with a warm start, the finals also re-run the best warm-start point when the
    beam's ranking left it out of the top ``final_top``: a small-sample score is noisy, and the
    maximum of many noisy scores favours lucky configurations (the winner's curse), so the answer,
    chosen on the final samples, is then never below the best warm-start configuration
    (measured on digits 3, docs/benchmarks-search.md)."""

    _sampler: TFGBeamSampler

    def make_sampler(self) -> TFGBeamSampler:
        r = self.resolved
        return TFGBeamSampler(top_k=r.top_k, max_rounds=r.rounds, steps_down=r.steps_down, **self._common())

    def finals(self, search: optuna.Study, records: Sequence[TrialRecord]) -> list[TrialRecord]:
        ranking = self.ranking(search, records)
        top = ranking[: self.resolved.final_top]
        points = self._sampler.seed_points
        warm = next((r for r in ranking if any(_at(r.params, p) for p in points)), None)
        if warm is not None and all(r.number != warm.number for r in top):
            top.append(warm)
        return top


class EarlierRungs(Strategy):
    """A rung search made by tfg-search 0.2 (``--sampler beam --mode rungs``: one trial per rung
    evaluation, before one trial per point), finished: read and reported as it stands, never
    continued (this version's rung search is another algorithm; :func:`strategy_for` is used
    only when :func:`finished_0_2_rungs` says the study is finished)."""

    def make_sampler(self) -> optuna.samplers.BaseSampler:
        return optuna.samplers.RandomSampler()

    def plan(self, search: optuna.Study) -> SearchPlan:
        return SearchPlan(round=0, candidates=[], pending=0, running=0, exhausted=True, ranking=[])

    def new_trial(self, search: optuna.Study) -> optuna.Trial | None:
        return None

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        raise RuntimeError("a rung search of tfg-search 0.2 is not continued")

    def round_of(self, trial: optuna.Trial) -> int | None:
        return None

    def ranking(self, search: optuna.Study, records: Sequence[TrialRecord]) -> list[TrialRecord]:
        return []


def is_0_2_rungs(settings: Mapping[str, Any]) -> bool:
    """Whether stored settings are those of a rung search made by tfg-search 0.2 (spelled with
    ``sampler`` and ``mode``, read compatibility: :func:`tfg_search.run.settings.current_spelling`)."""
    spelled_0_2 = "search" not in settings and settings.get("sampler", "beam") == "beam"
    return spelled_0_2 and settings.get("mode") == "rungs"


def rung_seed(seed: int, rung: int | None) -> int:
    """The sampling seed of a search trial: the search's ``seed`` for the beam and for rung 0 of
    the rung search; ``seed + 1 + rung`` for a later rung (fresh samples, common to the rung's
    candidates; ``seed + 1`` is the final re-runs')."""
    return seed if not rung else seed + 1 + rung


def _at(params: Mapping[str, Any], point: Mapping[str, Any]) -> bool:
    """Whether a trial's parameters are the lattice point ``point`` (values exactly as suggested)."""
    return all(params.get(name) == value for name, value in point.items())


def strategy_for(
    resolved: ResolvedSettings,
    seeds: Sequence[Mapping[str, Any]] = (),
    transfer: Sequence[Mapping[str, Any]] = (),
) -> Strategy:
    """The strategy of ``resolved.search`` (``seeds``: the warm start; ``transfer``: the sources
    of the rung search; see :class:`Strategy`)."""
    if resolved.search in OPTUNA_SEARCHES:
        from tfg_search.run.waves import OptunaStrategy

        return OptunaStrategy(resolved)
    if resolved.search == "rungs":
        return RungStrategy(resolved, seeds, transfer)
    return BeamStrategy(resolved, seeds)

"""Searches in waves of parallel workers, on an oracle: the service's own loop, driven as it runs.

A search benchmark compares *answers at equal compute*. Every method here is what ``tfg-search
search --search METHOD`` runs: the service's loop (``tfg_search/run/loop.py``: the method's
strategy plans, sizes its trials, picks its finals and ranks its points; the loop asks, tells and
re-runs the finals), on in-memory studies, with an *oracle* in place of the executor. With ``K``
workers a round (or an Optuna wave) is evaluated ``K`` trials at a time; after each ``K`` the
method's *incumbent* (the top of its own ranking: what it would answer if stopped there) is
recorded with the compute spent so far, and its answer is the best of its final re-runs.

* ``rungs``: the rung search (``TFGRungSampler``), the default;
* ``beam``: the paper's beam (``TFGBeamSampler``);
* ``gp``, ``tpe``, ``random``: Optuna's GPSampler, TPESampler (``constant_liar=True``) and
  RandomSampler on the lattice exponents; every trial is drawn with the search's one seed, as
  ``tfg-search search --search gp`` draws it, so a point proposed again gets the same score
  (``fresh=False``) and costs its passes again. Their finals are drawn on a fork of the oracle,
  and ``extra_waves`` more waves then continue the search past its budget, for the anytime curve.

An *oracle* is any object with ``evaluate(key, samples, fresh=True) -> score`` (an evaluation of
a lattice point: its next samples, common to every point at the same position of its stream; with
``fresh=False`` its first samples again), ``passes`` (a :class:`Passes` of everything evaluated
so far) and ``fork()``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import optuna

from searchers import Lattice
from tfg_search.run.coordinator import create_search
from tfg_search.run.loop import FINALS, SEARCHING, Pending, SearchLoop
from tfg_search.run.settings import OPTUNA_SEARCHES, SearchSettings
from tfg_search.run.strategy import strategy_for
from tfg_search.run.transfer import source_points
from tfg_search.run.waves import EXPONENT, OptunaStrategy
from tfg_search.store.layout import LAYOUT, StudyInfo
from tfg_search.trial import TrialOutcome

optuna.logging.set_verbosity(optuna.logging.ERROR)

Key = tuple[int, ...]
METHODS = ("rungs", "beam", "gp", "tpe", "random")
OPTUNA = OPTUNA_SEARCHES


@dataclass(frozen=True)
class Passes:
    """Model passes, summed over samples, steps and recurrence rounds."""

    denoiser: int = 0
    denoiser_backward: int = 0
    predictor: int = 0

    def __add__(self, other: Passes) -> Passes:
        return Passes(
            self.denoiser + other.denoiser,
            self.denoiser_backward + other.denoiser_backward,
            self.predictor + other.predictor,
        )


class Oracle(Protocol):
    def evaluate(self, key: Key, samples: int, fresh: bool = True) -> float: ...

    @property
    def passes(self) -> Passes: ...

    def fork(self) -> Oracle: ...


@dataclass
class Wave:
    """One wave: how many evaluations it ran, the compute spent so far, the incumbent after it."""

    size: int
    passes: Passes
    incumbent: Key


@dataclass
class Run:
    """One search: its waves, its answer, what it evaluated."""

    method: str
    waves: list[Wave] = field(default_factory=list)
    answer: Key | None = None
    evaluations: int = 0
    search_waves: int = 0
    extended: list[Wave] = field(default_factory=list)
    """Waves past the budget (Optuna's samplers with ``extra_waves``): the anytime curve only."""
    points: list[dict[str, Any]] = field(default_factory=list)
    """The search's evaluated points as a transfer source (``tfg_search.run.transfer``)."""

    @property
    def passes(self) -> Passes:
        return self.waves[-1].passes if self.waves else Passes()


class _Enqueued(OptunaStrategy):
    """An Optuna sampler's search whose first trials are given points (``enqueue_trial``)."""

    def __init__(self, resolved: Any, enqueued: list[dict[str, int]]) -> None:
        self.enqueued = enqueued
        super().__init__(resolved)

    def new_trial(self, search: optuna.Study) -> optuna.Trial:
        number = len(search.get_trials(deepcopy=False))
        if number >= len(self.enqueued):
            return super().new_trial(search)
        search.enqueue_trial(self.enqueued[number])
        return search.ask()


def keys_of(params: Mapping[str, Any], space: Mapping[str, Lattice]) -> Key:
    """The lattice key of a trial's parameters (values on the lattice)."""
    return tuple(space[n].nearest(float(params[n])) for n in space)


def search(
    method: str,
    oracle: Oracle,
    space: Mapping[str, Lattice],
    *,
    task: str,
    target: str,
    seed: int,
    unit: int,
    workers: int,
    final_top: int,
    final_samples: int,
    seeds: Sequence[Key] = (),
    trials: int | None = None,
    extra_waves: int = 0,
    transfer: Sequence[Mapping[str, Any]] = (),
    warm: Sequence[Key] = (),
) -> Run:
    """One search of ``method`` on ``oracle`` in waves of ``workers`` (see the module docstring).

    Args:
        task, target: the task and target whose settings the search resolves (the oracle
            evaluates; the task's models are not loaded).
        unit: samples of a search trial (a rung-0 evaluation of the rung search).
        seeds: warm-start points of the rung search, as lattice keys.
        trials: search trials of Optuna's samplers.
        transfer: the rung search's sources (``tfg_search.run.transfer``: earlier searches of
            other targets, as frozen into a study).
        warm: points an Optuna sampler's study is given first (``enqueue_trial``, as a user of
            Optuna warm-starts by hand).
    """
    from tasks import get_task

    names = list(space)
    settings = SearchSettings(
        task=task,
        target=target,
        samples=unit,
        final_samples=final_samples,
        final_top=final_top,
        space=dict(space),
        seed=seed,
        search=method,
        seed_configs=tuple({n: space[n].value(k) for n, k in zip(names, key, strict=True)} for key in seeds),
        seed_presets=False,
        objective=("validity",),
        trials=trials if method in OPTUNA else None,
        wave=None if method == "beam" else workers,
    )
    resolved = settings.resolve(get_task(task))
    strategy = strategy_for(resolved, resolved.seed_configs, transfer)
    if warm and method in OPTUNA:
        enqueued = [{n + EXPONENT: k for n, k in zip(names, key, strict=True)} for key in warm]
        strategy = _Enqueued(resolved, enqueued)
    info = StudyInfo(task, target, resolved.method, resolved.to_dict(), layout=LAYOUT)
    studies = create_search(optuna.storages.InMemoryStorage(), "b", info, strategy.sampler)
    loop = SearchLoop(studies, resolved, strategy)
    fresh = method not in OPTUNA
    run = Run(method)

    def evaluate(on: Oracle, pending: Pending, fresh: bool) -> None:
        key = keys_of(loop.point(pending.params), space)
        value = on.evaluate(key, pending.spec.samples, fresh)
        if math.isfinite(value):
            outcome = TrialOutcome(pending.number, {"validity": value})
        else:
            outcome = TrialOutcome(pending.number, None, f"score {value}", failure="trial")
        loop.tell(pending, outcome)

    def search_waves(into: list[Wave]) -> None:
        while loop.phase == SEARCHING:
            batch = loop.wave()
            for i in range(0, len(batch), workers):
                chunk = batch[i : i + workers]
                for pending in chunk:
                    evaluate(oracle, pending, fresh)
                leader = loop.leader()
                assert leader is not None
                into.append(Wave(len(chunk), oracle.passes, keys_of(loop.point(leader.params), space)))

    search_waves(run.waves)
    run.search_waves = len(run.waves)
    run.evaluations = sum(w.size for w in run.waves)
    finals_oracle = oracle.fork() if method in OPTUNA else oracle
    assert loop.phase == FINALS
    batch = loop.wave()
    for pending in batch:
        evaluate(finals_oracle, pending, True)
    best = loop.best()
    assert loop.done and best is not None and best.role == "final"
    run.answer = keys_of(loop.point(best.params), space)
    run.evaluations += len(batch)
    run.waves.append(Wave(len(batch), finals_oracle.passes, run.answer))
    run.points = source_points(loop.studies.search.get_trials(deepcopy=False), space, maximize=True)
    if extra_waves and method in OPTUNA:  # the same search, past its budget (the same sampler)
        assert resolved.trials is not None and resolved.wave is not None
        longer = resolved.trials + extra_waves * resolved.wave
        strategy.resolved = dataclasses.replace(resolved, trials=longer)
        loop = SearchLoop(loop.studies, strategy.resolved, strategy)
        search_waves(run.extended)
    return run

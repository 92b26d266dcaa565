"""Searches in waves of parallel workers, on an oracle: the real samplers, driven ask-and-tell.

A search benchmark compares *answers at equal compute*. Every method here is the code a user
runs, driven the way ``tfg-search search`` drives it with ``K`` workers:

* ``rungs``: ``TFGBeamSampler(mode="rungs")``, the default search (``searchers/rungs.py``): each
  round is asked whole (at most ``K`` trials at a time: a round larger than ``K`` takes several
  waves), evaluated on ``unit * sampler.trial_units(trial)`` samples, told;
* ``beam``: ``TFGBeamSampler(mode="reference")``, the paper's beam, the same way;
* ``gp``, ``tpe``, ``random``: Optuna's GPSampler (batch acquisition over the running trials,
  qLogEI), TPESampler (``constant_liar=True``) and RandomSampler on the lattice exponents
  (``suggest_int``), ``K`` trials asked, evaluated and told per wave; every trial is drawn with
  the search's one seed, as ``tfg-search search --sampler gp`` draws it, so a point proposed
  again gets the same score and costs its passes again.

Every method then makes the service's final re-runs: its ``final_top`` best configurations (by
its own ranking: the best scores observed, the beam's ranking, the rung search's ranking) on
``final_samples`` fresh samples, one more wave; the better re-run is its answer. Compute is
what the oracle counts: model passes summed over samples, steps and recurrence rounds.

An *oracle* is any object with ``evaluate(key, samples, fresh=True) -> score`` (an evaluation of
a lattice point: its next samples, common to every point at the same position of its stream; with
``fresh=False`` its first samples again), ``passes`` (a :class:`Passes` of everything evaluated
so far) and ``fork()``.

Each run records, after every wave, the compute spent and the method's *incumbent*: the point it
would answer if stopped there (the best observed for Optuna's samplers, the top of the ranking
for the TFG sampler, the answer after the final wave).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import optuna

from searchers import Lattice, TFGBeamSampler, TFGRungSampler
from searchers.rungs import RungSchedule

optuna.logging.set_verbosity(optuna.logging.ERROR)

Key = tuple[int, ...]
METHODS = ("rungs", "beam", "gp", "tpe", "random")
OPTUNA = ("gp", "tpe", "random")


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

    @property
    def passes(self) -> Passes:
        return self.waves[-1].passes if self.waves else Passes()


def keys_of(params: Mapping[str, Any], space: Mapping[str, Lattice]) -> Key:
    """The lattice key of a trial's parameters (values on the lattice)."""
    return tuple(space[n].nearest(float(params[n])) for n in space)


def _suggest_values(trial: optuna.Trial, space: Mapping[str, Lattice]) -> Key:
    params = {n: trial.suggest_float(n, lat.low, lat.cap, log=not lat.zero) for n, lat in space.items()}
    return keys_of(params, space)


def _finals(oracle: Oracle, ranked: Sequence[Key], final_top: int, final_samples: int, run: Run) -> None:
    top = list(dict.fromkeys(ranked))[:final_top]
    values = [oracle.evaluate(k, final_samples) for k in top]
    best = max(range(len(top)), key=lambda i: (_finite(values[i]), -i))
    run.answer = top[best]
    run.evaluations += len(top)
    run.waves.append(Wave(len(top), oracle.passes, run.answer))


def _finite(v: float) -> float:
    return v if math.isfinite(v) else -math.inf


def tfg_sampler(
    oracle: Oracle,
    space: Mapping[str, Lattice],
    *,
    mode: str,
    seed: int,
    unit: int,
    workers: int,
    final_top: int,
    final_samples: int,
    schedule: RungSchedule | None = None,
    seeds: Sequence[Key] = (),
    top_k: int = 2,
    rounds: int = 6,
) -> Run:
    """The TFG sampler (rung search or beam), driven round by round in waves of ``workers``
    (``seeds``: warm-start points, as lattice keys)."""
    names = list(space)
    seed_configs = [{n: space[n].value(k) for n, k in zip(names, key, strict=True)} for key in seeds]
    sampler: TFGRungSampler | TFGBeamSampler
    if mode == "rungs":
        sampler = TFGRungSampler(
            space=dict(space),
            schedule=schedule or RungSchedule(wave=workers),
            seed_configs=seed_configs or None,
            seed=seed,
        )
    else:
        sampler = TFGBeamSampler(
            space=dict(space), top_k=top_k, max_rounds=rounds, seed_configs=seed_configs or None, seed=seed
        )
    study = optuna.create_study(direction="maximize", sampler=sampler)
    run = Run("rungs" if mode == "rungs" else "beam")
    numbers: dict[int, Key] = {}
    while True:
        plan = sampler.plan(study)
        if plan.exhausted or plan.pending == 0:
            break
        todo = plan.pending
        while todo > 0:
            trials = [study.ask() for _ in range(min(workers, todo))]
            todo -= len(trials)
            for t in trials:
                key = _suggest_values(t, space)
                numbers[t.number] = key
                value = oracle.evaluate(key, unit * (sampler.trial_units(t) if mode == "rungs" else 1))  # type: ignore[union-attr]
                if math.isfinite(value):
                    study.tell(t, value)
                else:
                    study.tell(t, state=optuna.trial.TrialState.FAIL)
            run.evaluations += len(trials)
            run.search_waves += 1
            ranking = sampler.plan(study).ranking
            run.waves.append(Wave(len(trials), oracle.passes, numbers[ranking[0]]))
    ranked = [numbers[n] for n in sampler.plan(study).ranking]
    _finals(oracle, ranked, final_top, final_samples, run)
    return run


def optuna_sampler(
    kind: str,
    oracle: Oracle,
    space: Mapping[str, Lattice],
    *,
    seed: int,
    samples: int,
    workers: int,
    trials: int,
    final_top: int,
    final_samples: int,
    extra_waves: int = 0,
) -> Run:
    """Optuna's ``kind`` sampler: ``trials`` trials of ``samples`` samples in waves of ``workers``
    (the last one partial if need be), then the finals, which are the run's answer. With
    ``extra_waves``, the search then goes on that many more waves (on the oracle as it was before
    the finals: ``oracle.fork()``), for the anytime curve; the answer stays the one at ``trials``.
    """
    sampler = {
        "gp": lambda: optuna.samplers.GPSampler(seed=seed),
        "tpe": lambda: optuna.samplers.TPESampler(seed=seed, constant_liar=True),
        "random": lambda: optuna.samplers.RandomSampler(seed=seed),
    }[kind]()
    study = optuna.create_study(direction="maximize", sampler=sampler)
    run = Run(kind)
    names = list(space)
    asked = 0
    extra = 0
    while asked < trials or extra < extra_waves:
        if asked < trials:
            n = min(workers, trials - asked)
        else:
            n, extra = workers, extra + 1
        batch = [study.ask() for _ in range(n)]
        for t in batch:
            key = tuple(
                t.suggest_int(f"{m}_exponent", space[m].lowest_exponent, space[m].size - 1) for m in names
            )
            value = oracle.evaluate(key, samples, fresh=False)  # one seed for every trial, as live
            if math.isfinite(value):
                study.tell(t, value)
            else:
                study.tell(t, state=optuna.trial.TrialState.FAIL)
        asked += n
        wave = Wave(n, oracle.passes, _best_observed(study, names))
        if asked <= trials:
            run.evaluations += n
            run.search_waves += 1
            run.waves.append(wave)
        else:
            run.extended.append(wave)
        if asked == trials:  # the answer at the budget: finals on a fork of the oracle
            done = sorted(
                study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)),
                key=lambda t: (-float(t.value), t.number),  # type: ignore[arg-type]
            )
            ranked = [tuple(t.params[f"{m}_exponent"] for m in names) for t in done]
            _finals(oracle.fork(), ranked, final_top, final_samples, run)
    return run


def _best_observed(study: optuna.Study, names: list[str]) -> Key:
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    best = min(done, key=lambda t: (-float(t.value), t.number))  # type: ignore[arg-type]
    return tuple(best.params[f"{m}_exponent"] for m in names)

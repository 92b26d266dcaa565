"""Search strategies compared by the search benchmarks, on a finite grid of candidate keys.

A :class:`GridSpace` is the benchmark's search space: lattices (with 0 where the lattice has it)
and, for some parameters, the schedule structure. A *key* is one integer per parameter (its
lattice exponent, -1 for 0) then one structure index per scheduled parameter. Strategies see only
an *oracle*: ``scores(keys) -> list[float]`` (a batch, so a round is evaluated in one sampling
batch), and count distinct keys evaluated.

* :func:`beam`: the beam doubling search, replayed exactly as ``searchers.TFGBeamSampler`` plans it
  (``searchers.planner.plan_round``), on the sampler's own key space: the reference mode, the mode
  with 0 in the lattices and warm-start seeds, or the refined mode.
* :func:`optuna_search`: Optuna's TPE, random search and Gaussian-process BO (``GPSampler``) on
  the same grid (each exponent through ``suggest_int``, each structure through
  ``suggest_categorical``); repeats cost nothing and do not count.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna

from searchers import SCHEDULES, Lattice, TFGBeamSampler

optuna.logging.set_verbosity(optuna.logging.WARNING)

Key = tuple[int, ...]
Oracle = Callable[[Sequence[Key]], list[float]]


@dataclass(frozen=True)
class GridSpace:
    """Lattices (parameter order) and the parameters whose schedule is a dimension."""

    lattices: dict[str, Lattice]
    schedules: tuple[str, ...] = ()
    start_schedules: dict[str, str] = field(
        default_factory=lambda: {"rho": "increase", "mu": "increase", "gamma": "decrease"}
    )

    @property
    def names(self) -> list[str]:
        return list(self.lattices)

    def keys(self) -> list[Key]:
        """Every point of the grid."""
        axes = [self.lattices[n].exponents() for n in self.names]
        axes += [range(len(SCHEDULES)) for _ in self.schedules]
        return [tuple(k) for k in itertools.product(*axes)]

    def params(self, key: Key) -> dict[str, Any]:
        """The candidate's parameters (values and ``<name>_schedule``)."""
        n = len(self.names)
        out: dict[str, Any] = {
            name: self.lattices[name].value(k) for name, k in zip(self.names, key[:n], strict=True)
        }
        for name, s in zip(self.schedules, key[n:], strict=True):
            out[f"{name}_schedule"] = SCHEDULES[s]
        return out

    def key(self, params: Mapping[str, Any]) -> Key:
        """The key of a sampler's parameters (values on the lattice)."""
        ks = [self.lattices[n].nearest(float(params.get(n, 0.0))) for n in self.names]
        ss = [
            SCHEDULES.index(params.get(f"{n}_schedule", self.start_schedules.get(n, "constant")))
            for n in self.schedules
        ]
        return (*ks, *ss)

    def size(self) -> int:
        return math.prod(len(self.lattices[n].exponents()) for n in self.names) * len(SCHEDULES) ** len(
            self.schedules
        )


@dataclass
class Run:
    """One search: the keys it evaluated (in order) with their scores.

    ``estimate`` (optional) replaces the scores for ranking, over the keys it holds (e.g. means
    over re-evaluations); ``extra`` counts evaluations beyond one per key (re-evaluations).
    """

    name: str
    evaluated: dict[Key, float] = field(default_factory=dict)
    estimate: dict[Key, float] | None = None
    extra: int = 0

    @property
    def evaluations(self) -> int:
        """Distinct keys evaluated."""
        return len(self.evaluated)

    @property
    def total_evaluations(self) -> int:
        """Every evaluation, re-evaluations included."""
        return len(self.evaluated) + self.extra

    def top(self, n: int) -> list[Key]:
        """The ``n`` best keys by search score, or by ``estimate`` where given (ties: first evaluated)."""
        scores = self.estimate if self.estimate is not None else self.evaluated
        order = {k: i for i, k in enumerate(self.evaluated)}
        ranked = sorted(scores, key=lambda k: (-_finite(scores[k]), order[k]))
        return ranked[:n]


def reevaluated(run: Run, second: Oracle, m: int, name: str) -> Run:
    """``run`` with its ``m`` best re-evaluated once by ``second`` (another search seed, common to
    them: a paired re-evaluation), ranked among themselves by the mean of both scores."""
    top = run.top(m)
    again = second(top)
    estimate = {k: 0.5 * (run.evaluated[k] + v) for k, v in zip(top, again, strict=True)}
    return Run(name, dict(run.evaluated), estimate, run.extra + len(top))


def _finite(v: float) -> float:
    return v if math.isfinite(v) else -1e300


def _suggest(trial: optuna.Trial, space: GridSpace, sampler_space: Mapping[str, Lattice]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for name, lattice in sampler_space.items():
        params[name] = trial.suggest_float(name, lattice.low, lattice.cap, log=not lattice.zero)
    for name in space.schedules:
        params[f"{name}_schedule"] = trial.suggest_categorical(f"{name}_schedule", list(SCHEDULES))
    return params


def beam(
    space: GridSpace,
    oracle: Oracle,
    name: str,
    *,
    sampler_space: Mapping[str, Lattice] | None = None,
    top_k: int = 2,
    rounds: int = 6,
    seeds: Sequence[Mapping[str, Any]] = (),
    **sampler_options: Any,
) -> Run:
    """The real ``TFGBeamSampler`` driven ask-and-tell (a whole round per oracle call).

    ``sampler_space``: the sampler's lattices (default: the grid's); e.g. the reference lattices
    without 0, whose points are a subset of the grid.
    """
    lattices = dict(sampler_space or space.lattices)
    sampler = TFGBeamSampler(
        lattices,
        top_k=top_k,
        max_rounds=rounds,
        search_schedules=tuple(space.schedules),
        start_schedules={n: s for n, s in space.start_schedules.items() if n in lattices},
        seed_configs=list(seeds) or None,
        **sampler_options,
    )
    study = optuna.create_study(direction="maximize", sampler=sampler)
    run = Run(name)
    while not sampler.is_exhausted(study):
        plan = sampler.plan(study)
        if plan.pending == 0:
            break
        trials = [study.ask() for _ in range(plan.pending)]
        keys = []
        for t in trials:
            keys.append(space.key(_suggest(t, space, lattices)))
        values = oracle(keys)
        for t, k, v in zip(trials, keys, values, strict=True):
            run.evaluated.setdefault(k, v)
            if math.isfinite(v):
                study.tell(t, v)
            else:
                study.tell(t, state=optuna.trial.TrialState.FAIL)
    return run


def optuna_search(space: GridSpace, oracle: Oracle, kind: str, budget: int, seed: int) -> Run:
    """TPE, random or GP-BO over the grid until ``budget`` distinct keys are evaluated, or it has
    asked ``10 x budget`` trials (a sampler that keeps proposing evaluated points, as GP-BO does
    once a small grid is mostly evaluated, stops there: each of its asks refits the model)."""
    samplers: dict[str, Callable[[], optuna.samplers.BaseSampler]] = {
        "tpe": lambda: optuna.samplers.TPESampler(seed=seed),
        "random": lambda: optuna.samplers.RandomSampler(seed=seed),
        "gp": lambda: optuna.samplers.GPSampler(seed=seed),
    }
    study = optuna.create_study(direction="maximize", sampler=samplers[kind]())
    run = Run(kind)
    budget = min(budget, space.size())
    asked = 0
    while run.evaluations < budget and asked < 10 * budget:
        trial = study.ask()
        asked += 1
        ks = [
            trial.suggest_int(f"k_{n}", space.lattices[n].lowest_exponent, space.lattices[n].size - 1)
            for n in space.names
        ]
        ss = [
            SCHEDULES.index(trial.suggest_categorical(f"{n}_schedule", list(SCHEDULES)))
            for n in space.schedules
        ]
        key = (*ks, *ss)
        if key not in run.evaluated:
            run.evaluated[key] = oracle([key])[0]
        v = run.evaluated[key]
        if math.isfinite(v):
            study.tell(trial, v)
        else:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
    return run

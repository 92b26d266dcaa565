"""The grids, oracles and beam replays of ``guidance_quality.py`` (on the evaluation cache of
``_cache.py``): search strategies on a finite grid of candidate keys.

A :class:`GridSpace` is the benchmark's search space: lattices (with 0 where the lattice has it)
and, for some parameters, the schedule structure. A *key* is one integer per parameter (its
lattice exponent, -1 for 0) then one structure index per scheduled parameter. Strategies see only
an *oracle*: ``scores(keys) -> list[float]`` (a batch, so a round is evaluated in one sampling
batch), and count distinct keys evaluated.

* :func:`beam`: the beam doubling search, replayed exactly as ``searchers.TFGBeamSampler`` plans it
  (``searchers.planner.plan_round``), on the sampler's own key space: the reference mode, the mode
  with 0 in the lattices and warm-start seeds, or the refined mode.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
from _cache import ChunkEvaluator

from searchers import SCHEDULES, Lattice, TFGBeamSampler
from tfg_search.guidance.config import TFGConfig

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
    mode: str = "reference",
) -> Run:
    """The real ``TFGBeamSampler`` driven ask-and-tell (a whole round per oracle call).

    ``sampler_space``: the sampler's lattices (default: the grid's); e.g. the reference lattices
    without 0, whose points are a subset of the grid. ``mode``: "reference" (the paper's
    neighbourhood) or "refined" (``steps_down=True``: a neighbour may also step down).
    """
    lattices = dict(sampler_space or space.lattices)
    sampler = TFGBeamSampler(
        space=lattices,
        top_k=top_k,
        max_rounds=rounds,
        search_schedules=tuple(space.schedules),
        start_schedules={n: s for n, s in space.start_schedules.items() if n in lattices},
        seed_configs=list(seeds) or None,
        steps_down=mode == "refined",
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


FINAL_SEED = 999
"""Search seed of every final re-run: fresh noise, shared by all searches (paired finals)."""


def z(init: float, factor: float, cap: float) -> Lattice:
    return Lattice(init, factor, cap, zero=True)


TASKS: dict[str, dict[str, Any]] = {
    "digits": {
        "space": GridSpace(
            {"rho": z(0.02, 2, 0.64), "mu": z(0.02, 2, 0.64), "gamma": z(0.01, 10, 1)}, schedules=("rho",)
        ),
        "targets": ["0", "1", "3", "5", "8"],
        "samples": 32,
        "final_samples": 128,
        "steps": 10,
    },
    "shapes": {
        "space": GridSpace({"rho": z(0.25, 2, 8), "mu": z(0.06, 2, 0.96), "gamma": z(0.01, 10, 0.1)}),
        "targets": ["cyan-triangle", "yellow-triangle", "blue-square"],
        "samples": 32,
        "final_samples": 64,
        "steps": 10,
    },
    "gmm2d": {
        "space": GridSpace({"rho": z(0.002, 2, 0.032), "mu": z(0.002, 2, 0.032), "gamma": z(0.001, 10, 0.1)}),
        "targets": ["3"],
        "samples": 32,
        "final_samples": 32,
        "steps": 8,
    },
}


class GridOracle:
    """Scores of grid keys for one target and search seed, through the evaluation cache."""

    def __init__(self, ev: ChunkEvaluator, target: str, base: Any, space: GridSpace, seed: int, chunks: int):
        self.ev, self.target, self.base, self.space = ev, target, base, space
        self.seed, self.chunks = seed, chunks
        self.known: dict[Key, float] = {}

    def config(self, key: Key) -> TFGConfig:
        return self.base.config(self.space.params(key))

    def __call__(self, keys: list[Key]) -> list[float]:
        todo = [k for k in dict.fromkeys(keys) if k not in self.known]
        if todo:
            res = self.ev.evaluate(self.target, [(self.config(k), self.seed, self.chunks) for k in todo])
            self.known.update({k: r.score for k, r in zip(todo, res, strict=True)})
        return [self.known[k] for k in keys]

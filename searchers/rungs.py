"""The rung search: a spread start, surrogate-guided refinement and successive halving (no Optuna).

The default search of tfg-search (``TFGBeamSampler(mode="rungs")``, docs/searchers.md). The paper's
beam (docs/algorithm.md, section 5) starts at the weakest strengths and climbs one lattice step per
round on one noisy small-sample score per candidate; this search spends the same model passes
differently, in rounds that are waves of parallel workers:

1. **Spread** (rounds ``0 .. ceil(spread / wave) - 1``): ``spread`` points over the whole lattice,
   the warm-start seeds first (e.g. the earlier methods' configurations), then a scrambled Sobol
   design of the exponents (Owen scrambling, seeded: the same seed gives the same design), each on
   one unit of samples (rung 0).
2. **Refine** (``refine`` rounds of ``wave`` new points, rung 0): a Gaussian-process surrogate of
   the score over the lattice keys (:mod:`searchers.surrogate`) proposes the points of highest
   upper confidence bound ``mean + beta * sd``, one at a time, each chosen point then "believed"
   at its mean so that a round spreads out (the kriging believer of batch Bayesian optimisation).
3. **Promote** (one round per entry of ``promote``): successive halving (Jamieson and Talwalkar,
   2016; Li et al., Hyperband, 2018). Rung ``j`` re-evaluates the ``promote[j - 1]`` points of
   rung ``j - 1`` with the best posterior mean on as many fresh samples as they already have
   (``2 ** (j - 1)`` units: a point's total doubles at each rung), so the survivors are judged
   on ever more samples and a point that won a small evaluation by luck is caught.

A point's score is the sample-weighted mean of its evaluations; all candidates of one rung are
drawn on that rung's seed (common random numbers: they are compared on the same noise). The
ranking, best first: the points of the highest rung reached, by that score, then the others by
it. A round's candidates depend only on the records of the rounds before it, so the plan is a
pure function of the stored trials (restartable, parallel-safe through the sampler's claims).

Keys: a point's key (exponents, then structure indices; :class:`~searchers.planner.KeySpace`)
followed by its rung: ``(*point, rung)``.

Example:
    >>> space = KeySpace(sizes=(4, 4), lows=(-1, -1), rungs=3)
    >>> planner = RungPlanner(space, RungSchedule(wave=4, spread=8, refine=1, promote=(4, 2)))
    >>> plan = planner.plan([])
    >>> plan.round, len(plan.candidates), plan.candidates[0][-1]
    (0, 4, 0)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .planner import Key, KeySpace, Outcome, Record, RoundPlan, resolve
from .surrogate import GaussianProcess

__all__ = ["RungPlanner", "RungSchedule", "units"]


def units(rung: int) -> int:
    """Fresh sample units an evaluation at ``rung`` draws: 1 at rung 0, then as many as the point
    already has (``2 ** (rung - 1)``), so that its total doubles.

    Example:
        >>> [units(j) for j in range(4)]
        [1, 1, 2, 4]
    """
    return 1 if rung == 0 else 2 ** (rung - 1)


@dataclass(frozen=True)
class RungSchedule:
    """How a rung search spends its budget.

    Args:
        wave: candidates per round of the spread and refine phases (the parallel workers).
        spread: points of the spread start (seeds included).
        refine: rounds of ``wave`` surrogate-chosen points.
        promote: points promoted to rung 1, 2, ... (each at most the size of the rung below).
        beta: exploration weight of the upper confidence bound.
    """

    wave: int = 8
    spread: int = 16
    refine: int = 2
    promote: tuple[int, ...] = (4, 2)
    beta: float = 1.0

    def __post_init__(self) -> None:
        for name in ("wave", "spread"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}.")
        if isinstance(self.refine, bool) or not isinstance(self.refine, int) or self.refine < 0:
            raise ValueError(f"refine must be an int >= 0, got {self.refine!r}.")
        if any(isinstance(p, bool) or not isinstance(p, int) or p < 1 for p in self.promote):
            raise ValueError(f"promote must hold ints >= 1, got {self.promote!r}.")
        if not self.beta >= 0:
            raise ValueError(f"beta must be >= 0, got {self.beta!r}.")

    @property
    def spread_rounds(self) -> int:
        return math.ceil(self.spread / self.wave)

    @property
    def rounds(self) -> int:
        """Rounds in all."""
        return self.spread_rounds + self.refine + len(self.promote)

    def units(self, seeds: int = 0) -> int:
        """Sample units the search draws in all (its budget, finals excluded), at most."""
        first = max(self.spread, seeds) + self.refine * self.wave
        return first + sum(p * units(j + 1) for j, p in enumerate(self.promote))


class RungPlanner:
    """The rung search's plan over the records of its trials (the interface of
    :class:`searchers.planner.Planner`: :meth:`plan` gives a :class:`~searchers.planner.RoundPlan`).

    Args:
        space: the key space; ``space.rungs`` must be ``len(schedule.promote) + 1``.
        schedule: the budget.
        maximize: whether larger values are better.
        seeds: warm-start points (point keys, without the rung) evaluated first.
        design_seed: seed of the Sobol scrambling.
    """

    def __init__(
        self,
        space: KeySpace,
        schedule: RungSchedule,
        maximize: bool = True,
        seeds: Sequence[Key] = (),
        design_seed: int = 0,
    ) -> None:
        if space.rungs != len(schedule.promote) + 1:
            raise ValueError(
                f"the key space has {space.rungs} rungs; the schedule needs {len(schedule.promote) + 1}."
            )
        self.space = space
        self.schedule = schedule
        self.maximize = maximize
        self.design_seed = design_seed
        self._points = space.points()
        point_space = space.point_space()
        start: list[Key] = []
        for key in seeds:
            if point_space.is_valid(tuple(key)) and tuple(key) not in start:
                start.append(tuple(key))
        self._design = self._spread(start)
        self._cache: dict[int, tuple[tuple, tuple[Key, ...]]] = {}

    # -- the phases -----------------------------------------------------------------------------
    def _spread(self, start: list[Key]) -> list[Key]:
        """The seeds, then Sobol points of the exponent lattice (structures at their start)."""
        from scipy.stats import qmc

        s = self.space
        n = len(s.sizes)
        design = list(start)
        want = max(self.schedule.spread, len(design))
        structures = tuple(s.start_structures[i] for i in s.structure_slots)
        sobol = qmc.Sobol(n, scramble=True, seed=self.design_seed)
        tries = 0
        while len(design) < min(want, len(self._points)) and tries < 64:
            tries += 1
            for u in sobol.random(_pow2(want)):
                key = (
                    tuple(
                        low + min(size - low - 1, int(v * (size - low)))
                        for v, low, size in zip(u, s.lows, s.sizes, strict=True)
                    )
                    + structures
                )
                if key not in design:
                    design.append(key)
                if len(design) >= want:
                    break
        return design

    def _model(self, observed: dict[Key, list[tuple[float, int]]]) -> GaussianProcess:
        keys, scores, weights = [], [], []
        for point, evaluations in observed.items():
            score, total = _combined(evaluations)
            keys.append(point)
            scores.append(score if self.maximize else -score)
            weights.append(total)
        s = self.space
        n = len(s.sizes)
        lows = [*s.lows, *([0] * len(s.structure_slots))]
        highs = [*(size - 1 for size in s.sizes), *([max(s.n_structures - 1, 1)] * len(s.structure_slots))]
        categorical = [False] * n + [True] * len(s.structure_slots)
        return GaussianProcess.fit(keys, scores, weights, lows=lows, highs=highs, categorical=categorical)

    def _candidates(self, round_index: int, observed: dict[Key, list[tuple[float, int]]]) -> tuple[Key, ...]:
        """The candidates of a round, from what the rounds before it observed."""
        sched = self.schedule
        if round_index < sched.spread_rounds:
            part = self._design[round_index * sched.wave : (round_index + 1) * sched.wave]
            if round_index == sched.spread_rounds - 1:
                part = self._design[round_index * sched.wave :]  # seeds beyond spread join the last
            return tuple((*k, 0) for k in part)
        if not observed:
            return ()
        model = self._model(observed)
        if round_index < sched.spread_rounds + sched.refine:
            free = [p for p in self._points if p not in observed]
            chosen: list[Key] = []
            while free and len(chosen) < sched.wave:
                mean, sd = model.predict(free)
                i = int(np.argmax(mean + sched.beta * sd))  # first of equals: lattice order
                chosen.append(free.pop(i))
                model = model.with_believed(chosen[-1:])
            return tuple((*k, 0) for k in chosen)
        rung = round_index - sched.spread_rounds - sched.refine + 1
        if rung > len(sched.promote):
            return ()
        below = [p for p, ev in observed.items() if len(ev) == rung and all(math.isfinite(v) for v, _ in ev)]
        if not below:
            return ()
        mean, _ = model.predict(below)
        order = sorted(range(len(below)), key=lambda i: (-mean[i], i))
        return tuple((*below[i], rung) for i in order[: sched.promote[rung - 1]])

    # -- the plan -------------------------------------------------------------------------------
    def plan(self, records: Sequence[Record], stable: int = 0) -> RoundPlan:
        """The current round over ``records`` (``stable`` is accepted for the interface)."""
        status = resolve(records)
        observed: dict[Key, list[tuple[float, int]]] = {}
        order: dict[Key, int] = {}
        done_keys: list[Key] = []
        round_index = 0
        candidates: tuple[Key, ...] = ()
        history: list[tuple] = []
        while True:
            fingerprint = tuple(history)
            cached = self._cache.get(round_index)
            if cached is not None and cached[0] == fingerprint:
                candidates = cached[1]
            else:
                candidates = self._candidates(round_index, observed)
                self._cache[round_index] = (fingerprint, candidates)
            for key in candidates:
                order.setdefault(key, len(order))
            pending = tuple(k for k in candidates if k not in status)
            running = tuple(k for k in candidates if k in status and status[k].outcome is Outcome.RUNNING)
            finished = not candidates or not (pending or running)
            if not finished:
                break
            for key in candidates:
                record = status[key]
                value = (
                    record.value
                    if record.outcome is Outcome.COMPLETE and record.value is not None
                    else math.nan
                )
                value = value if not math.isnan(value) else -math.inf if self.maximize else math.inf
                observed.setdefault(key[:-1], []).append((value, units(key[-1])))
                history.append((key, record.number, value))
                done_keys.append(key)
            if not candidates or round_index + 1 >= self.schedule.rounds:
                ranking = self._ranking(observed, status, done_keys)
                return RoundPlan(
                    round_index, candidates, (), (), True, ranking, self._numbers(ranking, status), order
                )
            round_index += 1
        ranking = self._ranking(observed, status, done_keys)
        return RoundPlan(
            round_index, candidates, pending, running, False, ranking, self._numbers(ranking, status), order
        )

    def _ranking(
        self, observed: dict[Key, list[tuple[float, int]]], status: dict[Key, Record], done: list[Key]
    ) -> tuple[Key, ...]:
        """Done points (as the key of their last evaluation), best first: highest rung reached,
        then combined score, then search order."""
        last: dict[Key, tuple[int, Key]] = {}
        for position, key in enumerate(done):
            last[key[:-1]] = (position, key)
        sign = -1.0 if self.maximize else 1.0

        def sort_key(point: Key) -> tuple[int, float, int]:
            score, _ = _combined(observed[point])
            value = sign * score if math.isfinite(score) else math.inf
            return (-len(observed[point]), value, last[point][0])

        return tuple(last[p][1] for p in sorted(observed, key=sort_key))

    @staticmethod
    def _numbers(ranking: tuple[Key, ...], status: dict[Key, Record]) -> tuple[int, ...]:
        return tuple(status[k].number for k in ranking)


def _combined(evaluations: list[tuple[float, int]]) -> tuple[float, int]:
    """Sample-weighted mean score of a point's evaluations (a failure fails it) and its units."""
    total = sum(u for _, u in evaluations)
    if any(not math.isfinite(v) for v, _ in evaluations):
        return -math.inf, total
    return sum(v * u for v, u in evaluations) / total, total


def _pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())

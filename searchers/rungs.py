"""The rung search: a spread start, surrogate-guided refinement and successive halving (no Optuna).

The default search of tfg-search (:class:`searchers.TFGRungSampler`, docs/searchers.md). The
paper's beam (docs/algorithm.md, section 5) starts at the weakest strengths and climbs one lattice
step per round on one noisy small-sample score per candidate; this search spends the same model
passes differently, in rounds that are waves of parallel workers (:class:`RungPlanner`):

1. **Spread** (rounds ``0 .. ceil(spread / wave) - 1``): ``spread`` points over the whole lattice,
   the warm-start seeds first (e.g. the earlier methods' configurations), then a scrambled Sobol
   design of the exponents (Owen scrambling, seeded: the same seed gives the same design), each on
   one unit of samples (rung 0). With *transfer* (earlier searches of other targets,
   :mod:`searchers.transfer`), a round of their answers and best-predicted points comes first, and
   their models become the surrogate's prior mean, weighted by how well they rank this search's
   points (none when none ranks them better than chance: the search is then cold).
2. **Refine** (``refine`` rounds of ``wave`` new points, rung 0): a Gaussian-process surrogate of
   the score over the lattice keys (:mod:`searchers.surrogate`, fitted to the normal scores of
   the points' ranks) proposes the points of highest upper confidence bound ``mean + beta * sd``,
   one at a time, each chosen point then "believed" at its mean so that a round spreads out (the
   kriging believer of batch Bayesian optimisation).
3. **Promote** (one round per entry of ``promote``): successive halving (Jamieson and Talwalkar,
   2016; Li et al., Hyperband, 2018). Rung ``j`` re-evaluates the ``promote[j - 1]`` points of
   rung ``j - 1`` with the best posterior mean on as many fresh samples as they already have
   (``2 ** (j - 1)`` units: a point's total doubles at each rung), so the survivors are judged
   on ever more samples and a point that won a small evaluation by luck is caught.
4. **Champions** (as many rounds as needed, often none): every point below the top rung whose
   estimate beats the best estimate at the top rung is promoted one rung, best first, up to
   ``wave`` of them a round, until none does. So the answer (the best point of the top rung) is
   never beaten by the estimate of any point the search saw: a point that looked best on few
   samples is evaluated up to the top rung before the search ends, and keeps its place only if
   its score holds there.

A point's *estimate* is the sample-weighted mean of its evaluations; a record's value is the
point's estimate after its rung (the value the sampler reports at that rung), not the rung's own
score. All candidates of one rung are drawn on that rung's seed (common random numbers: they are
compared on the same noise). The ranking, best first: the points of the highest rung reached, by
estimate, then the others by it (a failed evaluation fails its point). A round's candidates
depend only on the records of the rounds before it, so the plan is a pure function of the stored
trials (restartable, parallel-safe through the sampler's claims).

A driver that cannot hold a wave of trials at a barrier (Optuna's sequential ``study.optimize``)
runs the search asynchronously (:class:`AsyncRungPlanner` and :func:`promoted`): the same new
points in the same order (the spread, then the surrogate's proposals), each promoted as soon as
its rung is evaluated when it is among the best of its rung so far (asynchronous successive
halving, ASHA: Li et al., 2020) or beats the best estimate at the top rung.

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .planner import Key, KeySpace, Outcome, Record, RoundPlan, resolve
from .surrogate import GaussianProcess
from .transfer import PriorModel, SourcePoints, TransferPrior

__all__ = ["AsyncRungPlanner", "RungPlanner", "RungSchedule", "extend", "promoted", "units"]

Evaluations = list[tuple[float, int]]
"""A point's estimates after each of its rungs, with the units of samples each rung drew."""


def units(rung: int) -> int:
    """Fresh sample units an evaluation at ``rung`` draws: 1 at rung 0, then as many as the point
    already has (``2 ** (rung - 1)``), so that its total doubles.

    Example:
        >>> [units(j) for j in range(4)]
        [1, 1, 2, 4]
    """
    return 1 if rung == 0 else 2 ** (rung - 1)


def extend(estimate: float, done: int, score: float, rung: int) -> float:
    """A point's estimate after ``rung``: its estimate on the ``done`` units before (NaN before
    rung 0) extended by the rung's own ``score`` on ``units(rung)`` fresh units (their
    sample-weighted mean); not finite when either is not (the point failed).

    Example:
        >>> e0 = extend(float("nan"), 0, 0.5, 0)
        >>> e1 = extend(e0, 1, 0.7, 1)
        >>> e0, e1, extend(e1, 2, 0.9, 2)
        (0.5, 0.6, 0.75)
    """
    if rung == 0:
        return score
    u = units(rung)
    return (estimate * done + score * u) / (done + u)


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
        """Rounds of the schedule (the champion rounds, often none, come after them)."""
        return self.spread_rounds + self.refine + len(self.promote)

    @property
    def top(self) -> int:
        """The top rung."""
        return len(self.promote)

    def points(self, seeds: int = 0) -> int:
        """New points the search evaluates at rung 0 (``seeds``: warm-start points)."""
        return max(self.spread, seeds) + self.refine * self.wave

    def units(self, seeds: int = 0) -> int:
        """Sample units the schedule draws (its budget; the finals and champion rounds aside)."""
        return self.points(seeds) + sum(p * units(j + 1) for j, p in enumerate(self.promote))

    def reduction(self, rung: int, seeds: int = 0) -> float:
        """How many points of ``rung`` there are per point promoted from it (ASHA's eta).

        Example:
            >>> RungSchedule().reduction(0), RungSchedule().reduction(1)
            (8.0, 2.0)
        """
        below = self.points(seeds) if rung == 0 else self.promote[rung - 1]
        return below / self.promote[rung]


class _Surrogate:
    """What the rung search's phases share: the spread design and the Gaussian process."""

    def __init__(
        self,
        space: KeySpace,
        schedule: RungSchedule,
        maximize: bool = True,
        seeds: Sequence[Key] = (),
        design_seed: int = 0,
        transfer: Sequence[SourcePoints] = (),
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
        self._lows, self._highs, self._categorical = self._ranges()
        self.transfer = (
            TransferPrior(
                transfer,
                points=self._points,
                lows=self._lows,
                highs=self._highs,
                categorical=self._categorical,
            )
            if transfer
            else None
        )
        start: list[Key] = list(self.transfer.start(schedule.wave)) if self.transfer else []
        for key in seeds:
            if point_space.is_valid(tuple(key)) and tuple(key) not in start:
                start.append(tuple(key))
        self._seeds = len(start)
        self._design = self._spread(start)
        self._cache: dict[int, tuple[tuple, tuple[Key, ...]]] = {}  # round -> (its history, candidates)

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

    def _model(self, observed: dict[Key, Evaluations]) -> GaussianProcess | PriorModel:
        keys, scores, weights = [], [], []
        for point, evaluations in observed.items():
            score, total = _last(evaluations)
            keys.append(point)
            scores.append(score if self.maximize else -score)
            weights.append(total)
        ranges = dict(lows=self._lows, highs=self._highs, categorical=self._categorical)
        if self.transfer:
            return self.transfer.model(keys, scores, weights, **ranges)
        return GaussianProcess.fit(keys, scores, weights, **ranges)

    def _ranges(self) -> tuple[list[int], list[int], list[bool]]:
        """The key coordinates' lowest and highest values, and which are categorical."""
        s = self.space
        n = len(s.sizes)
        lows = [*s.lows, *([0] * len(s.structure_slots))]
        highs = [*(size - 1 for size in s.sizes), *([max(s.n_structures - 1, 1)] * len(s.structure_slots))]
        return lows, highs, [False] * n + [True] * len(s.structure_slots)

    def _proposals(self, model: GaussianProcess | PriorModel, taken: set[Key], count: int) -> list[Key]:
        """Up to ``count`` new points of highest UCB, each believed at its mean once chosen."""
        free = [p for p in self._points if p not in taken]
        chosen: list[Key] = []
        while free and len(chosen) < count:
            mean, sd = model.predict(free)
            i = int(np.argmax(mean + self.schedule.beta * sd))  # first of equals: lattice order
            chosen.append(free.pop(i))
            model = model.with_believed(chosen[-1:])
        return chosen

    def _sign(self, value: float) -> float:
        """A value with larger meaning better (a failure: -inf)."""
        if not math.isfinite(value):
            return -math.inf
        return value if self.maximize else -value


class RungPlanner(_Surrogate):
    """The rung search's plan over the records of its trials, in rounds (the interface of
    :class:`searchers.planner.Planner`: :meth:`plan` gives a :class:`~searchers.planner.RoundPlan`).

    Args:
        space: the key space; ``space.rungs`` must be ``len(schedule.promote) + 1``.
        schedule: the budget.
        maximize: whether larger values are better.
        seeds: warm-start points (point keys, without the rung) evaluated first.
        transfer: earlier searches of other targets (:mod:`searchers.transfer`): their answers and
            best-predicted points open the spread, before ``seeds``, and their models are the
            surrogate's prior; empty: a cold search.
        design_seed: seed of the Sobol scrambling.
    """

    def _candidates(self, round_index: int, observed: dict[Key, Evaluations]) -> tuple[Key, ...]:
        """The candidates of a round, from what the rounds before it observed."""
        sched = self.schedule
        if round_index < sched.spread_rounds:
            part = self._design[round_index * sched.wave : (round_index + 1) * sched.wave]
            if round_index == sched.spread_rounds - 1:
                part = self._design[round_index * sched.wave :]  # seeds beyond spread join the last
            return tuple((*k, 0) for k in part)
        if not observed:
            return ()
        if round_index < sched.spread_rounds + sched.refine:
            chosen = self._proposals(self._model(observed), set(observed), sched.wave)
            return tuple((*k, 0) for k in chosen)
        rung = round_index - sched.spread_rounds - sched.refine + 1
        if rung > sched.top:
            return self._champions(observed)
        below = [p for p, ev in observed.items() if len(ev) == rung and math.isfinite(_last(ev)[0])]
        if not below:
            return ()
        mean, _ = self._model(observed).predict(below)
        order = sorted(range(len(below)), key=lambda i: (-mean[i], i))
        return tuple((*below[i], rung) for i in order[: sched.promote[rung - 1]])

    def _champions(self, observed: dict[Key, Evaluations]) -> tuple[Key, ...]:
        """Points below the top rung whose estimate beats the best at the top rung, one rung up
        each (best first, at most ``wave``)."""
        top = self.schedule.top
        score = {p: self._sign(_last(ev)[0]) for p, ev in observed.items()}
        bar = max((score[p] for p, ev in observed.items() if len(ev) == top + 1), default=-math.inf)
        order = list(observed)
        ahead = [p for p, ev in observed.items() if len(ev) <= top and score[p] > bar]
        ahead.sort(key=lambda p: (-score[p], order.index(p)))
        return tuple((*p, len(observed[p])) for p in ahead[: self.schedule.wave])

    def plan(self, records: Sequence[Record], stable: int = 0) -> RoundPlan:
        """The current round over ``records`` (``stable`` is accepted for the interface)."""
        status = resolve(records)
        observed: dict[Key, Evaluations] = {}
        order: dict[Key, int] = {}
        done_keys: list[Key] = []
        round_index = 0
        history: list[tuple] = []
        scheduled = self.schedule.rounds
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
            if pending or running:
                ranking = self._ranking(observed, status, done_keys)
                return RoundPlan(
                    round_index,
                    candidates,
                    pending,
                    running,
                    False,
                    ranking,
                    self._numbers(ranking, status),
                    order,
                )
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
            if not candidates and round_index >= scheduled:  # no champion left: the search is over
                ranking = self._ranking(observed, status, done_keys)
                return RoundPlan(
                    round_index, candidates, (), (), True, ranking, self._numbers(ranking, status), order
                )
            round_index += 1

    def _ranking(
        self, observed: dict[Key, Evaluations], status: dict[Key, Record], done: list[Key]
    ) -> tuple[Key, ...]:
        """Done points (as the key of their last evaluation), best first: highest rung reached,
        then estimate, then search order."""
        return _ranking(observed, done, self._sign)

    @staticmethod
    def _numbers(ranking: tuple[Key, ...], status: dict[Key, Record]) -> tuple[int, ...]:
        return tuple(status[k].number for k in ranking)


class AsyncRungPlanner(_Surrogate):
    """The rung search for a driver that runs each trial's rungs as one job (asynchronous
    successive halving; see the module docstring): a trial takes the next new point (the spread,
    then the surrogate's proposals over what is observed, believing the points still running)
    and is promoted by :func:`promoted` as its rungs are evaluated. The search is exhausted once
    :meth:`RungSchedule.points` points are taken and none runs.

    :meth:`plan` gives a :class:`~searchers.planner.RoundPlan` whose ``round`` is the number of
    points taken (the index of the next one) and whose one candidate is the next new point.
    """

    def plan(self, records: Sequence[Record], stable: int = 0) -> RoundPlan:
        """The next new point over ``records`` (``stable`` is accepted for the interface)."""
        observed, running, numbers, done = _points(records, self.maximize)
        taken = {k[:-1] for k in numbers}
        budget = self.schedule.points(self._seeds)
        index = len(taken)
        candidates: tuple[Key, ...] = ()
        if index < budget:
            if index < len(self._design):
                point = self._design[index]
            else:  # believe the points taken but not evaluated yet at the model's mean
                model = self._model(observed).with_believed([p for p in taken if p not in observed])
                chosen = self._proposals(model, taken, 1) if observed else []
                point = chosen[0] if chosen else None
            if point is not None and point not in taken:
                candidates = ((*point, 0),)
        ranking = _ranking(observed, done, self._sign)
        ranked = tuple(numbers[k] for k in ranking)
        exhausted = not candidates and not running
        live = tuple(running.values())
        return RoundPlan(index, candidates, candidates, live, exhausted, ranking, ranked, {})


def promoted(
    schedule: RungSchedule,
    rung: int,
    value: float,
    peers: Sequence[float],
    best_top: float,
    seeds: int = 0,
) -> bool:
    """Whether a point whose estimate after ``rung`` is ``value`` goes on to the next rung, in the
    asynchronous search (larger is better; ``peers``: the estimates after ``rung`` of every point
    that reached it so far, this one included; ``best_top``: the best estimate at the top rung so
    far, ``-inf`` before any).

    It goes on when it beats ``best_top`` (so no point whose estimate beats the answer stays
    below the top rung), or, as successive halving promotes asynchronously (ASHA; Optuna's
    ``SuccessiveHalvingPruner`` rule), when it is among the best ``max(1, n // eta)`` of the ``n``
    peers, ``eta`` being :meth:`RungSchedule.reduction` (the first points of a rung are promoted
    when they are the best so far).

    Example:
        >>> promoted(RungSchedule(), 0, 0.5, [0.9, 0.5], best_top=0.6)
        False
        >>> promoted(RungSchedule(), 0, 0.7, [0.9, 0.7], best_top=0.6)
        True
    """
    if rung >= schedule.top or not math.isfinite(value):
        return False
    if value > best_top:
        return True
    keep = max(1, int(len(peers) // schedule.reduction(rung, seeds)))
    ranked = sorted((v for v in peers if math.isfinite(v)), reverse=True)
    return bool(ranked) and value >= ranked[min(keep, len(ranked)) - 1]


def _points(
    records: Sequence[Record], maximize: bool
) -> tuple[dict[Key, Evaluations], dict[Key, Key], dict[Key, int], list[Key]]:
    """The records of an asynchronous search by point: the estimates after each rung, the points
    running (to their running key), every key's trial number, and the done keys in order."""
    status = resolve(records)
    observed: dict[Key, Evaluations] = {}
    running: dict[Key, Key] = {}
    numbers: dict[Key, int] = {}
    done: list[Key] = []
    for key in sorted(status, key=lambda k: (status[k].number, k[-1])):
        record = status[key]
        numbers[key] = record.number
        if record.outcome is Outcome.RUNNING:
            running[key[:-1]] = key
            continue
        value = record.value if record.outcome is Outcome.COMPLETE and record.value is not None else math.nan
        value = value if not math.isnan(value) else -math.inf if maximize else math.inf
        observed.setdefault(key[:-1], []).append((value, units(key[-1])))
        done.append(key)
    return observed, running, numbers, done


def _ranking(
    observed: dict[Key, Evaluations], done: Sequence[Key], sign: Callable[[float], float]
) -> tuple[Key, ...]:
    """Done points (as the key of their last evaluation), best first: highest rung reached, then
    estimate (``sign`` makes larger better), then search order."""
    last: dict[Key, tuple[int, Key]] = {}
    for position, key in enumerate(done):
        last[key[:-1]] = (position, key)

    def sort_key(point: Key) -> tuple[int, float, int]:
        value = sign(_last(observed[point])[0])
        return (-len(observed[point]), -value if math.isfinite(value) else math.inf, last[point][0])

    return tuple(last[p][1] for p in sorted(observed, key=sort_key) if p in last)


def _last(evaluations: Evaluations) -> tuple[float, int]:
    """A point's estimate (its last rung's; a failure fails it) and its units of samples."""
    total = sum(u for _, u in evaluations)
    if any(not math.isfinite(v) for v, _ in evaluations):
        return -math.inf, total
    return evaluations[-1][0], total


def _pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())

"""The rung search as an Optuna sampler (its numeric part: :mod:`searchers.rungs`).

One trial per point: a trial evaluates its point at rung 0 and, while it is promoted, at the
rungs above, each on fresh samples; it reports the point's estimate after each rung as an
intermediate value (``trial.report(estimate, step=units so far)``), ends COMPLETE at the top rung
(its value: the estimate on all its samples) and PRUNED when it is not promoted (its value: its
last estimate). So ``study.best_trial``, ``optuna best-trial`` and the dashboard name the best
point of the top rung, the search's answer, never a lucky small-sample score, and the dashboard's
intermediate-value plot shows each point's rungs.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from . import optuna_internals as internals
from .base import LatticeSampler, SearchPlan
from .lattice import Lattice
from .planner import Key, Outcome, Record, RoundPlan
from .replay import LIVE, Attrs
from .rungs import AsyncRungPlanner, RungPlanner, RungSchedule, extend, promoted, units

if TYPE_CHECKING:
    from optuna.study import Study

__all__ = ["TFGRungSampler"]


class TFGRungSampler(LatticeSampler):
    """The rung search over geometric lattices: a spread start, Gaussian-process-guided refinement,
    then successive halving over sample sizes (:mod:`searchers.rungs`, docs/searchers.md).

    The default search of tfg-search. A trial is one point (see the module docstring): the
    objective evaluates it on ``units`` units of samples at each rung, on a seed of the rung
    (common to the rung's points), and the sampler decides whether it goes on:

    * **asynchronously** (the default, for ``study.optimize``): :meth:`rungs` runs the trial's
      rungs inside the objective; a point goes on when it is among the best of its rung so far
      (asynchronous successive halving) or beats the best estimate at the top rung;
    * **synchronously** (``synchronous=True``, for a driver that holds a wave of trials at a
      barrier: ask-and-tell with a pool of workers, the tfg-search service): rounds of ``wave``
      evaluations, asked with :meth:`ask` and told with :meth:`tell`; the promotions of a round
      continue the trials of the points promoted, and the trials left below the top rung are
      pruned when the search ends.

    Either way the answer, ``study.best_trial``, is the best point of the top rung, and no point
    the search saw has a better estimate (a point that does is promoted until it reaches the top
    rung or falls behind).

    Example:

        .. testcode::

            import optuna

            from searchers import Lattice, RungSchedule, TFGRungSampler

            space = {"rho": Lattice(0.25, 2.0, 16.0, zero=True), "mu": Lattice(0.25, 2.0, 16.0, zero=True)}
            sampler = TFGRungSampler(space=space, schedule=RungSchedule(wave=4), seed=0)


            def score(rho, mu, samples, seed):  # your guided sampling, judged on `samples` samples
                return -((rho - 2.0) ** 2) - (mu - 1.0) ** 2


            def objective(trial):
                rho = trial.suggest_float("rho", 0.0, 16.0)  # no log=True: the lattices hold 0
                mu = trial.suggest_float("mu", 0.0, 16.0)
                return sampler.rungs(trial, lambda units, rung: score(rho, mu, 16 * units, 1000 + rung))


            study = optuna.create_study(direction="maximize", sampler=sampler)
            study.optimize(objective)  # returns by itself when the search is exhausted
            assert study.best_params == {"rho": 2.0, "mu": 1.0}
            assert study.best_trial.number == sampler.plan(study).ranking[0]

    Args:
        space, search_schedules, start_schedules, seed_configs, poll_interval, barrier_timeout:
            as for :class:`~searchers.base.LatticeSampler` (the ``seed_configs`` open the spread).
        schedule: How the search spends its budget (default :class:`~searchers.RungSchedule`:
            rounds of 8, 16 spread points, 2 refine rounds, promote 4 then 2).
        synchronous: Promotions in rounds, for a driver that holds trials (:meth:`ask`,
            :meth:`tell`); False: in the objective (:meth:`rungs`).
        transfer: Earlier searches of other targets (transfer, :mod:`searchers.transfer`): each
            ``{"name": ..., "points": [{"params": {...}, "score": float, "units": float}, ...]}``
            (a point's estimate and the sample units behind it; larger scores better, as the study
            directs). Their answers and best-predicted points open the spread and their models
            are the surrogate's prior; ``transfer_report`` says, per source, how many points were
            used, snapped to this lattice, or dropped (outside it).
        seed: Seed of the spread design (and of the random sampling of parameters outside the
            space); the same seed gives the same search.
    """

    ATTRS = Attrs("TFGRungSampler:")

    def __init__(
        self,
        *,
        space: Mapping[str, Lattice] | None = None,
        schedule: RungSchedule | None = None,
        synchronous: bool = False,
        search_schedules: bool | Sequence[str] = False,
        start_schedules: Mapping[str, str] | None = None,
        seed_configs: Sequence[Mapping[str, float | str]] | None = None,
        transfer: Sequence[Mapping[str, Any]] | None = None,
        poll_interval: float = 0.1,
        barrier_timeout: float | None = None,
        seed: int = 0,
    ) -> None:
        if schedule is not None and not isinstance(schedule, RungSchedule):
            raise TypeError(f"schedule must be a searchers.RungSchedule, got {schedule!r}.")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {seed!r}.")
        self._schedule = schedule or RungSchedule()
        self._rungs = self._schedule.top + 1
        self._synchronous = bool(synchronous)
        self._design_seed = seed
        self._transfer_raw = [dict(source) for source in transfer or ()]
        super().__init__(
            space=space,
            search_schedules=search_schedules,
            start_schedules=start_schedules,
            seed_configs=seed_configs,
            poll_interval=poll_interval,
            barrier_timeout=barrier_timeout,
            seed=seed,
        )

        self._transfer, self.transfer_report = self._keyed_sources(self._transfer_raw)

    # ---------------------------------------------------------------- what the search is

    def _identity(self) -> dict[str, Any]:
        s = self._schedule
        budget = [s.wave, s.spread, s.refine, list(s.promote), s.beta, self._design_seed]
        identity: dict[str, Any] = {"search": "rungs", "rungs": budget, "synchronous": self._synchronous}
        if self._transfer_raw:  # a digest: the claims carry the fingerprint
            text = json.dumps(self._transfer_raw, sort_keys=True, default=str)
            identity["transfer"] = hashlib.sha1(text.encode()).hexdigest()[:12]
        return identity

    def _keyed_sources(
        self, sources: Sequence[Mapping[str, Any]]
    ) -> tuple[list[list[tuple[Key, float, float]]], list[dict[str, Any]]]:
        """Sources' points as keys of this space: a value inside a lattice's range (0 or its
        lowest value to its cap) is snapped to the nearest lattice point, a point with a value
        outside it or without one of the space's parameters is dropped. Returns the keyed
        sources and, per source, ``{"name", "points", "snapped", "dropped"}``."""
        keyed, report = [], []
        for source in sources:
            points: list[tuple[Key, float, float]] = []
            snapped = dropped = 0
            for point in source.get("points", ()):
                params = point.get("params") or {}
                score = float(point.get("score", math.nan))
                inside = all(
                    isinstance(params.get(n), (int, float))
                    and self._space[n].low <= float(params[n]) <= self._space[n].cap
                    for n in self._names
                )
                if not inside or not math.isfinite(score):
                    dropped += 1
                    continue
                try:
                    key = self._seed_key(dict(params))
                except ValueError:  # a schedule this space does not have
                    dropped += 1
                    continue
                values = zip(self._names, key, strict=False)  # the key's structures follow its exponents
                exact = all(self._space[n].value(k) == float(params[n]) for n, k in values)
                snapped += not exact
                points.append((key, score, float(point.get("units", 1.0))))
            keyed.append(points)
            report.append(
                {"name": source.get("name"), "points": len(points), "snapped": snapped, "dropped": dropped}
            )
        return keyed, report

    def _planner(self, maximize: bool) -> RungPlanner | AsyncRungPlanner:
        kind = RungPlanner if self._synchronous else AsyncRungPlanner
        return kind(
            self._keyspace,
            self._schedule,
            maximize,
            self._seeds,
            self._design_seed,
            [points for points in self._transfer if points],
        )

    def _claim_body(self, key: Key, round_: int) -> dict[str, Any]:
        return {"key": list(key[:-1]), "rung": key[-1], "round": round_, "space": self._fingerprint}

    def _pickable(self, plan: RoundPlan) -> tuple[Key, ...]:
        fresh = tuple(k for k in plan.pending if k[-1] == 0)
        if plan.pending and not fresh:
            raise RuntimeError(
                "this round of the synchronous rung search promotes points whose trials are held: "
                "a driver continues them with TFGRungSampler.ask(study), not a new trial"
            )
        return fresh

    def _classify(self, trial: FrozenTrial, key: Key) -> tuple[Record, ...]:
        """A point's records: its estimate after each rung it reported, then its rung in flight
        (RUNNING; asked in the claim, not reported) or the rung that failed it."""
        claim = trial.system_attrs.get(self.ATTRS.claim) or {}
        asked = int(claim.get("rung", 0))
        estimates = [trial.intermediate_values[s] for s in sorted(trial.intermediate_values)]
        records = [
            Record(trial.number, (*key, j), Outcome.COMPLETE if math.isfinite(v) else Outcome.FAILED, v)
            for j, v in enumerate(estimates[: self._rungs])
        ]
        reached = len(records)
        if reached <= asked and reached < self._rungs:
            if trial.state in LIVE:
                records.append(Record(trial.number, (*key, reached), Outcome.RUNNING))
            elif trial.state != TrialState.PRUNED:
                records.append(Record(trial.number, (*key, reached), Outcome.FAILED))
        return tuple(records)

    # ---------------------------------------------------------------- inspection

    @property
    def schedule(self) -> RungSchedule:
        """How the search spends its budget."""
        return self._schedule

    @property
    def synchronous(self) -> bool:
        """Whether promotions happen in rounds (:meth:`ask`, :meth:`tell`) rather than in the
        objective (:meth:`rungs`)."""
        return self._synchronous

    def plan(self, study: Study) -> SearchPlan:
        """Where the search stands, recomputed from the study's storage; ``ranking`` puts the
        points of the highest rung first, by their estimate (``ranking[0]`` is the answer once
        the search is exhausted, and ``study.best_trial`` then)."""
        return super().plan(study)

    def trial_key(self, trial: FrozenTrial | optuna.Trial) -> Key | None:
        """The integer key of the point a trial evaluates (without its rung), or ``None``."""
        key = super().trial_key(trial)
        return None if key is None else key[: self._point_size]

    @property
    def _point_size(self) -> int:
        return len(self._names) + len(self._structured)

    def _params(self, key: Key) -> dict[str, float | str]:
        """The parameters of a point (a key with or without its rung)."""
        return self._point_params(key[: self._point_size])

    def trial_rung(self, trial: FrozenTrial | optuna.Trial) -> int | None:
        """The rung a trial evaluates now (0: its point's first look; rung ``j`` re-evaluates it on
        ``units(j)`` fresh units of samples), ``None`` outside the search."""
        if self.trial_key(trial) is None:
            return None
        claim = _system_attrs(trial).get(self.ATTRS.claim) or {}
        return int(claim.get("rung", 0))

    def trial_units(self, trial: FrozenTrial | optuna.Trial) -> int:
        """Units of samples the trial's current rung draws: 1 at rung 0, then ``2 ** (rung - 1)``
        fresh units at rung ``rung >= 1`` (a point's total doubles at each rung)."""
        rung = self.trial_rung(trial)
        return 1 if rung is None else units(rung)

    # ---------------------------------------------------------------- asynchronous: the objective

    def rungs(self, trial: optuna.Trial, evaluate: Callable[[int, int], float]) -> float:
        """Run the trial's point through its rungs, inside the objective; return its estimate.

        ``evaluate(units, rung)`` scores the point on ``units`` units of fresh samples drawn with a
        seed of ``rung`` (the same for every point at that rung). After each rung the point's
        estimate (the sample-weighted mean of its scores) is reported at the step of its units so
        far; the trial goes on to the next rung when :func:`searchers.rungs.promoted` says so,
        else it is pruned (:class:`optuna.TrialPruned`). At the top rung the estimate is returned
        (the trial's value). A non-finite score fails the trial (NaN is returned).

        Raises:
            optuna.TrialPruned: the point is not promoted (or the trial got no point: surplus).
            RuntimeError: the sampler is synchronous, or the trial is not one of this search.
        """
        if self._synchronous:
            raise RuntimeError("a synchronous TFGRungSampler is driven by ask() and tell(), not rungs()")
        point = self.trial_key(trial)
        if point is None:
            for name in self._names:  # a surplus trial is pruned here, before any evaluation
                trial.suggest_float(name, self._space[name].low, self._space[name].high)
            raise RuntimeError(f"trial {trial.number} is not a trial of this TFGRungSampler")
        study = trial.study
        value, done = math.nan, 0
        for rung in range(self._rungs):
            if rung:
                self._ask_rung(study, trial.number, rung)
            value = extend(value, done, float(evaluate(units(rung), rung)), rung)
            if not math.isfinite(value):
                return math.nan
            done += units(rung)
            trial.report(value, step=done)
            if rung < self._rungs - 1 and not self._goes_on(study, trial.number, rung, value):
                raise optuna.TrialPruned(f"point {point} is not promoted beyond rung {rung}")
        return value

    def _goes_on(self, study: Study, number: int, rung: int, value: float) -> bool:
        """The asynchronous promotion of trial ``number`` after ``rung`` (estimate ``value``)."""
        maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
        sign = 1.0 if maximize else -1.0
        with self._lock:
            view = self._replay.view(study)
            records = self._replay.read(study, view)
        peers = [sign * r.value for r in records if r.key[-1] == rung and r.outcome is Outcome.COMPLETE]  # type: ignore[operator]
        top = self._rungs - 1
        tops = [sign * r.value for r in records if r.key[-1] == top and r.outcome is Outcome.COMPLETE]  # type: ignore[operator]
        best_top = max(tops, default=-math.inf)
        return promoted(self._schedule, rung, sign * value, peers, best_top, len(set(self._seeds)))

    # ---------------------------------------------------------------- synchronous: a driver

    def ask(self, study: Study) -> optuna.Trial | None:
        """The next evaluation of the current round, claimed: a new trial for a new point, or the
        held trial of a point promoted (its :meth:`trial_rung` raised); ``None`` when the round
        has nothing left to hand out (its evaluations run) or the search is exhausted. Evaluate
        the trial's point on :meth:`trial_units` units with a seed of its rung, then :meth:`tell`.
        """
        if not self._synchronous:
            raise RuntimeError("ask() drives a synchronous TFGRungSampler (synchronous=True)")
        plan = self._fresh_plan(study)
        if not plan.pending:
            return None
        key = plan.pending[0]
        if key[-1] == 0:
            trial = internals.new_trial(study)  # before_trial claims the point
            return trial if self.trial_key(trial) is not None else None
        storage = internals.storage(study)
        number = next(r.number for r in self._replay.view(study).records() if r.key[:-1] == key[:-1])
        self._ask_rung(study, number, key[-1])
        trial_id = storage.get_trial_id_from_study_id_trial_number(internals.study_id(study), number)
        return optuna.Trial(study, trial_id)

    def tell(self, study: Study, trial: optuna.Trial | FrozenTrial, score: float) -> TrialState | None:
        """Record the score of a trial's current rung: report its point's estimate, then tell it
        COMPLETE at the top rung or FAIL for a non-finite score, else hold it (``None``) for a
        promotion. When this completes the search, the trials held below the top rung are pruned.
        Returns the state the trial was told, or ``None`` (held)."""
        storage = internals.storage(study)
        trial_id = internals.trial_id(trial)
        frozen = storage.get_trial(trial_id)
        rung = self.trial_rung(frozen) or 0
        steps = sorted(frozen.intermediate_values)[:rung]
        previous = frozen.intermediate_values[steps[-1]] if steps else math.nan
        done = sum(units(j) for j in range(rung))
        value = extend(previous, done, float(score), rung)
        state: TrialState | None = None
        if not math.isfinite(value):
            study.tell(trial.number, state=TrialState.FAIL)
            state = TrialState.FAIL
        else:
            storage.set_trial_intermediate_value(trial_id, done + units(rung), value)
            if rung == self._rungs - 1:
                study.tell(trial.number, value)
                state = TrialState.COMPLETE
        if self._fresh_plan(study).exhausted:
            self.finish(study)
        return state

    def finish(self, study: Study) -> int:
        """Prune the trials held below the top rung once the search is exhausted (their value: the
        point's estimate); returns how many. :meth:`tell` calls it when it completes the search."""
        if not self._fresh_plan(study).exhausted:
            return 0
        pruned = 0
        for t in internals.all_trials(study):
            if t.state == TrialState.RUNNING and self.trial_key(t) is not None and t.intermediate_values:
                study.tell(t.number, state=TrialState.PRUNED)
                pruned += 1
        return pruned

    def _ask_rung(self, study: Study, number: int, rung: int) -> None:
        """Claim rung ``rung`` for trial ``number`` (its point promoted): one write of its claim."""
        storage = internals.storage(study)
        trial_id = storage.get_trial_id_from_study_id_trial_number(internals.study_id(study), number)
        claim = dict(storage.get_trial_system_attrs(trial_id).get(self.ATTRS.claim) or {})
        storage.set_trial_system_attr(trial_id, self.ATTRS.claim, {**claim, "rung": rung})


def _system_attrs(trial: FrozenTrial | optuna.Trial) -> Mapping[str, Any]:
    if isinstance(trial, FrozenTrial):
        return trial.system_attrs
    return trial.storage.get_trial_system_attrs(internals.trial_id(trial))

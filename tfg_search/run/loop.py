"""The one loop of a search: ask the search's trials, tell each result, then the final re-runs.

Every driver of a search drives this loop: the coordinator (:mod:`tfg_search.run.coordinator`,
which evaluates whole waves through an executor), the Ray Tune searcher (:mod:`tfg_search.run.tune`,
which hands Tune one trial at a time) and the search benchmark (benchmarks/_waves.py, on an
oracle). What differs between the searches is their :class:`~tfg_search.run.strategy.Strategy`;
what the loop owns is the order of things and what is stored:

1. **search**: while the strategy's plan has pending candidates, :meth:`SearchLoop.ask` makes
   the next trial of the search study ``N:search`` (its parameters suggested by the search's
   sampler, its samples and seed by the strategy) and hands it out as a :class:`Pending` with its
   :class:`~tfg_search.trial.TrialSpec`; ``None`` while the round's running trials are not all
   told (the barrier);
2. **final**: once the search is exhausted and nothing of it runs, the strategy's finals (the top
   of its ranking) are re-run at full size in study ``N``, one trial each;
3. **done**: every final told. The answer is the best final (:meth:`SearchLoop.best`).

:meth:`SearchLoop.tell` scores an outcome and writes the trial's record in one user attribute
(:func:`tfg_search.store.layout.told`), then tells Optuna.

Example:
    >>> loop = SearchLoop(studies, resolved)  # doctest: +SKIP
    >>> while not loop.done:  # doctest: +SKIP
    ...     for pending in loop.wave():
    ...         loop.tell(pending, run_trial(pending.spec))
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import TrialState

from searchers import SearchPlan, optuna_internals
from searchers.base import LatticeSampler
from tfg_search.run.objective import score
from tfg_search.run.settings import ResolvedSettings
from tfg_search.run.strategy import Strategy, strategy_for
from tfg_search.store.layout import FINAL, SEARCH, final_marker, interrupted, point_record, told
from tfg_search.store.record import TrialRecord, read
from tfg_search.store.studies import SearchStudies
from tfg_search.trial import (
    FAILURE_ENVIRONMENT,
    FAILURE_INTERRUPTED,
    FAILURE_TRIAL,
    TrialOutcome,
    TrialSpec,
)

__all__ = ["Counts", "Pending", "SearchLoop"]

SEARCHING, FINALS, DONE = "search", "final", "done"
"""The phases of a search (:attr:`SearchLoop.phase`)."""


@dataclass
class Pending:
    """A trial handed out and not yet told."""

    trial: optuna.Trial
    role: str
    round: int | None
    params: dict[str, Any]
    spec: TrialSpec
    source_trial: int | None = None

    @property
    def number(self) -> int:
        return self.trial.number


@dataclass
class Counts:
    """Trials of a search by what became of them."""

    search: int = 0
    final: int = 0
    failed: int = 0
    """Configurations that failed (e.g. non-finite samples): final."""
    interrupted: int = 0
    """Stopped with their launcher (retried on resume, so they are not in ``failed``)."""
    environment: int = 0
    """Failed for the machine's reason (device, memory, a dead worker; retried on resume)."""
    reasons: list[str] = field(default_factory=list)
    """The distinct errors of the environment failures."""


class SearchLoop:
    """The loop of one search (see the module docstring).

    Args:
        studies: the search's two studies; the search study's sampler is the strategy's.
        resolved: the search's settings.
        strategy: the search's strategy (default: :func:`tfg_search.run.strategy.strategy_for`
            of ``resolved``, without a warm start).
        device: the device every spec names (None: the worker's default).
    """

    def __init__(
        self,
        studies: SearchStudies,
        resolved: ResolvedSettings,
        strategy: Strategy | None = None,
        device: str | None = None,
    ) -> None:
        self.studies = studies
        self.resolved = resolved
        self.strategy = strategy or strategy_for(resolved)
        studies.search.sampler = self.strategy.sampler
        self.device = device
        self.phase = SEARCHING
        self._quota = 0  # trials the current plan still lets this loop ask
        self._finals: list[TrialRecord] = []
        self._live: dict[tuple[str, int], Pending] = {}

    # -- reading ------------------------------------------------------------------------------
    def records(self) -> list[TrialRecord]:
        """Every trial of the search (search trials, then finals)."""
        return self.studies.records()

    def plan(self) -> SearchPlan:
        """Where the search stands (recomputed from storage)."""
        return self.strategy.plan(self.studies.search)

    def ranking(self, records: Sequence[TrialRecord] | None = None) -> list[TrialRecord]:
        """The search's points, best first, by the strategy's ranking (one record each)."""
        records = self.records() if records is None else records
        return self.strategy.ranking(self.studies.search, [r for r in records if r.role == SEARCH])

    def leader(self, records: Sequence[TrialRecord] | None = None) -> TrialRecord | None:
        """The top of the ranking (None before any completed trial)."""
        ranking = self.ranking(records)
        return ranking[0] if ranking else None

    def best(self, records: Sequence[TrialRecord] | None = None) -> TrialRecord | None:
        """The answer: the best final re-run (ties: the lower trial number), else, before the
        finals, the top of the search's ranking; None before any completed trial."""
        records = self.records() if records is None else records
        finals = self.final_ranking(records)
        return finals[0] if finals else self.leader(records)

    @staticmethod
    def final_ranking(records: Sequence[TrialRecord]) -> list[TrialRecord]:
        """The completed final re-runs, best first (ties: the lower trial number, as Optuna's
        ``best_trial`` of the main study breaks them in trial order)."""
        done = [r for r in records if r.role == FINAL and r.ok]
        return sorted(done, key=lambda r: (-float(r.value), r.number))  # type: ignore[arg-type]

    def counts(self) -> Counts:
        """The trials by outcome (a resumed study counts what earlier runs left too)."""
        counts = Counts()
        for r in self.records():
            if r.state.is_finished() and r.role == SEARCH:
                counts.search += 1
            if r.state.is_finished() and r.role == FINAL:
                counts.final += 1
            if r.state != TrialState.FAIL:
                continue
            if r.failure == FAILURE_INTERRUPTED:
                counts.interrupted += 1
            elif r.failure == FAILURE_ENVIRONMENT:
                counts.environment += 1
                if r.error and r.error not in counts.reasons:
                    counts.reasons.append(r.error)
            else:
                counts.failed += 1
        return counts

    def point(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """A trial's params as the lattice point they are (Optuna's samplers suggest exponents)."""
        return self.strategy.point(params)

    # -- handing out ---------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        """Whether every trial of the search and every final re-run is told."""
        self._advance()
        return self.phase == DONE

    def running(self) -> list[Pending]:
        """What this loop handed out and was not told yet."""
        return list(self._live.values())

    def ask(self) -> Pending | None:
        """The next trial to run now, or None: nothing until the running trials are told (the
        round barrier, or the last finals), the phase changed (:attr:`phase`), or the search is
        done. A wave never mixes phases.

        In the search, the loop asks as many trials as the plan has pending when it plans (a
        round, or a wave of Optuna's samplers), then waits for them all before it plans again.
        """
        if self.phase == SEARCHING:
            while True:
                if self._quota == 0:
                    if self._live:
                        return None  # the barrier
                    plan = self.plan()
                    if plan.exhausted:
                        self._enter_finals()
                        return None
                    if not plan.pending:
                        return None  # trials of this round running elsewhere
                    self._quota = plan.pending
                pending = self._ask_search()
                if pending is not None:
                    self._quota -= 1
                    return self._hand_out(pending)
                self._quota = 0  # the sampler found the search exhausted (a surplus trial)
        if self.phase == FINALS and self._finals:
            return self._hand_out(self._ask_final(self._finals.pop(0)))
        self._advance()
        return None

    def wave(self) -> list[Pending]:
        """Everything :meth:`ask` hands out now (a round of the search, or the finals)."""
        out = []
        while (pending := self.ask()) is not None:
            out.append(pending)
        return out

    def _advance(self) -> None:
        """Move to the next phase when this one has nothing left (nothing handed out is running)."""
        if self._live or self._quota:
            return
        if self.phase == SEARCHING and self.plan().exhausted:
            self._enter_finals()
        if self.phase == FINALS and not self._finals:
            self.phase = DONE

    def _enter_finals(self) -> None:
        self.phase = FINALS
        self._finals = self.final_sources()

    def _hand_out(self, pending: Pending) -> Pending:
        self._live[(pending.role, pending.number)] = pending
        return pending

    def final_sources(self) -> list[TrialRecord]:
        """The strategy's finals that have no final re-run yet. A re-run that failed for the
        configuration's own reason counts as done; one that was interrupted or failed for the
        environment is due again."""
        records = self.records()
        top = self.strategy.finals(self.studies.search, [r for r in records if r.role == SEARCH])
        done = {
            r.source_trial
            for r in records
            if r.role == FINAL
            and (r.state == TrialState.COMPLETE or (r.state == TrialState.FAIL and not r.retry_on_resume))
        }
        return [r for r in top if r.number not in done]

    def _spec(self, trial: optuna.Trial, params: dict[str, Any], role: str) -> TrialSpec:
        r = self.resolved
        if role == FINAL:
            samples, seed = r.final_samples, r.seed + 1
        else:
            samples, seed = self.strategy.size(trial)
        return TrialSpec(
            trial.number,
            r.task,
            r.target,
            r.config(self.point(params)),
            samples,
            seed,
            r.steps,
            self.device,
            task_options=dict(r.task_options) or None,
        )

    def _ask_search(self) -> Pending | None:
        """The next candidate of the current round, or None (surplus: nothing to hand out)."""
        study = self.studies.search
        trial = self.strategy.new_trial(study)
        if trial is None:
            return None
        try:
            params = self.strategy.suggest(trial)
        except optuna.TrialPruned:
            study.tell(trial, state=TrialState.PRUNED)
            return None
        spec = self._spec(trial, params, SEARCH)
        return Pending(trial, SEARCH, self.strategy.round_of(trial), params, spec)

    def _ask_final(self, source: TrialRecord) -> Pending:
        """A final re-run of ``source`` (a search record) in the main study."""
        study = self.studies.main
        study.enqueue_trial(source.params, user_attrs=final_marker(source.number))
        trial = study.ask()
        params = self.strategy.suggest(trial)
        return Pending(trial, FINAL, None, params, self._spec(trial, params, FINAL), source.number)

    # -- telling -------------------------------------------------------------------------------
    def tell(self, pending: Pending, outcome: TrialOutcome) -> float | None:
        """Store the outcome (one user-attr write) and tell the study; returns the score or None
        (a rung-search point: its estimate after this rung)."""
        value = None
        error, failure = outcome.error, outcome.failure
        if outcome.metrics is not None:
            value = score(outcome.metrics, self.resolved.objective)
            if not math.isfinite(value):
                error, failure, value = (
                    f"non-finite score {value!r} from metrics {outcome.metrics}",
                    FAILURE_TRIAL,
                    None,
                )
        elif failure is None:
            failure = FAILURE_TRIAL
        attrs = told(
            pending.spec,
            outcome,
            role=pending.role,
            round=pending.round,
            source_trial=pending.source_trial,
            error=None if value is not None else (error or "unknown error"),
            failure=None if value is not None else failure,
        )
        held = pending.role == SEARCH and self.strategy.points_held
        if held:
            attrs = self._point_record(pending, attrs, value)
        for key, body in attrs.items():
            pending.trial.set_user_attr(key, body)
        if pending.role == FINAL:
            if value is None:
                self.studies.main.tell(pending.trial, state=TrialState.FAIL)
            else:
                self.studies.main.tell(pending.trial, value)
        else:
            self.strategy.tell(self.studies.search, pending.trial, value)
        self._live.pop((pending.role, pending.number), None)
        if held and value is not None:
            return read(self._frozen(pending)).value
        return value

    def _frozen(self, pending: Pending) -> Any:
        """A handed-out search trial as stored now."""
        study = self.studies.search
        return optuna_internals.storage(study).get_trial(optuna_internals.trial_id(pending.trial))

    def _point_record(self, pending: Pending, attrs: dict[str, Any], score: float | None) -> dict[str, Any]:
        """The record of a rung-search point after one more rung: its earlier evaluations and
        this one (:func:`tfg_search.store.layout.point_record`)."""
        earlier = read(self._frozen(pending)).evaluations or []
        rung = len(earlier)
        return point_record(earlier, attrs, rung=rung, score=score)

    def _mark_interrupted(self, study: optuna.Study, trial: Any, role: str, reason: str) -> None:
        """Record an unfinished trial of ``study`` as interrupted and give its configuration back
        (a search trial's candidate is due again in its round; a final re-run is due again)."""
        marker = interrupted(read(trial, study.study_name, role), role, reason)
        # The trial may be frozen (recover() reads it back): write through the storage.
        storage, trial_id = optuna_internals.storage(study), optuna_internals.trial_id(trial)
        for key, value in marker.items():
            storage.set_trial_user_attr(trial_id, key, value)
        sampler = self.strategy.sampler
        if role == SEARCH and isinstance(sampler, LatticeSampler):
            sampler.requeue(study, trial.number)
        elif trial.state == TrialState.RUNNING:  # a wave search asks it again (not done)
            storage.set_trial_state_values(trial_id, TrialState.FAIL)

    def interrupt(self, pendings: Iterable[Pending], reason: str = FAILURE_INTERRUPTED) -> int:
        """Mark this process's unfinished trials interrupted (Ctrl-C, SIGTERM); returns how many."""
        n = 0
        for p in pendings:
            study = self.studies.main if p.role == FINAL else self.studies.search
            frozen = optuna_internals.storage(study).get_trial(optuna_internals.trial_id(p.trial))
            self._live.pop((p.role, p.number), None)
            if frozen.state != TrialState.RUNNING:
                continue
            self._mark_interrupted(study, frozen, p.role, reason)
            n += 1
        return n

    def interrupt_running(self) -> int:
        """Mark every trial of the search still RUNNING interrupted; returns how many (only for
        the holder of the study's lease: after :meth:`recover` every RUNNING trial is its own)."""
        n = 0
        for study, role in self.studies.parts():
            for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                rec = read(t, study.study_name, role)
                self._mark_interrupted(study, t, rec.role or role or SEARCH, FAILURE_INTERRUPTED)
                n += 1
        self._live.clear()
        return n

    def recover(self) -> tuple[int, int]:
        """On resume (holding the lease): give back what a previous run left unfinished or failed
        for an environment reason. Returns (stale RUNNING trials marked interrupted, failures due
        again)."""
        stale = retried = 0
        sampler = self.strategy.sampler
        for study, default_role in self.studies.parts():
            for t in study.get_trials(deepcopy=False):
                rec = read(t, study.study_name, default_role)
                role = rec.role or default_role or SEARCH
                if t.state == TrialState.RUNNING:
                    self._mark_interrupted(study, t, role, FAILURE_INTERRUPTED)
                    stale += 1
                elif (
                    isinstance(sampler, LatticeSampler)
                    and rec.retry_on_resume
                    and role == SEARCH
                    and not sampler.is_requeued(study, t)
                ):
                    sampler.requeue(study, t.number)
                    retried += 1
        return stale, retried

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
   of its ranking) are re-run at full size in study ``N``, one trial each, made RUNNING with its
   parameters in one write (nothing is ever left WAITING);
3. **done**: every final told. The answer is the best final (:meth:`SearchLoop.best`).

:meth:`SearchLoop.tell` scores an outcome and writes the trial's record in one user attribute
(:func:`tfg_search.store.layout.told`), then tells Optuna.

**Exact under interruption.** Nothing is marked or given back when a search stops (Ctrl-C,
``kill -9``, a machine failure): the trials it was evaluating stay RUNNING, each with its
parameters and its place in the search, and the next run of the same search re-runs them in
place first (:meth:`SearchLoop.recover`), with the same samples and seeds, before it asks anything
new. Every trial keeps its number, so the resumed search's trials and answer are exactly those of
a search never stopped; their records count the re-runs (``interruptions``). A machine failure of
an evaluation (a device, memory, a dead worker) leaves its trial so too, and stops the search once
its batch is told (:attr:`SearchLoop.machine_failures`). An evaluation that failed for the user's
reason (a custom task's predictor or evaluator raised: :data:`~tfg_search.trial.FAILURE_USER`)
is recorded on its trial, which stays RUNNING too, and stops the search at once
(:attr:`SearchLoop.user_failures`): the same command, run after the fix, re-runs it in place.
Named points where tests stop a search on purpose: :mod:`tfg_search.run.faults`.

Example:
    >>> loop = SearchLoop(studies, resolved)  # doctest: +SKIP
    >>> while not loop.done:  # doctest: +SKIP
    ...     for pending in loop.wave():
    ...         loop.tell(pending, run_trial(pending.spec))
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from searchers import SearchPlan, optuna_internals
from searchers.base import LatticeSampler
from tfg_search.guidance.passes import total_passes
from tfg_search.run.faults import fault
from tfg_search.run.objective import score
from tfg_search.run.settings import ResolvedSettings
from tfg_search.run.strategy import Strategy, strategy_for
from tfg_search.store.layout import FINAL, SEARCH, compute, final_marker, metric_attrs, point_record, told
from tfg_search.store.record import TrialRecord, read
from tfg_search.store.studies import SearchStudies
from tfg_search.store.summary import best_fields, summary, write_row
from tfg_search.trial import (
    FAILURE_ENVIRONMENT,
    FAILURE_INTERRUPTED,
    FAILURE_TRIAL,
    FAILURE_USER,
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
    interruptions: int = 0
    """How often this trial's evaluations were re-run after a stop (its record keeps the count)."""

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
    """Trials re-run in place after their search was stopped (or, in studies of tfg-search 0.2,
    stopped and given back)."""
    environment: int = 0
    """Trials whose last evaluation failed for the machine's reason (device, memory, a dead
    worker): re-run when the search is run again."""
    reasons: list[str] = field(default_factory=list)
    """The distinct errors of the machine failures."""
    user: int = 0
    """Trials whose last evaluation failed for the user's reason (their code raised): re-run when
    the search is run again after the fix."""


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
        self._resumed: list[Pending] = []  # evaluations an earlier run left in flight: first
        self.machine_failures: list[str] = []
        """Errors of evaluations that failed for the machine's reason since the last wave."""
        self.user_failures: list[TrialOutcome] = []
        """Outcomes of evaluations that failed for the user's reason (the search stops at the first)."""
        self._records: dict[tuple[str, int], TrialRecord] | None = None  # what storage holds

    # -- reading ------------------------------------------------------------------------------
    def records(self) -> list[TrialRecord]:
        """Every trial of the search (search trials, then finals), as this loop, the search's one
        writer, last wrote or read them (read whole once, then kept as it writes them)."""
        if self._records is None:
            self._records = {(r.role or SEARCH, r.number): r for r in self.studies.records()}
        return [self._records[k] for k in sorted(self._records, key=lambda k: (k[0] != SEARCH, k[1]))]

    def _refresh(self, role: str, trial: optuna.Trial | FrozenTrial) -> None:
        """Read one trial again into the records (after this loop changed it)."""
        if self._records is not None:
            study = self.studies.main if role == FINAL else self.studies.search
            frozen = trial if isinstance(trial, FrozenTrial) else _frozen(study, trial)
            self._records[(role, frozen.number)] = read(frozen, study.study_name, role)

    def write_summary(self) -> None:
        """Write the search's summary row (:mod:`tfg_search.store.summary`): what the query
        commands answer, without reading the trials (nothing, on a storage in memory)."""
        records = self.records()
        best = self.best(records)
        kept = summary(
            trials=len(records),
            finished=self.phase == DONE,
            best=None if best is None else best_fields(best),
            compute=compute(vars(r) for r in records),
            transfer=self.transfer_summary(records),
        )
        if self.studies.engine is not None:
            write_row(self.studies.engine, self.studies.name, self.studies.info, kept)

    def transfer_summary(self, records: Sequence[TrialRecord]) -> dict[str, Any] | None:
        """The search's sources and what its transfer start (its round 0) spent at rung 0."""
        from tfg_search.run.transfer import summary_of

        frozen = self.studies.info.transfer
        if frozen is None:
            return None
        sampler = self.strategy.sampler
        report = getattr(sampler, "transfer_report", ())
        start = [r for r in records if r.role == SEARCH and r.round == 0 and r.evaluations]
        spent = total_passes(r.evaluations[0]["passes"] for r in start if r.evaluations[0].get("passes"))
        return {**summary_of(frozen, report), "start": {"trials": len(start), "passes": spent}}

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
            counts.interrupted += bool(r.interruptions) or r.failure == FAILURE_INTERRUPTED
            if r.failure == FAILURE_USER and not r.state.is_finished():
                counts.user += 1
            if r.failure == FAILURE_ENVIRONMENT:
                counts.environment += 1
                if r.error and r.error not in counts.reasons:
                    counts.reasons.append(r.error)
            elif r.state == TrialState.FAIL and r.failure != FAILURE_INTERRUPTED:
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

        An evaluation an earlier run left in flight is handed out first (:meth:`recover`). In the
        search, the loop then asks as many trials as the plan has pending when it plans (a
        round, or a wave of Optuna's samplers), and waits for them all before it plans again.
        """
        role = SEARCH if self.phase == SEARCHING else FINAL
        resumed = next((p for p in self._resumed if p.role == role), None)
        if resumed is not None and self.phase != DONE:
            self._resumed.remove(resumed)
            return self._hand_out(resumed)
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
        if self._live or self._quota or any(p.role == SEARCH for p in self._resumed):
            return
        if self.phase == SEARCHING and self.plan().exhausted:
            self._enter_finals()
        if self.phase == FINALS and not self._finals and not self._resumed:
            self.phase = DONE
            self.write_summary()

    def _enter_finals(self) -> None:
        fault("finals")
        self.strategy.finish(self.studies.search)
        self._records = None  # (a rung search prunes the points held below its top rung)
        self.phase = FINALS
        self._finals = self.final_sources()

    def _hand_out(self, pending: Pending) -> Pending:
        self._live[(pending.role, pending.number)] = pending
        self._refresh(pending.role, pending.trial)
        return pending

    def final_sources(self) -> list[TrialRecord]:
        """The strategy's finals that have no final re-run yet (a re-run still RUNNING is
        re-run in place by :meth:`recover`; studies of tfg-search 0.2 may hold interrupted ones
        as FAIL: those are due again)."""
        records = self.records()
        top = self.strategy.finals(self.studies.search, [r for r in records if r.role == SEARCH])
        made = {
            r.source_trial
            for r in records
            if r.role == FINAL and not (r.state == TrialState.FAIL and r.retry_on_resume)
        }
        return [r for r in top if r.number not in made]

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

    def _search_pending(self, trial: optuna.Trial, interruptions: int = 0) -> Pending | None:
        """A search trial handed out: its parameters (suggested now, or as it has them), its
        spec; None for a surplus trial (the search is exhausted: it is pruned, unevaluated)."""
        try:
            params = self.strategy.suggest(trial)
        except optuna.TrialPruned:
            self.studies.search.tell(trial, state=TrialState.PRUNED)
            return None
        spec = self._spec(trial, params, SEARCH)
        stored = read(_frozen(self.studies.search, trial))
        count = (stored.interruptions or 0) + interruptions
        return Pending(trial, SEARCH, self.strategy.round_of(trial), params, spec, interruptions=count)

    def _ask_search(self) -> Pending | None:
        """The next candidate of the current round, or None (surplus: nothing to hand out)."""
        trial = self.strategy.new_trial(self.studies.search)
        if trial is None:
            return None
        fault("ask")
        return self._search_pending(trial)

    def _ask_final(self, source: TrialRecord) -> Pending:
        """A final re-run of ``source`` (a search record) in the main study: made RUNNING with
        its parameters, distributions and role in one write."""
        study = self.studies.main
        origin = _trial(self.studies.search, source.number)
        template = FrozenTrial(
            number=0,
            state=TrialState.RUNNING,
            value=None,
            datetime_start=dt.datetime.now(),
            datetime_complete=None,
            params=dict(origin.params),
            distributions=dict(origin.distributions),
            user_attrs=final_marker(source.number),
            system_attrs={},
            intermediate_values={},
            trial_id=0,
        )
        storage = optuna_internals.storage(study)
        trial = optuna.Trial(study, storage.create_new_trial(optuna_internals.study_id(study), template))
        fault("final-ask")
        return self._final_pending(trial, source.number)

    def _final_pending(self, trial: optuna.Trial, source: int, interruptions: int = 0) -> Pending:
        params = self.strategy.suggest(trial)  # the parameters it was made with
        return Pending(
            trial, FINAL, None, params, self._spec(trial, params, FINAL), source, interruptions=interruptions
        )

    # -- telling -------------------------------------------------------------------------------
    def tell(self, pending: Pending, outcome: TrialOutcome) -> float | None:
        """Store the outcome (one user-attr write) and tell the study; returns the score or None
        (a rung-search point: its estimate after this rung).

        An outcome that failed for the machine's or the user's reason is recorded on its trial,
        which stays RUNNING (re-run when the search runs again), and noted in
        :attr:`machine_failures` or :attr:`user_failures`.
        """
        final = pending.role == FINAL
        fault("final-result" if final else "result")
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
            interruptions=pending.interruptions or None,
        )
        held = not final and self.strategy.points_held
        if held:
            attrs = self._point_record(pending, attrs, value)
        self._live.pop((pending.role, pending.number), None)
        if value is None and failure in (FAILURE_ENVIRONMENT, FAILURE_USER):
            if not held:  # a point keeps its earlier rungs' record; its rung is simply re-run
                for key, body in attrs.items():
                    pending.trial.set_user_attr(key, body)
            if failure == FAILURE_USER:
                self.user_failures.append(outcome)
            else:
                self.machine_failures.append(error or "unknown error")
            self._refresh(pending.role, pending.trial)
            return None
        for key, body in {**attrs, **metric_attrs(attrs)}.items():  # the record, then each metric
            pending.trial.set_user_attr(key, body)
        fault("final-tell" if final else "tell")
        if final:
            if value is None:
                self.studies.main.tell(pending.trial, state=TrialState.FAIL)
            else:
                self.studies.main.tell(pending.trial, value)
        else:
            self.strategy.tell(self.studies.search, pending.trial, value)
            if self.strategy.points_held and self.plan().exhausted:
                self._records = None  # the held points were pruned
        self._refresh(pending.role, pending.trial)
        self.write_summary()
        if held and value is not None:
            return read(_frozen(self.studies.search, pending.trial)).value
        return value

    def _point_record(self, pending: Pending, attrs: dict[str, Any], score: float | None) -> dict[str, Any]:
        """The record of a rung-search point after one more rung: its earlier evaluations and
        this one (:func:`tfg_search.store.layout.point_record`)."""
        frozen = _frozen(self.studies.search, pending.trial)
        rung = len(frozen.intermediate_values)  # the rungs reported; this is the next one
        earlier = [e for e in read(frozen).evaluations or [] if e["rung"] < rung]  # (a re-run replaces)
        return point_record(earlier, attrs, rung=rung, score=score)

    def interrupt(self) -> int:
        """The search is stopped (Ctrl-C, SIGTERM): forget what was handed out (it stays RUNNING
        in storage, re-run in place by the next run); returns how many evaluations were in flight."""
        n = len(self._live)
        self._live.clear()
        self._quota = 0
        return n

    def recover(self) -> tuple[int, int]:
        """On resume (holding the lease): the evaluations an earlier run left in flight are handed
        out first (:meth:`ask`), in their own trials, with their parameters and seeds; trials of
        tfg-search 0.2 that it stored as FAIL for an interruption or the machine are given back to
        the search (requeued). Returns (evaluations to re-run, trials given back)."""
        resumed = given_back = 0
        search, main = self.studies.search, self.studies.main
        for t in search.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if not self.strategy.in_flight(search, t):
                continue  # a rung-search point waiting for its promotion
            trial = optuna.Trial(search, optuna_internals.trial_id(t))
            pending = self._search_pending(trial, interruptions=1)
            if pending is not None:
                self._resumed.append(pending)
                resumed += 1
        for t in main.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            source = read(t, main.study_name, FINAL).source_trial
            trial = optuna.Trial(main, optuna_internals.trial_id(t))
            count = (read(t).interruptions or 0) + 1
            self._resumed.append(self._final_pending(trial, int(source), interruptions=count))  # type: ignore[arg-type]
            resumed += 1
        sampler = self.strategy.sampler
        if isinstance(sampler, LatticeSampler):
            for t in search.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
                if read(t, search.study_name, SEARCH).retry_on_resume and not sampler.is_requeued(search, t):
                    sampler.requeue(search, t.number)
                    given_back += 1
        self._records = None
        return resumed, given_back


def _frozen(study: optuna.Study, trial: optuna.Trial) -> FrozenTrial:
    """A trial as stored now."""
    return optuna_internals.storage(study).get_trial(optuna_internals.trial_id(trial))


def _trial(study: optuna.Study, number: int) -> FrozenTrial:
    """Trial ``number`` of ``study``, as stored."""
    storage = optuna_internals.storage(study)
    trial_id = storage.get_trial_id_from_study_id_trial_number(optuna_internals.study_id(study), number)
    return storage.get_trial(trial_id)

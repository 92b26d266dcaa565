"""A search's bookkeeping: which trials exist, what each evaluates, how its result is stored.

One owner for both drivers of a search: the CLI coordinator (:mod:`tfg_search.run.coordinator`, which runs
rounds through an executor) and the Ray Tune searcher (:mod:`tfg_search.run.tune`, which hands Tune one
configuration at a time). Neither writes a trial attribute itself: they ask :class:`SearchBook` for
trials (:meth:`~SearchBook.ask_beam`, :meth:`~SearchBook.ask_final`), run the specs, and tell the
outcomes back (:meth:`~SearchBook.tell`: one user-attr write and the tell).

Example:
    >>> book = SearchBook(studies, resolved)  # doctest: +SKIP
    >>> pending = book.ask_beam()  # doctest: +SKIP
    >>> book.tell(pending, run_trial(pending.spec))  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import TrialState

from searchers import SearchPlan, TFGRungSampler, optuna_internals
from searchers.base import LatticeSampler
from searchers.rungs import units
from tfg_search.guidance.config import STRUCTURES
from tfg_search.run.objective import score
from tfg_search.run.settings import OPTUNA_SEARCHES, ResolvedSettings
from tfg_search.run.waves import WaveSearch, lattice_params, suggest_exponents
from tfg_search.store.layout import BEAM, FINAL, final_marker, interrupted, told
from tfg_search.store.record import TrialRecord, ranked, read
from tfg_search.store.studies import SearchStudies
from tfg_search.trial import (
    FAILURE_ENVIRONMENT,
    FAILURE_INTERRUPTED,
    FAILURE_TRIAL,
    TrialOutcome,
    TrialSpec,
)


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

    beam: int = 0
    final: int = 0
    failed: int = 0
    """Configurations that failed (e.g. non-finite samples): final."""
    interrupted: int = 0
    """Stopped with their launcher (retried on resume, so they are not in ``failed``)."""
    environment: int = 0
    """Failed for the machine's reason (device, memory, a dead worker; retried on resume)."""
    reasons: list[str] = field(default_factory=list)
    """The distinct errors of the environment failures."""


def suggest(trial: optuna.Trial, resolved: ResolvedSettings) -> dict[str, Any]:
    """Suggest one candidate's parameters (the search's sampler or an enqueued re-run fixes them):
    the lattice values for the beam sampler, the lattice exponents for Optuna's samplers
    (:func:`tfg_search.run.waves.suggest_exponents`)."""
    params: dict[str, Any] = {}
    scheduled = set(resolved.schedule_params())
    if resolved.search in OPTUNA_SEARCHES:
        return suggest_exponents(trial, resolved.lattices(), scheduled)
    for name, lattice in resolved.lattices().items():
        params[name] = trial.suggest_float(name, lattice.low, lattice.cap, log=not lattice.zero)
        if name in scheduled:
            params[f"{name}_schedule"] = trial.suggest_categorical(f"{name}_schedule", list(STRUCTURES))
    return params


class SearchBook:
    """The trials of one search (its :class:`~tfg_search.store.studies.SearchStudies`).

    Args:
        studies: the search's studies; the search study's sampler is its
            :class:`searchers.TFGBeamSampler`, or (``resolved.sampler`` gp, tpe, random) one of
            Optuna's, run in waves (:class:`tfg_search.run.waves.WaveSearch`).
        resolved: the search's settings.
        device: the device every spec names (None: the worker's default).
    """

    def __init__(self, studies: SearchStudies, resolved: ResolvedSettings, device: str | None = None) -> None:
        self.studies = studies
        self.resolved = resolved
        self.device = device
        sampler = studies.search.sampler
        self.beam = resolved.search not in OPTUNA_SEARCHES
        if self.beam and not isinstance(sampler, LatticeSampler):
            raise TypeError("the search study must be sampled by searchers.TFGRungSampler or TFGBeamSampler")
        self.sampler: LatticeSampler | WaveSearch = (
            sampler if self.beam else WaveSearch(resolved.search, resolved.trials, resolved.wave)  # type: ignore[arg-type,assignment]
        )

    # -- reading ------------------------------------------------------------------------------
    def records(self) -> list[TrialRecord]:
        """Every trial of the search (beam, then finals)."""
        return self.studies.records()

    def plan(self) -> SearchPlan:
        """Where the beam stands (recomputed from storage)."""
        return self.sampler.plan(self.studies.search)

    def counts(self) -> Counts:
        """The trials by outcome (a resumed study counts what earlier runs left too)."""
        counts = Counts()
        for r in self.records():
            if r.state.is_finished() and r.role == BEAM:
                counts.beam += 1
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

    def point(self, params: dict[str, Any]) -> dict[str, Any]:
        """A trial's params as lattice values (Optuna's samplers suggest exponents)."""
        return dict(params) if self.beam else lattice_params(params, self.resolved.lattices())

    # -- handing out ---------------------------------------------------------------------------
    def _spec(self, trial: optuna.Trial, params: dict[str, Any], role: str) -> TrialSpec:
        r = self.resolved
        if role == FINAL:
            samples, seed = r.final_samples, r.seed + 1
        else:
            rung = self.sampler.trial_rung(trial) if isinstance(self.sampler, TFGRungSampler) else None
            samples, seed = r.samples * units(rung or 0), rung_seed(r.seed, rung)
        return TrialSpec(
            trial.number,
            r.task,
            r.target,
            r.config(params if self.beam else lattice_params(params, r.lattices())),
            samples,
            seed,
            r.steps,
            self.device,
            task_options=dict(r.task_options) or None,
        )

    def ask_beam(self) -> Pending | None:
        """The next beam candidate of the current round, or None (surplus: nothing to hand out).

        The trial is made as ``study.ask()`` makes it, less the look for enqueued trials (nothing
        is ever enqueued in a search study; :func:`searchers.optuna_internals.new_trial`).
        """
        study = self.studies.search
        new = self.beam and not self.studies.legacy
        trial = optuna_internals.new_trial(study) if new else study.ask()
        try:
            params = suggest(trial, self.resolved)
        except optuna.TrialPruned:
            study.tell(trial, state=TrialState.PRUNED)
            return None
        return Pending(trial, BEAM, self.sampler.trial_round(trial), params, self._spec(trial, params, BEAM))

    def final_sources(self) -> list[TrialRecord]:
        """The search's configurations to re-run at full size that have no final re-run yet: the
        top ``final_top`` (by the rung search's ranking, or the beam's scores), and in the beam
        with a warm start (``seed_configs``, ``--seed-presets``) also the best
        warm-start point when it is not among them, so that the answer, chosen on the final
        samples, is never below the best warm-start configuration because a noisy small-sample
        score ranked it out.

        A re-run that failed for the configuration's own reason counts as done; one that was
        interrupted or failed for the environment is due again.
        """
        records = self.records()
        beam = ranked(records, BEAM)
        rungs = self.resolved.rung_schedule() is not None
        if rungs:  # the rung search ranks its points itself, on all their evaluations
            by_number = {r.number: r for r in beam}
            ranking = self.sampler.plan(self.studies.search).ranking
            beam = [by_number[n] for n in ranking if n in by_number]
        top = beam[: self.resolved.final_top]
        # In the beam, the best warm-start point joins the finals (see above); in the rung search
        # the promotions re-evaluate the best points on fresh samples before they are ranked.
        points = () if rungs else self.sampler.seed_points
        warm = next((r for r in beam if any(_at(r.params, p) for p in points)), None)
        if warm is not None and all(r.number != warm.number for r in top):
            top.append(warm)
        done = {
            r.source_trial
            for r in records
            if r.role == FINAL
            and (r.state == TrialState.COMPLETE or (r.state == TrialState.FAIL and not r.retry_on_resume))
        }
        return [r for r in top if r.number not in done]

    def ask_final(self, source: TrialRecord) -> Pending:
        """A final re-run of ``source`` (a beam record) in the main study."""
        study = self.studies.main
        study.enqueue_trial(source.params, user_attrs=final_marker(source.number))
        trial = study.ask()
        params = suggest(trial, self.resolved)
        return Pending(trial, FINAL, None, params, self._spec(trial, params, FINAL), source.number)

    # -- telling -------------------------------------------------------------------------------
    def tell(self, pending: Pending, outcome: TrialOutcome) -> float | None:
        """Store the outcome (one user-attr write) and tell the study; returns the score or None."""
        study = self.studies.main if pending.role == FINAL else self.studies.search
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
        for key, body in attrs.items():
            pending.trial.set_user_attr(key, body)
        if value is None:
            study.tell(pending.trial, state=TrialState.FAIL)
        else:
            study.tell(pending.trial, value)
        return value

    def mark_interrupted(self, study: optuna.Study, trial: Any, role: str, reason: str) -> None:
        """Record an unfinished trial of ``study`` as interrupted and give its configuration back
        (a beam trial's candidate is due again in its round; a final re-run is due again)."""
        marker = interrupted(read(trial, study.study_name, role), role, reason)
        # The trial may be frozen (recover() reads it back): write through the storage.
        storage, trial_id = optuna_internals.storage(study), optuna_internals.trial_id(trial)
        for key, value in marker.items():
            storage.set_trial_user_attr(trial_id, key, value)
        if role == BEAM and isinstance(self.sampler, LatticeSampler):
            self.sampler.requeue(study, trial.number)
        elif trial.state == TrialState.RUNNING:  # a wave search asks it again (not done)
            storage.set_trial_state_values(trial_id, TrialState.FAIL)

    def interrupt(self, pendings: Iterable[Pending], reason: str = FAILURE_INTERRUPTED) -> int:
        """Mark this process's unfinished trials interrupted (Ctrl-C, SIGTERM); returns how many."""
        n = 0
        for p in pendings:
            study = self.studies.main if p.role == FINAL else self.studies.search
            frozen = optuna_internals.storage(study).get_trial(optuna_internals.trial_id(p.trial))
            if frozen.state != TrialState.RUNNING:
                continue
            self.mark_interrupted(study, frozen, p.role, reason)
            n += 1
        return n

    def recover(self) -> tuple[int, int]:
        """On resume (holding the lease): give back what a previous run left unfinished or failed
        for an environment reason. Returns (stale RUNNING trials marked interrupted, failures due
        again)."""
        stale = retried = 0
        for study, default_role in self.studies.parts():
            for t in study.get_trials(deepcopy=False):
                rec = read(t, study.study_name, default_role)
                role = rec.role or default_role or BEAM
                if t.state == TrialState.RUNNING:
                    self.mark_interrupted(study, t, role, FAILURE_INTERRUPTED)
                    stale += 1
                elif (
                    self.beam
                    and rec.retry_on_resume
                    and role == BEAM
                    and not self.sampler.is_requeued(study, t)  # type: ignore[union-attr]
                ):
                    self.sampler.requeue(study, t.number)  # type: ignore[union-attr]
                    retried += 1
        return stale, retried


def rung_seed(seed: int, rung: int | None) -> int:
    """The sampling seed of a search trial: the search's ``seed`` for the beam and for rung 0 of
    the rung search; ``seed + 1 + rung`` for a later rung (fresh samples, common to the rung's
    candidates; ``seed + 1`` is the final re-runs')."""
    return seed if not rung else seed + 1 + rung


def _at(params: dict[str, Any], point: dict[str, Any]) -> bool:
    """Whether a trial's parameters are the lattice point ``point`` (values exactly as suggested)."""
    return all(params.get(name) == value for name, value in point.items())

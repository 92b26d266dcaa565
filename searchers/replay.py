"""A lattice sampler's replay cache: what it last read of each study, and a planner over it.

A :class:`~searchers.base.LatticeSampler` recomputes its plan from the study's stored trials
(:mod:`searchers.planner`, :mod:`searchers.rungs`). Reading and classifying every trial on every
ask would cost a query per trial; :class:`Replay` keeps, per study, what it read of the finished
trials (which never change), classifies only the trials that are new or still running, and hands
the planner records whose leading part is stable, so that the planner reuses its replay of the
rounds already complete.

The stored attributes of a sampler (the claim of each trial, requeue marks, surplus reasons) are
named by :class:`Attrs`, with the sampler's class name as their prefix.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from optuna.storages import BaseStorage
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from . import optuna_internals as internals
from .planner import Key, KeySpace, Outcome, Planner, Record, RoundPlan
from .rungs import AsyncRungPlanner, RungPlanner

if TYPE_CHECKING:
    from optuna.study import Study

__all__ = ["Attrs", "Replay", "Seen", "View", "one_record"]


@dataclass(frozen=True)
class Attrs:
    """The names of a sampler's stored trial attributes, prefixed with its class name.

    Attributes:
        prefix: e.g. ``"TFGBeamSampler:"``.
        claim: the claim, one write: ``{"key": list[int] | None`` (None after yielding it),
            ``"round": int`` (the round the candidate belongs to), ``"space": str`` (fingerprint
            of the search; other fingerprints are ignored)``}``.
        requeue: True: this FAIL trial's candidate is to be evaluated again. Set on the trial
            when it was RUNNING; for a trial already finished (read-only) as the study system
            attr ``f"{requeue}:{trial_id}"``.
        surplus: why a trial got no candidate (it is pruned unevaluated).
        legacy_claim: the claim's three fields as three attributes, as searchers 0.1 wrote them.
    """

    prefix: str

    @property
    def claim(self) -> str:
        return self.prefix + "claim"

    @property
    def requeue(self) -> str:
        return self.prefix + "requeue"

    @property
    def surplus(self) -> str:
        return self.prefix + "surplus"

    @property
    def legacy_claim(self) -> tuple[str, str, str]:
        return (self.prefix + "key", self.prefix + "round", self.prefix + "space")

    def claim_of(self, attrs: Mapping[str, Any]) -> tuple[Any, Any, Any]:
        """A trial's claim as stored, ``(key, round, space)``: the claim attribute, else the three
        attributes that searchers 0.1 wrote (read, never written: a user's own study made by it
        is continued, where ``tfg-search migrate`` does not reach), else ``None``s."""
        claim = attrs.get(self.claim)
        if isinstance(claim, Mapping):
            return claim.get("key"), claim.get("round"), claim.get("space")
        return tuple(attrs.get(name) for name in self.legacy_claim)  # type: ignore[return-value]


LIVE = (TrialState.RUNNING, TrialState.WAITING)


def one_record(t: FrozenTrial, key: Key) -> tuple[Record, ...]:
    """The record of a trial that evaluates its candidate once (the beam): RUNNING while it runs,
    COMPLETE with its value, else FAILED (FAIL, PRUNED or a NaN value)."""
    if t.state in LIVE:
        return (Record(t.number, key, Outcome.RUNNING),)
    if t.state == TrialState.COMPLETE and t.values and not math.isnan(t.values[0]):
        return (Record(t.number, key, Outcome.COMPLETE, float(t.values[0])),)
    return (Record(t.number, key, Outcome.FAILED),)


VIEWS_KEPT = 8
"""Studies whose replay a sampler keeps."""


@dataclass(frozen=True)
class Seen:
    """One trial as the replay uses it; kept for finished trials, which never change."""

    number: int
    state: TrialState
    complete: Any  # datetime_complete: with number and state, tells a reused trial id apart
    records: tuple[Record, ...]  # empty: not a trial of this search, or a key outside it
    fail: bool  # state FAIL: its records drop out when the trial is requeued or retried
    flagged: bool  # its own requeue attribute
    retries: tuple[int, ...]  # trial numbers it retries (retry_history), for search trials


class View:
    """What a sampler last read of one study: its search records, and a planner over them.

    The records are split in ``base``, from the leading run of finished trials (``prefix``, which
    the next read compares by identity and does not classify again), and ``tail``, from the
    trials after it (the running ones of the current round, and any finished after them).
    """

    def __init__(self, storage: BaseStorage, planner: Planner | RungPlanner | AsyncRungPlanner) -> None:
        self.storage = storage
        self.planner = planner
        self.read = False  # whether base / tail hold a read yet
        self.seen: dict[int, Seen] = {}  # trial id -> finished trial
        self.prefix: list[FrozenTrial] = []
        self.prefix_kept: list[Record] = []  # records of the prefix that never drop out
        self.prefix_fails: list[tuple[tuple[Record, ...], int, bool]] = []  # (records, id, flagged) of FAILs
        self.prefix_retries: set[int] = set()
        self.requeued: set[int] = set()  # trial ids requeued by study attribute, as last read
        self.retried: set[int] = set()  # trial numbers retried, as last read
        self.base: list[Record] = []
        self.tail: list[Record] = []

    def plan(self, records: list[Record]) -> RoundPlan:
        """The planner's plan over ``records`` (records of the view: their prefix part is stable)."""
        return self.planner.plan(records, len(self.prefix_kept))

    def records(self, without: int | None = None) -> list[Record]:
        """The search records as last read (and changed since by this sampler), optionally without
        those of trial number ``without``."""
        if without is None:
            return self.base + self.tail
        return self.base + [r for r in self.tail if r.number != without]

    def finish(self, number: int, seen: Seen, trial_id: int) -> bool:
        """Replace the records of running trial ``number`` by its finished ones; False when the
        last read did not have it running (then only a new read can tell)."""
        if not any(r.number == number and r.outcome is Outcome.RUNNING for r in self.tail):
            return False
        tail = [r for r in self.tail if r.number != number]
        dropped = seen.fail and (seen.flagged or trial_id in self.requeued or number in self.retried)
        if not dropped:
            tail.extend(seen.records)
        self.tail = tail
        return True


class Replay:
    """The replay cache of one sampler: a :class:`View` per study it works on.

    Args:
        keyspace: the sampler's key space.
        make_planner: a new planner of the sampler's search for a study, given whether the
            study maximises (a :class:`~searchers.planner.Planner` for the beam, a
            :class:`~searchers.rungs.RungPlanner` for the rung search).
        fingerprint: the sampler's search fingerprint (trials of another search are ignored).
        attrs: the names of the sampler's stored attributes.
        classify: the records of a trial of this search, given the trial and its claim's key
            (default :func:`one_record`: one evaluation per trial).

    Not thread-safe: the sampler serialises calls with its lock.
    """

    def __init__(
        self,
        keyspace: KeySpace,
        make_planner: Callable[[bool], Planner | RungPlanner | AsyncRungPlanner],
        fingerprint: str,
        attrs: Attrs,
        classify: Callable[[FrozenTrial, Key], tuple[Record, ...]] | None = None,
    ) -> None:
        self.keyspace = keyspace
        self.make_planner = make_planner
        self.fingerprint = fingerprint
        self.attrs = attrs
        self.classify = classify or one_record
        self.views: dict[tuple[int, int, bool], View] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["views"] = {}  # caches of storages: rebuilt from storage
        return state

    @staticmethod
    def all_trials(study: Study) -> list[FrozenTrial]:
        # Read the storage directly, not study.get_trials (see GridSampler: pruners may filter).
        return internals.all_trials(study)

    def view(self, study: Study) -> View:
        """The replay cache of this study (one per storage object and study)."""
        storage = internals.storage(study)
        maximize = study.direction == StudyDirection.MAXIMIZE
        name = (id(storage), internals.study_id(study), maximize)
        view = self.views.get(name)
        if view is None or view.storage is not storage:
            planner = self.make_planner(maximize)
            view = self.views[name] = View(storage, planner)
            while len(self.views) > VIEWS_KEPT:
                del self.views[next(iter(self.views))]
        return view

    def see(self, t: FrozenTrial) -> Seen:
        """Classify one trial for the planner (requeue and retries are applied by :meth:`read`)."""
        attrs = t.system_attrs
        raw, _, space = self.attrs.claim_of(attrs)
        if raw is None or space != self.fingerprint:
            return Seen(t.number, t.state, t.datetime_complete, (), False, False, ())
        records = self.classify(t, tuple(raw))
        if not all(self.keyspace.is_valid(r.key) for r in records):
            records = ()
        retries = tuple(attrs.get("retry_history", ()))
        return Seen(
            t.number,
            t.state,
            t.datetime_complete,
            records,
            t.state == TrialState.FAIL,
            bool(attrs.get(self.attrs.requeue)),
            retries,
        )

    def seen(self, view: View, t: FrozenTrial) -> Seen:
        """:meth:`see`, kept for finished trials (a reused trial id is noticed and seen again)."""
        if not t.state.is_finished():
            return self.see(t)
        trial_id = internals.trial_id(t)
        seen = view.seen.get(trial_id)
        if (
            seen is None
            or seen.number != t.number
            or seen.state != t.state
            or seen.complete != t.datetime_complete
        ):
            seen = view.seen[trial_id] = self.see(t)
        return seen

    def read(self, study: Study, view: View, finishing: FrozenTrial | None = None) -> list[Record]:
        """Read the study's trials into ``view`` and return its search records: trials of this search
        with a key, less FAIL trials that were requeued or that a retry replaces.

        ``finishing`` is a trial being told, as it will be stored (after_trial runs before Optuna
        stores the new state).
        """
        trials = self.all_trials(study)
        done = len(view.prefix)
        if len(trials) < done or trials[:done] != view.prefix:  # not the trials read before
            view.prefix, view.prefix_kept, view.prefix_fails, view.prefix_retries = [], [], [], set()
            done = 0
        while done < len(trials) and trials[done].state.is_finished():
            t = trials[done]
            seen = self.seen(view, t)
            view.prefix.append(t)
            view.prefix_retries.update(seen.retries)
            if seen.records:
                if seen.fail:
                    view.prefix_fails.append((seen.records, internals.trial_id(t), seen.flagged))
                else:
                    view.prefix_kept.extend(seen.records)
            done += 1
        later: list[tuple[Seen, int]] = []
        retried = set(view.prefix_retries)
        for t in trials[done:]:
            if finishing is not None and t.number == finishing.number:
                seen = self.see(finishing)
            else:
                seen = self.seen(view, t)
            retried.update(seen.retries)
            later.append((seen, internals.trial_id(t)))
        view.retried = retried
        # Study-level requeue marks only concern FAIL trials: read them only when there are some.
        if view.prefix_fails or any(seen.fail and seen.records for seen, _ in later):
            mark = self.attrs.requeue + ":"
            names = internals.study_system_attrs(study)
            view.requeued = {int(name[len(mark) :]) for name in names if name.startswith(mark)}
        else:
            view.requeued = set()
        requeued = view.requeued
        view.base = view.prefix_kept + [
            record
            for records, trial_id, flagged in view.prefix_fails
            if not (flagged or trial_id in requeued or records[0].number in retried)
            for record in records
        ]
        view.tail = [
            record
            for seen, trial_id in later
            if not (seen.fail and (seen.flagged or trial_id in requeued or seen.number in retried))
            for record in seen.records
        ]
        view.read = True
        return view.records()

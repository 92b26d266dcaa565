"""The shared Optuna adapter of the TFG searches over lattices: claims, the round barrier, replay.

:class:`LatticeSampler` is the base of :class:`~searchers.TFGRungSampler` (the rung search) and
:class:`~searchers.TFGBeamSampler` (the paper's beam). A search is a planner, pure functions of
the records of the trials so far (:mod:`searchers.rungs`, :mod:`searchers.planner`); this module
turns it into an :class:`optuna.samplers.BaseSampler`: each trial claims the next candidate of
the current round (an optimistic claim, safe for threads and for processes sharing an RDB
storage), waits at the barrier between rounds, is served the candidate's lattice values, and the
study stops when the search is exhausted. Everything a search knows is in storage, so a new
process with a new sampler continues it (docs/searchers.md).
"""

from __future__ import annotations

import contextlib
import json
import random
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.samplers import BaseSampler, RandomSampler
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from . import optuna_internals as internals
from .lattice import DEFAULT_SPACE, Lattice
from .planner import Key, KeySpace, Planner, Record, RoundPlan
from .replay import Attrs, Replay, one_record
from .rungs import AsyncRungPlanner, RungPlanner

if TYPE_CHECKING:
    from optuna.study import Study

__all__ = ["SCHEDULES", "LatticeSampler", "SearchPlan"]

#: Schedule structures, in the order used for structure indices in keys and for neighbours. The
#: same list as ``tfg_search.guidance.config.STRUCTURES`` (searchers stands alone as an OptunaHub
#: package, so it cannot import it; tests/test_config.py checks they agree).
SCHEDULES: tuple[str, ...] = ("increase", "decrease", "constant")
#: Reference default structures (docs/algorithm.md of the tfg-search repository, section 3); other
#: parameters start "constant".
_DEFAULT_STRUCTURES = {"rho": "increase", "mu": "increase", "gamma": "decrease"}

CLAIMS_KEPT = 4096  # claims remembered for the suggest calls that follow them (only recent ones matter)


@dataclass(frozen=True)
class _Claim:
    """What :meth:`LatticeSampler.before_trial` wrote on a trial (read back without a query)."""

    storage: BaseStorage
    number: int
    key: Key | None
    round: int | None
    surplus: str | None


@dataclass(frozen=True)
class SearchPlan:
    """A snapshot of a search, for dispatching a round and drawing progress.

    Attributes:
        round: Index of the current round (of the last round once exhausted).
        candidates: This round's configurations (parameter name to value; with schedule search
            also ``"<name>_schedule"`` to a structure), in search order.
        pending: Candidates of this round not handed out yet (claimable now without waiting).
        running: Candidates of this round handed out to trials that have not finished.
        exhausted: Whether the search is over (nothing is left to evaluate).
        ranking: Trial numbers of every point evaluated so far, best first (the trial of its
            last evaluation), by the search's own ranking; once exhausted, ``ranking[0]`` is the
            search's answer and the first ones are the configurations to re-run at full size.
    """

    round: int
    candidates: list[dict[str, float | str]]
    pending: int
    running: int
    exhausted: bool
    ranking: list[int]


class LatticeSampler(BaseSampler):
    """The shared base of the TFG searches (see the module docstring); not used on its own.

    A subclass says what its search is: :meth:`_planner` (a planner of its rounds for one
    study), :attr:`_rungs` (0, or the number of rungs that end each key), :meth:`_identity` (what
    its fingerprint adds to the space) and :attr:`ATTRS` (the names of its stored attributes).

    Args:
        space: Parameter name to :class:`~searchers.Lattice`, in parameter order. ``None``
            means :data:`~searchers.DEFAULT_SPACE` (rho, mu, gamma). One parameter is fine.
        search_schedules: Also search the schedule structure of each parameter (``True``) or of
            the named parameters (a list of names): the objective asks
            ``trial.suggest_categorical(f"{name}_schedule", list(SCHEDULES))``.
        start_schedules: Start structure per parameter when ``search_schedules`` is set.
            Defaults: rho and mu ``"increase"``, gamma ``"decrease"``, others ``"constant"``.
        seed_configs: Warm start: configurations (parameter name to value, and
            ``"<name>_schedule"`` to a structure where schedules are searched) evaluated first,
            each placed on the nearest lattice point (log scale; 0 goes to 0 where the lattice
            has it, else to its lowest value; a missing parameter counts as 0).
        poll_interval: Seconds between storage polls while waiting at the round barrier.
        barrier_timeout: Seconds a trial may wait at the barrier before it gives up: it is
            pruned unevaluated (reason ``"barrier-timeout"``) and the study stops. ``None``
            waits indefinitely.
        seed: Seed of the :class:`~optuna.samplers.RandomSampler` used for parameters outside
            the search space.
        steps_down: The beam's refined neighbourhood (:class:`~searchers.planner.KeySpace`).
    """

    ATTRS: Attrs
    """The names of the sampler's stored attributes (prefixed with its class name)."""
    _rungs: int = 0

    def __init__(
        self,
        *,
        space: Mapping[str, Lattice] | None,
        search_schedules: bool | Sequence[str],
        start_schedules: Mapping[str, str] | None,
        seed_configs: Sequence[Mapping[str, float | str]] | None,
        poll_interval: float,
        barrier_timeout: float | None,
        seed: int | None,
        steps_down: bool = False,
    ) -> None:
        space = dict(DEFAULT_SPACE if space is None else space)
        if not space:
            raise ValueError("The search space is empty: give at least one parameter.")
        for name, lattice in space.items():
            if not isinstance(lattice, Lattice):
                raise TypeError(f"Search space entry {name!r} must be a searchers.Lattice, got {lattice!r}.")
        if not poll_interval > 0:
            raise ValueError(f"poll_interval must be > 0 seconds, got {poll_interval!r}.")
        starts = {name: _DEFAULT_STRUCTURES.get(name, "constant") for name in space}
        unknown = set(start_schedules or {}) - set(space)
        if unknown:
            raise ValueError(f"start_schedules names parameters outside the space: {unknown}.")
        starts.update(start_schedules or {})
        for name, structure in starts.items():
            if structure not in SCHEDULES:
                raise ValueError(f"Start schedule {structure!r} of {name!r} is not one of {SCHEDULES}.")
        if isinstance(search_schedules, bool):
            structured = list(space) if search_schedules else []
        else:
            structured = list(search_schedules)
            unknown_schedules = set(structured) - set(space)
            if unknown_schedules:
                raise ValueError(f"search_schedules names parameters outside the space: {unknown_schedules}.")
        self._space = space
        self._names = list(space)
        self._structured = [name for name in self._names if name in structured]
        self._start_schedules = {name: starts[name] for name in self._names}
        self._poll_interval = float(poll_interval)
        self._barrier_timeout = barrier_timeout
        self._keyspace = KeySpace(
            sizes=tuple(space[name].size for name in self._names),
            n_structures=len(SCHEDULES) if self._structured else 0,
            start_structures=tuple(SCHEDULES.index(starts[name]) for name in self._names)
            if self._structured
            else (),
            lows=tuple(space[name].lowest_exponent for name in self._names),
            structured=tuple(name in self._structured for name in self._names),
            steps_down=steps_down,
            rungs=self._rungs,
        )
        self._seeds = tuple(self._seed_key(dict(config)) for config in seed_configs or ())
        fingerprint: dict[str, Any] = {
            "space": [[name, str(space[name])] for name in self._names],  # exact: see Lattice
            "schedules": None,
        }
        if self._structured:
            all_structured = len(self._structured) == len(self._names)
            fingerprint["schedules"] = (
                self._start_schedules
                if all_structured
                else {name: self._start_schedules[name] for name in self._structured}
            )
        if self._seeds:
            fingerprint["seeds"] = [list(key) for key in self._seeds]
        fingerprint.update(self._identity())
        self._fingerprint = json.dumps(fingerprint)
        self._fallback = RandomSampler(seed=seed)
        self._backoff = random.Random()
        self._lock = threading.Lock()
        self._replay = Replay(self._keyspace, self._planner, self._fingerprint, self.ATTRS, self._classify)
        self._claims: dict[int, _Claim] = {}  # trial id -> claim

    # ---------------------------------------------------------------- what a subclass says

    def _identity(self) -> dict[str, Any]:
        """What the search's fingerprint adds to the space's (its settings that change the plan)."""
        raise NotImplementedError

    def _planner(self, maximize: bool) -> Planner | RungPlanner | AsyncRungPlanner:
        """A new planner of this search for one study."""
        raise NotImplementedError

    def _classify(self, trial: FrozenTrial, key: Key) -> tuple[Record, ...]:
        """The records of a trial of this search whose claim holds ``key`` (one evaluation)."""
        return one_record(trial, key)

    def _claim_body(self, key: Key, round_: int) -> dict[str, Any]:
        """The claim a trial writes for candidate ``key`` of round ``round_``."""
        return {"key": list(key), "round": round_, "space": self._fingerprint}

    def _pickable(self, plan: RoundPlan) -> tuple[Key, ...]:
        """The pending candidates a new trial may claim (all of them, here)."""
        return plan.pending

    # ---------------------------------------------------------------- pickling (Ray, spawn)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for name in ("_lock", "_claims"):  # caches of storages: rebuilt from storage (the replay's too)
            del state[name]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self._claims = {}

    # ---------------------------------------------------------------- public inspection API

    @property
    def space(self) -> dict[str, Lattice]:
        """The searched lattices, in parameter order."""
        return dict(self._space)

    @property
    def schedule_params(self) -> tuple[str, ...]:
        """The parameters whose schedule structure is searched (empty: none)."""
        return tuple(self._structured)

    @property
    def seed_points(self) -> tuple[dict[str, float | str], ...]:
        """The warm-start configurations (``seed_configs``) as the lattice points the search
        evaluates first, in order, without repeats; empty without a warm start.

        Example:
            >>> from searchers import TFGBeamSampler
            >>> space = {"rho": Lattice(0.25, 2.0, 8.0)}
            >>> TFGBeamSampler(space=space, seed_configs=[{"rho": 1.1}]).seed_points
            ({'rho': 1.0},)
        """
        return tuple(self._point_params(key) for key in dict.fromkeys(self._seeds))

    def plan(self, study: Study) -> SearchPlan:
        """Where the search stands, recomputed from the study's storage."""
        plan = self._fresh_plan(study)
        return SearchPlan(
            round=plan.round,
            candidates=[self._params(key) for key in plan.candidates],
            pending=len(plan.pending),
            running=len(plan.running),
            exhausted=plan.exhausted,
            ranking=list(plan.ranked),
        )

    def is_exhausted(self, study: Study) -> bool:
        """Whether the search is over (no configuration is left to evaluate)."""
        return self._fresh_plan(study).exhausted

    def trial_key(self, trial: FrozenTrial | optuna.Trial) -> Key | None:
        """The integer key of the candidate a trial evaluates, or ``None`` outside the search."""
        claim = self._claim_of(trial)
        if claim is not None:
            return claim.key
        key, _, space = self.ATTRS.claim_of(_system_attrs(trial))
        if key is None or space != self._fingerprint:
            return None
        return tuple(key)

    def trial_round(self, trial: FrozenTrial | optuna.Trial) -> int | None:
        """The round of a trial's candidate, or ``None`` outside the search."""
        claim = self._claim_of(trial)
        if claim is not None:
            return claim.round
        key, round_, space = self.ATTRS.claim_of(_system_attrs(trial))
        if key is None or space != self._fingerprint:
            return None
        return int(round_)

    @classmethod
    def is_requeued(cls, study: Study, trial: FrozenTrial) -> bool:
        """Whether a FAIL trial's configuration was given back to the search (:meth:`requeue`)."""
        if trial.system_attrs.get(cls.ATTRS.requeue):
            return True
        attrs = internals.study_system_attrs(study)
        return bool(attrs.get(f"{cls.ATTRS.requeue}:{internals.trial_id(trial)}"))

    @classmethod
    def requeue(cls, study: Study, trial_number: int) -> None:
        """Give a trial's configuration back to the search, to be evaluated again.

        The trial (RUNNING, e.g. left by a killed process, or FAIL) is marked FAIL with the system
        attribute ``"<class name>:requeue"``; its configuration is no longer counted as evaluated
        and is handed to the next trial of the same round. A trial outside the search (no
        configuration, e.g. enqueued) is only marked FAIL.

        Raises:
            ValueError: If the trial is neither RUNNING nor FAIL.
        """
        storage = internals.storage(study)
        trial_id = storage.get_trial_id_from_study_id_trial_number(internals.study_id(study), trial_number)
        state = storage.get_trial(trial_id).state
        if state not in (TrialState.RUNNING, TrialState.FAIL):
            raise ValueError(
                f"Trial {trial_number} is {state.name}; only RUNNING or FAIL trials can be requeued."
            )
        if state == TrialState.RUNNING:
            storage.set_trial_system_attr(trial_id, cls.ATTRS.requeue, True)
            storage.set_trial_state_values(trial_id, TrialState.FAIL)
        else:  # a finished trial's attributes are read-only: mark it in the study instead
            internals.set_study_system_attr(study, f"{cls.ATTRS.requeue}:{trial_id}", True)

    # ---------------------------------------------------------------- BaseSampler interface

    def reseed_rng(self) -> None:
        self._fallback.reseed_rng()
        self._backoff = random.Random()

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return {}

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        _check_single_objective(study, type(self).__name__)
        return {}

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        """Claim the next configuration of the current round for ``trial`` (waiting if needed)."""
        _check_single_objective(study, type(self).__name__)
        if self.ATTRS.claim_of(trial.system_attrs)[0] is not None or "fixed_params" in trial.system_attrs:
            return  # a retry that already carries its key, or an enqueued trial (not ours)
        storage = internals.storage(study)
        trial_id = internals.trial_id(trial)
        deadline = None
        if self._barrier_timeout is not None:
            deadline = time.monotonic() + self._barrier_timeout
        # "view": plan from what this sampler last read (checked after the claim); "read": read
        # first; "fresh": the view was read just now (no wait since).
        source = "view"
        while True:
            delay: float | None = self._poll_interval
            with self._lock:
                view = self._replay.view(study)
                fresh = source != "view" or not view.read
                records = (
                    self._replay.read(study, view) if source == "read" or not view.read else view.records()
                )
                plan = view.plan(records)
                if not fresh and not self._pickable(plan):  # nothing to claim in the view: ask storage
                    fresh = True
                    plan = view.plan(self._replay.read(study, view))
                if plan.exhausted:
                    storage.set_trial_system_attr(trial_id, self.ATTRS.surplus, "exhausted")
                    self._remember(storage, trial, None, None, "exhausted")
                    _stop(study)
                    return
                if self._pickable(plan):
                    key = self._pickable(plan)[0]
                    claim = self._claim_body(key, plan.round)
                    storage.set_trial_system_attr(trial_id, self.ATTRS.claim, claim)
                    holders = self._replay.read(study, view)
                    if fresh:  # planned from storage: keep the key unless another trial holds it
                        kept = not any(r.key == key and r.number != trial.number for r in holders)
                    else:  # planned from the view: keep it only if storage would have chosen it
                        check = view.plan(view.records(without=trial.number))
                        kept = check.round == plan.round and self._pickable(check)[:1] == (key,)
                    if kept:
                        self._remember(storage, trial, key, plan.round, None)
                        return
                    yielded = {**claim, "key": None}
                    storage.set_trial_system_attr(trial_id, self.ATTRS.claim, yielded)
                    view.tail = [r for r in view.tail if r.number != trial.number]
                    # Planned from storage: back off. From the view: it was stale and is fresh
                    # now, so pick again at once.
                    delay = self._backoff.uniform(0.0, self._poll_interval) if fresh else None
            if delay is None:
                source = "fresh"
                continue
            if deadline is not None and time.monotonic() > deadline:
                storage.set_trial_system_attr(trial_id, self.ATTRS.surplus, "barrier-timeout")
                with self._lock:
                    self._remember(storage, trial, None, None, "barrier-timeout")
                _stop(study)
                return
            _record_heartbeat(study, trial_id)
            time.sleep(delay)
            source = "read"

    def sample_independent(
        self,
        study: Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        """The lattice value (or structure) of the trial's configuration for ``param_name``.

        Parameters outside the search space, and trials outside the search (enqueued ones), are
        sampled by a :class:`~optuna.samplers.RandomSampler`.

        Raises:
            optuna.TrialPruned: If the trial got no configuration (surplus trial).
            ValueError: If the distribution does not contain the configuration's value.
        """
        _check_single_objective(study, type(self).__name__)
        claim = self._claims.get(internals.trial_id(trial))
        if claim is not None and claim.storage is internals.storage(study) and claim.number == trial.number:
            reason, key = claim.surplus, claim.key  # what before_trial wrote: no storage read
        else:
            reason = trial.system_attrs.get(self.ATTRS.surplus)
            key = None if reason is not None else self.trial_key(trial)
        if reason is not None:
            raise optuna.TrialPruned(
                f"{type(self).__name__} gave trial {trial.number} no configuration ({reason}); "
                "it is not evaluated."
            )
        value = None if key is None else self._params(key).get(param_name)
        if value is None:
            return self._fallback.sample_independent(study, trial, param_name, param_distribution)
        return _fit(type(self).__name__, param_name, value, param_distribution)

    def after_trial(
        self,
        study: Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        """Stop the study when this trial completes the search (no trial beyond the search)."""
        if len(study.directions) > 1:
            return
        finished = _finished(trial, state, values)
        with self._lock:
            view = self._replay.view(study)
            trial_id = internals.trial_id(trial)
            # The view with this trial finished: exact in sequential use. Trials of other processes
            # may have finished since it was read, so it is only trusted when it says the search
            # goes on (at worst a later trial of this process then finds it exhausted and is
            # pruned as surplus); "exhausted" is checked against storage.
            if (
                view.read
                and view.finish(trial.number, self._replay.see(finished), trial_id)
                and not view.plan(view.records()).exhausted
            ):
                return
            exhausted = view.plan(self._replay.read(study, view, finished)).exhausted
        if exhausted:
            _stop(study)

    # ---------------------------------------------------------------- internals

    def _fresh_plan(self, study: Study) -> RoundPlan:
        with self._lock:
            view = self._replay.view(study)
            return view.plan(self._replay.read(study, view))

    def _remember(
        self,
        storage: BaseStorage,
        trial: FrozenTrial,
        key: Key | None,
        round_: int | None,
        surplus: str | None,
    ) -> None:
        self._claims[internals.trial_id(trial)] = _Claim(storage, trial.number, key, round_, surplus)
        while len(self._claims) > CLAIMS_KEPT:
            del self._claims[next(iter(self._claims))]

    def _claim_of(self, trial: FrozenTrial | optuna.Trial) -> _Claim | None:
        """This sampler's claim on a live trial (an ``optuna.Trial``), if it made one."""
        if isinstance(trial, FrozenTrial):
            return None
        claim = self._claims.get(internals.trial_id(trial))
        if claim is None or claim.storage is not trial.storage or claim.number != trial.number:
            return None
        return claim

    def _params(self, key: Key) -> dict[str, float | str]:
        """The parameters of a candidate key (a key of a search with rungs ends with its rung)."""
        return self._point_params(key[:-1] if self._rungs else key)

    def _point_params(self, key: Key) -> dict[str, float | str]:
        n = len(self._names)
        params: dict[str, float | str] = {
            name: self._space[name].value(k) for name, k in zip(self._names, key[:n], strict=True)
        }
        for name, s in zip(self._structured, key[n:], strict=True):
            params[f"{name}_schedule"] = SCHEDULES[s]
        return params

    def _seed_key(self, config: dict[str, Any]) -> Key:
        """The lattice point nearest to a warm-start configuration (see ``seed_configs``)."""
        exponents = []
        for name in self._names:
            value = config.get(name, 0.0)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"seed_configs: {name} must be a number, got {value!r}.")
            exponents.append(self._space[name].nearest(float(value)))
        structures = []
        for name in self._structured:
            structure = config.get(f"{name}_schedule", self._start_schedules[name])
            if structure not in SCHEDULES:
                raise ValueError(f"seed_configs: {name}_schedule {structure!r} is not one of {SCHEDULES}.")
            structures.append(SCHEDULES.index(structure))
        return (*exponents, *structures)


def _fit(sampler: str, name: str, value: float | str, distribution: BaseDistribution) -> Any:
    """Return ``value`` in the form ``distribution`` expects, or raise a clear ValueError."""
    if isinstance(distribution, FloatDistribution) and isinstance(value, float):
        if not distribution.low <= value <= distribution.high:
            raise ValueError(
                f"{sampler} assigned {name}={value!r}, outside the bounds "
                f"[{distribution.low!r}, {distribution.high!r}] of suggest_float({name!r}, ...): "
                "widen the bounds to cover the lattice (its init and cap; 0 and no log=True for a "
                "lattice with 0)."
            )
    elif isinstance(distribution, IntDistribution) and isinstance(value, float):
        if value.is_integer():
            value = int(value)
    elif isinstance(distribution, CategoricalDistribution) and value not in distribution.choices:
        raise ValueError(
            f"{sampler} assigned {name}={value!r}, which is not among the choices "
            f"{distribution.choices!r}: include it."
        )
    if isinstance(distribution, CategoricalDistribution):
        return value
    if not internals.contains(distribution, value):
        raise ValueError(
            f"{sampler} assigned {name}={value!r}, which {distribution} does not contain: "
            "suggest it with suggest_float over bounds that cover the lattice (no step)."
        )
    return value


def _finished(trial: FrozenTrial, state: TrialState, values: Sequence[float] | None) -> FrozenTrial:
    """A copy of a running trial as it will be stored once told (for after_trial)."""
    return FrozenTrial(
        number=trial.number,
        state=state,
        value=None,
        values=list(values) if values is not None and state == TrialState.COMPLETE else None,
        datetime_start=trial.datetime_start,
        datetime_complete=None,
        params=trial.params,
        distributions=trial.distributions,
        user_attrs=trial.user_attrs,
        system_attrs=trial.system_attrs,
        intermediate_values=trial.intermediate_values,
        trial_id=internals.trial_id(trial),
    )


def _system_attrs(trial: FrozenTrial | optuna.Trial) -> Mapping[str, Any]:
    if isinstance(trial, FrozenTrial):
        return trial.system_attrs
    return trial.storage.get_trial_system_attrs(internals.trial_id(trial))


def _check_single_objective(study: Study, sampler: str) -> None:
    if len(study.directions) > 1:
        raise ValueError(
            f"{sampler} ranks by a single objective value; create the study with one "
            "direction (combine several metrics into one score)."
        )


def _stop(study: Study) -> None:
    # Study.stop raises RuntimeError outside optimize(); ask-and-tell users poll is_exhausted().
    with contextlib.suppress(RuntimeError):
        study.stop()


def _record_heartbeat(study: Study, trial_id: int) -> None:
    # A trial waiting at the barrier is RUNNING: keep it from being failed as stale.
    storage = internals.storage(study)
    interval = getattr(storage, "get_heartbeat_interval", lambda: None)()
    if interval is not None:
        storage.record_heartbeat(trial_id)

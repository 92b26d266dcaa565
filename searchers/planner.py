"""The beam doubling search as pure functions of what has been evaluated (no Optuna, no I/O).

docs/algorithm.md of the tfg-search repository, section 5. A candidate is a :data:`Key`: one
integer lattice exponent per searched parameter, followed (when schedule structures are
searched) by one structure index per parameter. Given the records of every trial so far,
:func:`plan_round` replays the search from round 0 and says which round is current, which of its
candidates are done, handed out or still free, and whether the search is over. Its result depends
on the records alone, which is what makes the sampler restartable from storage. :class:`Planner`
gives the same result for a study that grows: it keeps the replay of the rounds already complete
and reuses it while their records are unchanged, so a call costs about the current round, not
every round behind it.

Procedure replayed here:

* Round 0: the start point, then its one-parameter neighbours, then the seed candidates (warm
  start, e.g. the earlier methods' configurations) that are not among them.
* Round r >= 1 (once every candidate of round r - 1 is done): rank every candidate done so far,
  keep the ``top_k`` best (the beam), and take the neighbours of each beam member in beam order,
  skipping candidates already evaluated or already queued in this round.
* The search is exhausted after ``max_rounds`` rounds, or when a round has nothing new.

Ranking: completed candidates by value (best first, direction-aware), failed candidates after all
completed ones, ties broken by the candidate's position in the search order (round, then place in
the round), which is the trial order of a sequential run.
"""

from __future__ import annotations

import bisect
import dataclasses
import enum
import itertools
import math
import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

Key = tuple[int, ...]

__all__ = ["Key", "KeySpace", "Outcome", "Planner", "Record", "RoundPlan", "plan_round", "resolve"]


class Outcome(enum.Enum):
    """What a record says about its candidate."""

    COMPLETE = "complete"  # evaluated, with a finite or infinite (never NaN) value
    FAILED = "failed"  # evaluated, no usable value: ranks below every completed candidate
    RUNNING = "running"  # handed out to a trial that has not finished


@dataclass(frozen=True)
class Record:
    """One trial as the planner sees it.

    Args:
        number: The trial number (the representative of its key in :attr:`RoundPlan.ranked`).
        key: The candidate the trial evaluates.
        outcome: Its state.
        value: The objective value when ``outcome`` is COMPLETE, else ``None``.
    """

    number: int
    key: Key
    outcome: Outcome
    value: float | None = None


@dataclass(frozen=True)
class KeySpace:
    """The shape of candidate keys.

    Args:
        sizes: Number of positive lattice points of each parameter, in parameter order
            (exponents ``0 .. size - 1``).
        n_structures: Number of schedule structures per parameter when structures are part of
            the key, else 0.
        start_structures: Start structure index of each parameter (used only when
            ``n_structures > 0``).
        lows: Lowest exponent of each parameter: 0, or -1 where 0 ("off") is a lattice value
            (default: 0 for every parameter, the reference lattices).
        structured: Which parameters have a structure in the key (default: all of them when
            ``n_structures > 0``); the key holds one structure index per structured parameter.
        steps_down: Whether a neighbour may also lower an exponent by one anywhere (the
            "refined" neighbourhood); the reference only steps up (and down to 0 from the lowest
            positive value, where 0 is a value).
        rungs: When > 0, a key ends with a rung index ``0 .. rungs - 1`` after the point (the
            rung search, :mod:`searchers.rungs`).
    """

    sizes: tuple[int, ...]
    n_structures: int = 0
    start_structures: tuple[int, ...] = ()
    lows: tuple[int, ...] = ()
    structured: tuple[bool, ...] = ()
    steps_down: bool = False
    rungs: int = 0

    def __post_init__(self) -> None:
        if not self.sizes or min(self.sizes) < 1:
            raise ValueError(f"Every parameter needs at least one lattice point: {self.sizes}.")
        if self.n_structures and len(self.start_structures) != len(self.sizes):
            raise ValueError("start_structures needs one entry per parameter.")
        if any(not 0 <= s < self.n_structures for s in self.start_structures):
            raise ValueError(f"start_structures {self.start_structures} out of range.")
        if not self.lows:
            object.__setattr__(self, "lows", (0,) * len(self.sizes))
        if len(self.lows) != len(self.sizes) or any(low not in (0, -1) for low in self.lows):
            raise ValueError(f"lows needs one entry (0 or -1) per parameter, got {self.lows}.")
        if not self.structured:
            object.__setattr__(self, "structured", (bool(self.n_structures),) * len(self.sizes))
        if len(self.structured) != len(self.sizes) or (any(self.structured) and not self.n_structures):
            raise ValueError("structured needs one flag per parameter (and n_structures > 0 if any is set).")
        if self.rungs < 0:
            raise ValueError(f"rungs must be >= 0, got {self.rungs}.")

    @property
    def structure_slots(self) -> tuple[int, ...]:
        """The parameters (indices) that carry a structure index in the key, in key order."""
        return tuple(i for i, flag in enumerate(self.structured) if flag)

    @property
    def start(self) -> Key:
        """All exponents 0 (and the start structures)."""
        return (0,) * len(self.sizes) + tuple(self.start_structures[i] for i in self.structure_slots)

    def is_valid(self, key: Key) -> bool:
        """Whether ``key`` is a point of this space (with its rung, when the space has rungs)."""
        n = len(self.sizes)
        if self.rungs:
            if not key or not 0 <= key[-1] < self.rungs:
                return False
            key = key[:-1]
        if len(key) != n + len(self.structure_slots):
            return False
        exponents_ok = all(
            low <= k < size for k, low, size in zip(key[:n], self.lows, self.sizes, strict=True)
        )
        return exponents_ok and all(0 <= s < self.n_structures for s in key[n:])

    def point_space(self) -> KeySpace:
        """The same space without rungs (keys are points)."""
        return dataclasses.replace(self, rungs=0)

    def points(self) -> list[Key]:
        """Every point (exponents, then structures; no rung), in lattice order."""
        axes = [range(low, size) for low, size in zip(self.lows, self.sizes, strict=True)]
        axes += [range(self.n_structures) for _ in self.structure_slots]
        return [tuple(k) for k in itertools.product(*axes)]

    def neighbours(self, key: Key) -> list[Key]:
        """One-parameter neighbours in parameter order.

        For each parameter: its exponent + 1 (when still on the lattice; from 0 "off" this is the
        step back up to the lowest positive value), then, where 0 is a value and the exponent is
        0, the step down to 0 (exponent -1) (with ``steps_down``: the exponent - 1 whenever it is
        on the lattice), then, when structures are searched, the same point with that parameter's
        structure switched to each other structure (in structure order).
        """
        n = len(self.sizes)
        result: list[Key] = []
        for i, size in enumerate(self.sizes):
            if key[i] + 1 < size:
                result.append((*key[:i], key[i] + 1, *key[i + 1 :]))
            if (self.steps_down or key[i] == 0) and key[i] - 1 >= self.lows[i]:
                result.append((*key[:i], key[i] - 1, *key[i + 1 :]))
            if self.structured[i]:
                j = n + self.structure_slots.index(i)
                for s in range(self.n_structures):
                    if s != key[j]:
                        result.append((*key[:j], s, *key[j + 1 :]))
        return result


@dataclass(frozen=True)
class RoundPlan:
    """Where the search stands.

    Attributes:
        round: Index of the current round (the last one when exhausted).
        candidates: This round's candidates in search order.
        pending: Candidates of this round nobody holds yet, in search order.
        running: Candidates of this round handed out to unfinished trials.
        exhausted: True when the search is over (round limit, or a round with nothing new).
        ranking: Every candidate done so far, best first.
        ranked: ``ranking`` as trial numbers (the beam: its first ``top_k``).
        order: Position of every planned candidate in the search order.
    """

    round: int
    candidates: tuple[Key, ...]
    pending: tuple[Key, ...]
    running: tuple[Key, ...]
    exhausted: bool
    ranking: tuple[Key, ...]
    ranked: tuple[int, ...]
    order: dict[Key, int]


_PRIORITY = {Outcome.COMPLETE: 0, Outcome.FAILED: 1, Outcome.RUNNING: 2}


def resolve(records: Iterable[Record], best: dict[Key, Record] | None = None) -> dict[Key, Record]:
    """One representative record per key: COMPLETE beats FAILED beats RUNNING, then lower number.

    With ``best`` (the resolution of other records), the records are resolved into it.
    """
    best = {} if best is None else best
    for record in records:
        current = best.get(record.key)
        if current is None or (_PRIORITY[record.outcome], record.number) < (
            _PRIORITY[current.outcome],
            current.number,
        ):
            best[record.key] = record
    return best


def _rank(keys: Iterable[Key], status: dict[Key, Record], order: dict[Key, int], maximize: bool) -> list[Key]:
    def sort_key(key: Key) -> tuple[int, float, int]:
        record = status[key]
        if record.outcome is not Outcome.COMPLETE or record.value is None:
            return (1, 0.0, order[key])
        value = record.value
        if math.isnan(value):
            return (1, 0.0, order[key])
        return (0, -value if maximize else value, order[key])

    return sorted(keys, key=sort_key)


def plan_round(
    space: KeySpace,
    records: Sequence[Record],
    top_k: int,
    max_rounds: int,
    maximize: bool = True,
    seeds: Sequence[Key] = (),
) -> RoundPlan:
    """Replay the search over ``records`` and describe the current round.

    Records whose key is not a candidate of a planned round are ignored (they cannot influence the
    search). A candidate is done when a record for it is COMPLETE or FAILED, handed out when its
    only records are RUNNING, and pending when it has no record.

    Args:
        space: The key space.
        records: The trials so far (any order).
        top_k: Beam width.
        max_rounds: Round limit; round 0 counts.
        maximize: Whether larger values are better.
        seeds: Extra candidates of round 0, after the start point and its neighbours (invalid
            keys and repeats are skipped).

    Returns:
        The plan of the current round.
    """
    return Planner(space, top_k, max_rounds, maximize, seeds).plan(records)


SortKey = tuple[int, float, int]
_SECOND = operator.itemgetter(1)


@dataclass(frozen=True)
class _Settled:
    """The replay after the last round found complete; valid while its rounds' records hold.

    Attributes:
        rounds: The candidates of each complete round.
        resolved: The record each of their candidates resolved to (never mutated once stored).
        order: Position of every candidate of those rounds (never mutated once stored).
        ranked: Their done candidates with sort keys, best first (never mutated once stored).
        following: The candidates of the round after them (empty: the search is exhausted).
    """

    rounds: tuple[tuple[Key, ...], ...]
    resolved: dict[Key, Record]
    order: dict[Key, int]
    ranked: list[tuple[SortKey, Key]]
    following: list[Key]


class Planner:
    """:func:`plan_round` for a growing study: rounds already complete are not replayed again.

    The replay up to the last complete round depends only on the records its candidates resolve
    to, so the planner keeps that state and reuses it for as long as every one of those candidates
    still resolves to the same record (compared by identity, then by value); otherwise it replays
    from round 0. Which candidates to compare: only those whose records changed since the previous
    call, when the call's records begin with the previous call's ``stable`` ones; else all. The
    result is always that of :func:`plan_round` over the same records, so the cost of a call grows
    with the current round, not with the number of rounds behind it. Not thread-safe: callers
    serialise their calls.

    Args:
        space, top_k, max_rounds, maximize, seeds: as for :func:`plan_round`.
    """

    def __init__(
        self,
        space: KeySpace,
        top_k: int,
        max_rounds: int,
        maximize: bool = True,
        seeds: Sequence[Key] = (),
    ) -> None:
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}.")
        if max_rounds < 1:
            raise ValueError(f"max_rounds must be >= 1, got {max_rounds}.")
        self.space = space
        self.top_k = top_k
        self.max_rounds = max_rounds
        self.maximize = maximize
        candidates = [space.start]
        for key in [*space.neighbours(space.start), *seeds]:
            if key not in candidates and space.is_valid(tuple(key)):
                candidates.append(tuple(key))
        self._round0 = candidates
        self._settled: _Settled | None = None
        self._stable: list[Record] = []  # leading records of the last call that callers keep
        self._stable_status: dict[Key, Record] = {}  # their resolution
        self._tail_keys: set[Key] = set()  # keys of the last call's other records

    def _sort_key(self, record: Record, position: int) -> SortKey:
        # As _rank: completed candidates by value, failed ones (and NaN) after them, then order.
        value = record.value
        if record.outcome is not Outcome.COMPLETE or value is None or math.isnan(value):
            return (1, 0.0, position)
        return (0, -value if self.maximize else value, position)

    def _holds(self, settled: _Settled, status: dict[Key, Record], changed: set[Key] | None) -> bool:
        """Whether every candidate of the settled rounds still resolves to the same record.

        ``changed``: the keys whose resolution may differ from the previous call's (None: any);
        the settled state held then, so only those need comparing.
        """
        resolved = settled.resolved
        if changed is None:
            if all(map(operator.is_, resolved.values(), map(status.get, resolved))):
                return True
            keys: Iterable[Key] = resolved
        else:
            keys = [key for key in changed if key in resolved]
        same: dict[Key, Record] = {}
        for key in keys:
            now = status.get(key)
            if now is resolved[key]:
                continue
            if now != resolved[key]:
                return False
            same[key] = now  # equal, not the same object (the caller made a new one)
        if same:  # keep the new objects, so that the next full check compares by identity again
            self._settled = dataclasses.replace(settled, resolved={**resolved, **same})
        return True

    def _status(self, records: Sequence[Record], stable: int) -> tuple[dict[Key, Record], set[Key] | None]:
        """:func:`resolve` of ``records``, reusing that of their first ``stable`` ones when the
        previous call began with the same records; and the keys whose resolution may have changed
        since the previous call (None: unknown)."""
        known = self._stable
        changed: set[Key] | None
        if stable >= len(known) and list(records[: len(known)]) == known:  # identical: compared in C
            changed = set(self._tail_keys)
            if stable > len(known):
                added = list(records[len(known) : stable])
                changed.update(record.key for record in added)
                self._stable_status = resolve(added, dict(self._stable_status))
                self._stable = known + added
        else:
            changed = None
            self._stable = list(records[:stable])
            self._stable_status = resolve(self._stable)
        tail = records[stable:]
        self._tail_keys = {record.key for record in tail}
        if changed is not None:
            changed |= self._tail_keys
        return resolve(tail, dict(self._stable_status)), changed

    def plan(self, records: Sequence[Record], stable: int = 0) -> RoundPlan:
        """The plan of the current round over ``records`` (see :func:`plan_round`).

        ``stable``: a hint that the first ``stable`` records will also lead the records of later
        calls (e.g. those of finished trials, which never change); their resolution is then kept.
        The result does not depend on it.
        """
        status, changed = self._status(records, stable)
        settled = self._settled
        if settled is not None and self._holds(settled, status, changed):
            settled = self._settled
            assert settled is not None
            if not settled.following:  # exhausted at the last complete round
                ranking = tuple(map(_SECOND, settled.ranked))
                numbers = tuple(status[k].number for k in ranking)
                last = settled.rounds[-1]
                return RoundPlan(
                    len(settled.rounds) - 1, last, (), (), True, ranking, numbers, dict(settled.order)
                )
            rounds = list(settled.rounds)
            order = dict(settled.order)
            ranked = settled.ranked
            candidates = settled.following
        else:
            settled = None
            rounds, order, ranked, candidates = [], {}, [], self._round0
        resolved: dict[Key, Record] = {}  # of the rounds completed in this call
        new_settled: tuple[int, list[tuple[SortKey, Key]], list[Key]] | None = None
        while True:
            round_index = len(rounds)
            for key in candidates:
                order[key] = len(order)
            pending = [k for k in candidates if k not in status]
            running = [k for k in candidates if k in status and status[k].outcome is Outcome.RUNNING]
            done = [k for k in candidates if k in status and status[k].outcome is not Outcome.RUNNING]
            if done:
                ranked = list(ranked)  # a copy: a stored ranking is never changed
                for k in done:  # few per round: insert each, rather than sort everything again
                    bisect.insort(ranked, (self._sort_key(status[k], order[k]), k))
            ranking = tuple(map(_SECOND, ranked))
            if pending or running:
                plan = RoundPlan(
                    round_index,
                    tuple(candidates),
                    tuple(pending),
                    tuple(running),
                    False,
                    ranking,
                    tuple(status[k].number for k in ranking),
                    order,
                )
                break
            rounds.append(tuple(candidates))
            resolved.update((k, status[k]) for k in candidates)
            following: list[Key] = []
            if round_index + 1 < self.max_rounds:
                for member in ranking[: self.top_k]:
                    for key in self.space.neighbours(member):
                        if key not in order and key not in following:
                            following.append(key)
            new_settled = (len(order), ranked, following)
            if not following:
                numbers = tuple(status[k].number for k in ranking)
                plan = RoundPlan(round_index, tuple(candidates), (), (), True, ranking, numbers, order)
                break
            candidates = following
        if new_settled is not None:
            size, settled_ranked, settled_following = new_settled
            settled_order = order if size == len(order) else dict(itertools.islice(order.items(), size))
            if settled is not None:
                resolved = {**settled.resolved, **resolved}
            self._settled = _Settled(
                tuple(rounds), resolved, dict(settled_order), settled_ranked, settled_following
            )
        elif settled is None:
            self._settled = None
        return plan

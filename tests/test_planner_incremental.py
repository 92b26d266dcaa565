"""The incremental planner (searchers.planner.Planner) against a fresh replay, on random histories.

The sampler keeps one Planner per study and calls it at every ask and tell; it must always say what
a replay from round 0 says over the same records (``replay`` below: the procedure written plainly,
independent of the planner's code), however the records changed since the previous call: new
claims, results, failures, NaN values, requeued (removed) records of earlier rounds, duplicates of
done keys, equal records made anew, a shuffled order, and ``stable`` hints that do not hold.
"""

from __future__ import annotations

import math
import random

import pytest

from searchers.planner import Key, KeySpace, Outcome, Planner, Record, RoundPlan, plan_round


def replay(
    space: KeySpace, records: list[Record], top_k: int, max_rounds: int, maximize: bool, seeds: list[Key]
) -> RoundPlan:
    """The search replayed from round 0 over ``records``, round by round (docs/searchers.md)."""
    priority = {Outcome.COMPLETE: 0, Outcome.FAILED: 1, Outcome.RUNNING: 2}
    status: dict[Key, Record] = {}
    for r in records:  # one record per key: COMPLETE, then FAILED, then RUNNING; then lower number
        if r.key not in status or (priority[r.outcome], r.number) < (
            priority[status[r.key].outcome],
            status[r.key].number,
        ):
            status[r.key] = r

    def rank_key(key: Key) -> tuple[int, float, int]:
        r = status[key]
        if r.outcome is not Outcome.COMPLETE or r.value is None or math.isnan(r.value):
            return (1, 0.0, order[key])
        return (0, -r.value if maximize else r.value, order[key])

    order: dict[Key, int] = {}
    done: list[Key] = []
    candidates = [space.start]
    for key in [*space.neighbours(space.start), *seeds]:
        if key not in candidates and space.is_valid(key):
            candidates.append(key)
    for round_index in range(max_rounds):
        for key in candidates:
            order[key] = len(order)
        pending = tuple(k for k in candidates if k not in status)
        running = tuple(k for k in candidates if k in status and status[k].outcome is Outcome.RUNNING)
        done += [k for k in candidates if k in status and status[k].outcome is not Outcome.RUNNING]
        ranking = tuple(sorted(done, key=rank_key))
        ranked = tuple(status[k].number for k in ranking)
        if pending or running:
            return RoundPlan(round_index, tuple(candidates), pending, running, False, ranking, ranked, order)
        following: list[Key] = []
        for member in ranking[:top_k] if round_index + 1 < max_rounds else ():
            following += [k for k in space.neighbours(member) if k not in order and k not in following]
        if not following:
            return RoundPlan(round_index, tuple(candidates), (), (), True, ranking, ranked, order)
        candidates = following
    raise AssertionError("unreachable: the last round returns")


def _space(rng: random.Random) -> KeySpace:
    n = rng.randint(1, 3)
    structured = rng.random() < 0.3
    return KeySpace(
        sizes=tuple(rng.randint(2, 6) for _ in range(n)),
        n_structures=3 if structured else 0,
        start_structures=tuple(rng.randrange(3) for _ in range(n)) if structured else (),
        lows=tuple(rng.choice((0, -1)) for _ in range(n)),
        steps_down=rng.random() < 0.3,
    )


def _step(rng: random.Random, records: list[Record], plan, number: int) -> tuple[list[Record], int]:
    """One random change of the history (what storage may show at the next call)."""
    action = rng.random()
    records = list(records)
    running = [r for r in records if r.outcome is Outcome.RUNNING]
    done = [r for r in records if r.outcome is not Outcome.RUNNING]
    if action < 0.35 and plan.pending:  # a trial claims a pending key
        records.append(Record(number, rng.choice(plan.pending[:2]), Outcome.RUNNING))
        number += 1
    elif action < 0.75 and running:  # a running trial finishes (ties, failures and NaN included)
        r = rng.choice(running)
        records.remove(r)
        kind = rng.random()
        if kind < 0.75:
            records.append(Record(r.number, r.key, Outcome.COMPLETE, float(rng.randint(0, 4))))
        elif kind < 0.9:
            records.append(Record(r.number, r.key, Outcome.FAILED))
        else:
            records.append(Record(r.number, r.key, Outcome.COMPLETE, math.nan))
    elif action < 0.8 and done:  # a finished trial is requeued: its record goes
        records.remove(rng.choice(done))
    elif action < 0.85 and done:  # a duplicate of a done key (a retry, a race)
        r = rng.choice(done)
        records.append(Record(number, r.key, rng.choice(list(Outcome)), float(rng.randint(0, 4))))
        number += 1
    elif action < 0.9:  # the same records, made anew (another read of storage)
        records = [Record(r.number, r.key, r.outcome, r.value) for r in records]
    elif action < 0.95:
        rng.shuffle(records)
    return records, number


@pytest.mark.parametrize("seed", range(60))
def test_incremental_planner_equals_a_fresh_replay(seed: int) -> None:
    rng = random.Random(seed)
    space = _space(rng)
    top_k, max_rounds, maximize = rng.randint(1, 3), rng.randint(1, 8), rng.random() < 0.7
    seeds = [tuple(rng.randint(-1, s - 1) for s in space.sizes) + space.start[len(space.sizes) :]]
    planner = Planner(space, top_k, max_rounds, maximize, seeds)
    records: list[Record] = []
    number = 0
    for _ in range(300):
        stable = rng.randint(0, len(records))  # a hint that may or may not hold next time
        got = planner.plan(records, stable)
        expected = replay(space, records, top_k, max_rounds, maximize, seeds)
        assert got == expected
        assert plan_round(space, records, top_k, max_rounds, maximize, seeds) == expected
        assert list(got.order) == list(expected.order)  # positions in the same insertion order too
        records, number = _step(rng, records, expected, number)


def test_a_long_search_replays_only_its_current_round() -> None:
    """Settled rounds are reused: a call after many rounds costs about what an early one does."""
    space = KeySpace(sizes=(60, 60, 60))
    planner = Planner(space, top_k=8, max_rounds=1000)
    records: list[Record] = []
    number = 0
    while number < 1500:
        plan = planner.plan(records, len(records))
        assert not plan.exhausted
        for key in plan.pending:
            records.append(Record(number, key, Outcome.COMPLETE, float(sum(key))))
            number += 1
    assert planner.plan(records) == plan_round(space, records, 8, 1000)
    settled = planner._settled  # the cache itself is what is tested here
    assert settled is not None and len(settled.rounds) == plan_round(space, records, 8, 1000).round

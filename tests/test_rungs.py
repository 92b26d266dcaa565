"""The rung search (searchers/rungs.py, searchers/surrogate.py) and TFGRungSampler: its plan, its
guarantees on any objective scale, Optuna's contract (one trial per point, ``best_trial`` is the
answer) in both modes, determinism from storage, threads."""

from __future__ import annotations

import math
import pickle
import random
from collections.abc import Callable

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from searchers import DEFAULT_SPACE, Lattice, RungSchedule, TFGBeamSampler, TFGRungSampler
from searchers.planner import KeySpace, Outcome, Record
from searchers.rungs import AsyncRungPlanner, RungPlanner, extend, promoted, units
from searchers.surrogate import GaussianProcess

optuna.logging.set_verbosity(optuna.logging.ERROR)

SPACE = {"rho": Lattice(0.25, 2.0, 16.0, zero=True), "mu": Lattice(0.06, 2.0, 16.0, zero=True)}
KEYSPACE = KeySpace(sizes=(7, 9), lows=(-1, -1), rungs=3)
BEST = (1, 5)
Score = Callable[[tuple[int, ...], int], float]


def peak(point: tuple[int, ...]) -> float:
    """A smooth score over exponent keys, highest at BEST."""
    return 1.0 - 0.04 * ((point[0] - BEST[0]) ** 2 + (point[1] - BEST[1]) ** 2)


def noisy(point: tuple[int, ...], rung: int) -> float:
    """peak plus a deterministic disturbance that shrinks with the samples behind it."""
    wobble = math.sin(7.3 * point[0] + 3.1 * point[1] + 1.7 * rung)
    return peak(point) + 0.06 * wobble / math.sqrt(units(rung))


def heavy(point: tuple[int, ...], rung: int) -> float:
    """peak plus Cauchy noise (deterministic per point and rung): heavy tails, extreme values."""
    u = random.Random(hash((point, rung)) % 2**32).random()
    return peak(point) + 0.02 * math.tan(math.pi * (u - 0.5)) / units(rung)


def unbounded(point: tuple[int, ...], rung: int) -> float:
    """An unbounded quadratic in the exponents (scores fall to -36 at the corners), noisy."""
    return -((point[0] - BEST[0]) ** 2) - (point[1] - BEST[1]) ** 2 + noisy(point, rung)


def replay(
    planner: RungPlanner, score: Score = noisy, fail: frozenset = frozenset()
) -> tuple[list[Record], list]:
    """Run a planner to its end, round by round; returns the records (each a point's estimate
    after its rung) and the plans."""
    records: list[Record] = []
    plans = []
    estimates: dict[tuple[int, ...], float] = {}
    while True:
        plan = planner.plan(records)
        plans.append(plan)
        if plan.exhausted:
            return records, plans
        for key in plan.pending:
            point, rung = key[:-1], key[-1]
            if point in fail:
                records.append(Record(len(records), key, Outcome.FAILED))
                continue
            done = sum(units(j) for j in range(rung))
            estimates[point] = extend(estimates.get(point, math.nan), done, score(point, rung), rung)
            records.append(Record(len(records), key, Outcome.COMPLETE, estimates[point]))


def check_guarantees(records: list[Record], top_key: tuple[int, ...], maximize: bool = True) -> None:
    """The answer is at the top rung, and no point the search saw has a better estimate."""
    sign = 1.0 if maximize else -1.0
    last: dict[tuple[int, ...], Record] = {}
    for r in records:
        if r.outcome is Outcome.COMPLETE and (r.key[:-1] not in last or r.key[-1] > last[r.key[:-1]].key[-1]):
            last[r.key[:-1]] = r
    answer = last[top_key[:-1]]
    assert answer.key == top_key and top_key[-1] == KEYSPACE.rungs - 1
    assert all(sign * answer.value >= sign * r.value for r in last.values())  # type: ignore[operator]


# ----------------------------------------------------------------------------- surrogate


def test_surrogate_interpolates_and_weighs_samples() -> None:
    keys = [(i,) for i in range(8)]
    truth = [math.sin(i / 2.0) for i in range(8)]
    gp = GaussianProcess.fit(keys, truth, [4] * 8, lows=(0,), highs=(7,))
    mean, _ = gp.predict(keys)
    assert int(np.argmax(mean)) == int(np.argmax(truth))
    assert np.corrcoef(mean, truth)[0, 1] > 0.9
    # two looks at one point: the one on more samples pulls the estimate towards it
    heavy_look = GaussianProcess.fit([(0,), (0,), (5,)], [1.0, 0.0, 0.5], [8, 1, 1], lows=(0,), highs=(5,))
    assert heavy_look.predict([(0,)])[0][0] > heavy_look.predict([(5,)])[0][0]
    # failures are modelled below the worst, not as NaN
    failed = GaussianProcess.fit([(0,), (1,), (2,)], [0.2, math.nan, 0.4], [1, 1, 1], lows=(0,), highs=(2,))
    assert np.isfinite(failed.predict([(1,)])[0]).all()
    assert failed.predict([(1,)])[0][0] < failed.predict([(0,)])[0][0]


def test_surrogate_sees_ranks_not_scales() -> None:
    """The model is the same for any increasing transform of the scores (a scale, an extreme or
    unbounded value): it is fitted to the normal scores of their ranks."""
    keys = [(0, 0), (2, 3), (4, 1), (6, 6), (1, 5)]
    scores = [0.1, 0.7, 0.4, 0.2, 0.65]
    base = GaussianProcess.fit(keys, scores, [1, 1, 2, 1, 1], lows=(0, 0), highs=(6, 6))
    for transform in (lambda v: 1e6 * v - 3.0, lambda v: math.exp(40 * v), lambda v: -1.0 / v):
        other = GaussianProcess.fit(
            keys, [transform(v) for v in scores], [1, 1, 2, 1, 1], lows=(0, 0), highs=(6, 6)
        )
        grid = [(i, j) for i in range(7) for j in range(7)]
        assert np.allclose(base.predict(grid)[0], other.predict(grid)[0])


def test_surrogate_fit_is_deterministic_and_believer_narrows() -> None:
    keys = [(0, 0), (2, 3), (4, 1), (6, 6)]
    a = GaussianProcess.fit(keys, [0.1, 0.7, 0.4, 0.2], [1, 1, 2, 1], lows=(0, 0), highs=(6, 6))
    b = GaussianProcess.fit(keys, [0.1, 0.7, 0.4, 0.2], [1, 1, 2, 1], lows=(0, 0), highs=(6, 6))
    assert list(a.length) == list(b.length) and a.noise == b.noise
    sd_before = a.predict([(3, 3)])[1][0]
    sd_after = a.with_believed([(3, 3)]).predict([(3, 3)])[1][0]
    assert sd_after < sd_before


# ----------------------------------------------------------------------------- the plan


def test_rounds_follow_spread_refine_promote_then_champions() -> None:
    schedule = RungSchedule(wave=8, spread=16, refine=2, promote=(8, 4))
    seeds = [(-1, 5), (3, -1)]
    records, plans = replay(RungPlanner(KEYSPACE, schedule, seeds=seeds))
    rounds = [p.candidates for p in plans[:-1]]
    assert [len(r) for r in rounds[:6]] == [8, 8, 8, 8, 8, 4]
    assert rounds[0][:2] == ((-1, 5, 0), (3, -1, 0))  # warm-start seeds first
    spread = [k[:-1] for r in rounds[:2] for k in r]
    assert len(set(spread)) == 16
    assert (
        {k[0] for k in spread} >= {-1, 5}
        and min(k[1] for k in spread) <= 0
        and max(k[1] for k in spread) >= 7
    )
    refined = [k[:-1] for r in rounds[2:4] for k in r]
    assert not set(refined) & set(spread)  # new points only
    rung1 = [k[:-1] for k in rounds[4]]
    rung2 = [k[:-1] for k in rounds[5]]
    assert all(k[-1] == 1 for k in rounds[4]) and all(k[-1] == 2 for k in rounds[5])
    assert set(rung2) <= set(rung1) <= set(spread) | set(refined)
    assert schedule.units(len(seeds)) == 16 + 16 + 8 + 8
    for champions in rounds[6:]:  # champion rounds: each point one rung up, never a new point
        assert champions and all(k[-1] >= 1 for k in champions)
    assert plans[-1].exhausted
    check_guarantees(records, plans[-1].ranking[0])
    top = plans[-1].ranking[0]
    assert abs(top[0] - BEST[0]) + abs(top[1] - BEST[1]) <= 1  # found the peak


@pytest.mark.parametrize("objective", [noisy, heavy, unbounded], ids=["noisy", "heavy-tailed", "unbounded"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_answer_is_never_beaten_by_a_point_the_search_saw(objective: Score, seed: int) -> None:
    """On any objective: the answer is a point of the top rung, and every point whose estimate
    beat the top rung's best was promoted until it reached the top rung or fell behind."""
    planner = RungPlanner(
        KEYSPACE, RungSchedule(wave=4, spread=8, refine=2, promote=(4, 2)), design_seed=seed
    )
    records, plans = replay(planner, objective)
    check_guarantees(records, plans[-1].ranking[0])


def test_an_affine_transform_of_the_objective_runs_the_same_search() -> None:
    schedule = RungSchedule(wave=4, spread=8, refine=2, promote=(4, 2))
    plain = replay(RungPlanner(KEYSPACE, schedule), noisy)[0]
    scaled = replay(RungPlanner(KEYSPACE, schedule), lambda p, r: 1e6 * noisy(p, r) - 5e5)[0]
    assert [r.key for r in plain] == [r.key for r in scaled]


def test_plan_is_a_function_of_the_records() -> None:
    schedule = RungSchedule(wave=6, spread=10, refine=2, promote=(6, 3))
    records, _ = replay(RungPlanner(KEYSPACE, schedule, design_seed=3))
    for cut in (0, 5, 12, 23, len(records)):
        fresh = RungPlanner(KEYSPACE, schedule, design_seed=3).plan(records[:cut])
        again = RungPlanner(KEYSPACE, schedule, design_seed=3).plan(list(reversed(records[:cut])))
        assert fresh == again  # order of the records does not matter
    other = replay(RungPlanner(KEYSPACE, schedule, design_seed=4))[0]
    assert [r.key for r in other][:10] != [r.key for r in records][:10]  # the seed picks the design


def test_running_and_failed_candidates() -> None:
    schedule = RungSchedule(wave=4, spread=4, refine=1, promote=(2, 1))
    planner = RungPlanner(KEYSPACE, schedule)
    first = planner.plan([])
    held = [Record(0, first.candidates[0], Outcome.RUNNING)]
    plan = planner.plan(held)
    assert plan.round == 0 and plan.running == first.candidates[:1] and plan.pending == first.candidates[1:]
    bad = first.candidates[0][:-1]
    records, plans = replay(RungPlanner(KEYSPACE, schedule), fail=frozenset({bad}))
    promoted_points = [r.key[:-1] for r in records if r.key[-1] > 0]
    assert bad not in promoted_points  # a failed point is never promoted
    assert plans[-1].ranking[-1][:-1] == bad  # and ranks last


def test_minimize_ranks_low_scores_first() -> None:
    schedule = RungSchedule(wave=8, spread=16, refine=1, promote=(4, 2))
    planner = RungPlanner(KEYSPACE, schedule, maximize=False)
    records, plans = replay(planner, score=lambda p, r: -noisy(p, r))
    top = plans[-1].ranking[0]
    assert abs(top[0] - BEST[0]) + abs(top[1] - BEST[1]) <= 1
    check_guarantees(records, top, maximize=False)


def test_the_asynchronous_plan_and_promotion() -> None:
    schedule = RungSchedule(wave=4, spread=8, refine=2, promote=(4, 2))
    planner = AsyncRungPlanner(KEYSPACE, schedule, seeds=[(0, 0)])
    plan = planner.plan([])
    assert plan.round == 0 and plan.candidates == ((0, 0, 0),) and not plan.exhausted
    records = [Record(0, (0, 0, 0), Outcome.RUNNING)]
    assert planner.plan(records).round == 1  # the next trial takes the next point
    # ASHA's rule (the best 1/eta of the rung so far; eta = 16 / 4 here), or beating the top rung
    assert schedule.reduction(0) == 4.0
    assert promoted(schedule, 0, 0.9, [0.9], best_top=-math.inf)  # the first is the best so far
    assert not promoted(schedule, 0, 0.5, [0.9, 0.5, 0.4], best_top=1.0)
    assert promoted(schedule, 0, 0.5, [0.9, 0.5, 0.4], best_top=0.45)  # beats the answer so far
    assert promoted(schedule, 0, 0.8, [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2], best_top=1.0)  # top 2 of 8
    assert not promoted(schedule, 2, 5.0, [5.0], best_top=-math.inf)  # the top rung is the last


def test_schedule_validation() -> None:
    with pytest.raises(ValueError, match="wave"):
        RungSchedule(wave=0)
    with pytest.raises(ValueError, match="promote"):
        RungSchedule(promote=(4, 0))
    with pytest.raises(ValueError, match="rungs"):
        RungPlanner(KeySpace(sizes=(3,), rungs=2), RungSchedule(promote=(2, 1)))
    with pytest.raises(ValueError, match="TFGRungSampler"):
        TFGBeamSampler(space=SPACE, rungs=RungSchedule())


# ----------------------------------------------------------------------------- the sampler: Optuna's contract


def quadratic(rho: float, mu: float, gamma: float = 0.0) -> float:
    """The docs' objective: unbounded below (-2.35 and worse far from rho 2, mu 1)."""
    return -((rho - 2.0) ** 2) - (mu - 1.0) ** 2 - gamma


def doc_objective(
    sampler: TFGRungSampler, space: dict, noise: float = 0.0, calls: list | None = None, scale: float = 1.0
):
    """The objective of docs/searchers.md: each rung on its fresh samples, with the rung's seed."""

    def objective(trial: optuna.Trial) -> float:
        values = {n: trial.suggest_float(n, lat.low, lat.cap) for n, lat in space.items()}

        def evaluate(n_units: int, rung: int) -> float:
            if calls is not None:
                calls.append((trial.number, rung))
            jitter = random.Random(hash((trial.number, rung)) % 2**32).gauss(0.0, 1.0)
            return scale * (quadratic(**values) + noise * jitter / math.sqrt(n_units))

        return sampler.rungs(trial, evaluate)

    return objective


def check_study(study: optuna.Study, sampler: TFGRungSampler) -> None:
    """best_trial is the search's answer: a point of the top rung, ahead of every estimate seen."""
    top_steps = sum(units(j) for j in range(sampler.schedule.top + 1))
    assert study.best_trial.number == sampler.plan(study).ranking[0]
    assert max(study.best_trial.intermediate_values) == top_steps
    for t in study.trials:
        if not t.intermediate_values:  # a surplus trial of parallel use: no point, no evaluation
            assert t.state == TrialState.PRUNED and sampler.trial_key(t) is None
            continue
        if t.state == TrialState.COMPLETE:
            assert max(t.intermediate_values) == top_steps and t.value == t.intermediate_values[top_steps]
        else:
            assert (
                t.state == TrialState.PRUNED and t.value == t.intermediate_values[max(t.intermediate_values)]
            )
        assert study.best_value >= t.value  # type: ignore[operator]


def test_the_documented_objective_gives_best_trial_as_the_answer() -> None:
    """The docs' quadratic, RungSchedule(wave=4), seed 0: tfg-search 0.2 answered -2.35 after
    seeing -0.66; the answer is now the best point seen, at the top rung."""
    sampler = TFGRungSampler(space=dict(DEFAULT_SPACE), schedule=RungSchedule(wave=4), seed=0)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(doc_objective(sampler, dict(DEFAULT_SPACE)))
    check_study(study, sampler)
    seen = max(v for t in study.trials for v in t.intermediate_values.values())
    assert study.best_value == seen > -0.66 and sampler.is_exhausted(study)
    assert len(study.trials) == RungSchedule(wave=4).points()


@pytest.mark.parametrize("scale", [1.0, 1e6])
def test_a_noisy_objective_at_any_scale_keeps_the_contract(scale: float) -> None:
    space = dict(DEFAULT_SPACE)
    sampler = TFGRungSampler(space=space, schedule=RungSchedule(wave=4), seed=1)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(doc_objective(sampler, space, noise=1.5, scale=scale))
    check_study(study, sampler)


def test_sync_mode_driven_by_ask_and_tell_keeps_the_contract() -> None:
    sampler = TFGRungSampler(space=SPACE, schedule=RungSchedule(wave=4), seed=2, synchronous=True)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    while not sampler.is_exhausted(study):
        wave = []
        while (trial := sampler.ask(study)) is not None:
            wave.append(trial)
        assert wave and len(wave) <= 4
        for trial in wave:
            point = (
                SPACE["rho"].nearest(trial.suggest_float("rho", 0.0, 16.0)),
                SPACE["mu"].nearest(trial.suggest_float("mu", 0.0, 16.0)),
            )
            rung = sampler.trial_rung(trial)
            assert sampler.trial_units(trial) == units(rung)
            sampler.tell(study, trial, unbounded(point, rung))
    check_study(study, sampler)
    assert {t.state for t in study.trials} == {TrialState.COMPLETE, TrialState.PRUNED}
    with pytest.raises(RuntimeError, match="synchronous"):
        sampler.rungs(study.ask(), lambda n, r: 0.0)


def test_sampler_restarts_from_storage(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    space = dict(DEFAULT_SPACE)
    whole = TFGRungSampler(space=space, schedule=RungSchedule(wave=4), seed=1)
    study = optuna.create_study(direction="maximize", sampler=whole)
    calls: list = []
    study.optimize(doc_objective(whole, space, noise=0.5, calls=calls))
    # the same search, stopped after 9 trials and continued by a new process (a new sampler)
    first = TFGRungSampler(space=space, schedule=RungSchedule(wave=4), seed=1)
    stored = optuna.create_study(direction="maximize", sampler=first, storage=url, study_name="s")
    part: list = []
    stored.optimize(doc_objective(first, space, noise=0.5, calls=part), n_trials=9)
    second = TFGRungSampler(space=space, schedule=RungSchedule(wave=4), seed=1)
    resumed = optuna.load_study(study_name="s", storage=url, sampler=second)
    resumed.optimize(doc_objective(second, space, noise=0.5, calls=part))
    assert part == calls
    assert [second.trial_key(t) for t in resumed.trials] == [whole.trial_key(t) for t in study.trials]
    assert [t.state for t in resumed.trials] == [t.state for t in study.trials]
    assert pickle.loads(pickle.dumps(second)).plan(resumed) == second.plan(resumed)


def test_threads_take_each_point_once() -> None:
    space = dict(DEFAULT_SPACE)
    sampler = TFGRungSampler(space=space, schedule=RungSchedule(wave=4), poll_interval=0.01)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(doc_objective(sampler, space, noise=0.5), n_jobs=4)
    points = [sampler.trial_key(t) for t in study.trials if sampler.trial_key(t) is not None]
    assert len(points) == len(set(points)) == RungSchedule(wave=4).points()
    check_study(study, sampler)

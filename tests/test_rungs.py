"""The rung search (searchers/rungs.py, searchers/surrogate.py) and TFGRungSampler:
its plan, its determinism from storage, its sample units, parallel use, and the service."""

from __future__ import annotations

import math
import pickle

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from searchers import Lattice, TFGBeamSampler, TFGRungSampler
from searchers.planner import KeySpace, Outcome, Record
from searchers.rungs import RungPlanner, RungSchedule, units
from searchers.surrogate import GaussianProcess

optuna.logging.set_verbosity(optuna.logging.ERROR)

SPACE = {"rho": Lattice(0.25, 2.0, 16.0, zero=True), "mu": Lattice(0.06, 2.0, 16.0, zero=True)}
KEYSPACE = KeySpace(sizes=(7, 9), lows=(-1, -1), rungs=3)
BEST = (1, 5)


def peak(point: tuple[int, ...]) -> float:
    """A smooth score over exponent keys, highest at BEST."""
    return 1.0 - 0.04 * ((point[0] - BEST[0]) ** 2 + (point[1] - BEST[1]) ** 2)


def noisy(point: tuple[int, ...], rung: int) -> float:
    """peak plus a deterministic disturbance that shrinks with the samples behind it."""
    wobble = math.sin(7.3 * point[0] + 3.1 * point[1] + 1.7 * rung)
    return peak(point) + 0.06 * wobble / math.sqrt(units(rung))


def replay(planner: RungPlanner, score=noisy, fail: set = frozenset()) -> tuple[list[Record], list]:
    """Run a planner to its end, round by round; returns the records and the plans."""
    records: list[Record] = []
    plans = []
    while True:
        plan = planner.plan(records)
        plans.append(plan)
        if plan.exhausted:
            return records, plans
        for key in plan.pending:
            point, rung = key[:-1], key[-1]
            if point in fail:
                records.append(Record(len(records), key, Outcome.FAILED))
            else:
                records.append(Record(len(records), key, Outcome.COMPLETE, score(point, rung)))


# ----------------------------------------------------------------------------- surrogate


def test_surrogate_interpolates_and_weighs_samples() -> None:
    keys = [(i,) for i in range(8)]
    truth = [math.sin(i / 2.0) for i in range(8)]
    gp = GaussianProcess.fit(keys, truth, [4] * 8, lows=(0,), highs=(7,))
    mean, _ = gp.predict(keys)
    assert np.max(np.abs(mean - np.array(truth))) < 0.1
    assert int(np.argmax(mean)) == int(np.argmax(truth))
    # two looks at one point: the one on more samples pulls the estimate towards it
    heavy = GaussianProcess.fit([(0,), (0,), (5,)], [1.0, 0.0, 0.5], [8, 1, 1], lows=(0,), highs=(5,))
    assert heavy.predict([(0,)])[0][0] > 0.6
    # failures are modelled as the worst, not as NaN
    failed = GaussianProcess.fit([(0,), (1,), (2,)], [0.2, math.nan, 0.4], [1, 1, 1], lows=(0,), highs=(2,))
    assert np.isfinite(failed.predict([(1,)])[0]).all() and failed.predict([(1,)])[0][0] < 0.2


def test_surrogate_fit_is_deterministic_and_believer_narrows() -> None:
    keys = [(0, 0), (2, 3), (4, 1), (6, 6)]
    a = GaussianProcess.fit(keys, [0.1, 0.7, 0.4, 0.2], [1, 1, 2, 1], lows=(0, 0), highs=(6, 6))
    b = GaussianProcess.fit(keys, [0.1, 0.7, 0.4, 0.2], [1, 1, 2, 1], lows=(0, 0), highs=(6, 6))
    assert list(a.length) == list(b.length) and a.noise == b.noise
    sd_before = a.predict([(3, 3)])[1][0]
    sd_after = a.with_believed([(3, 3)]).predict([(3, 3)])[1][0]
    assert sd_after < sd_before


# ----------------------------------------------------------------------------- the plan


def test_rounds_follow_spread_refine_promote() -> None:
    schedule = RungSchedule(wave=8, spread=16, refine=2, promote=(8, 4))
    seeds = [(-1, 5), (3, -1)]
    records, plans = replay(RungPlanner(KEYSPACE, schedule, seeds=seeds))
    rounds = [p.candidates for p in plans[:-1]]
    assert len(rounds) == schedule.rounds == 6
    assert [len(r) for r in rounds] == [8, 8, 8, 8, 8, 4]
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
    assert len(records) == 44 and schedule.units(len(seeds)) == 16 + 16 + 8 + 8
    assert plans[-1].exhausted
    top = plans[-1].ranking[0]
    assert top[-1] == 2 and abs(top[0] - BEST[0]) + abs(top[1] - BEST[1]) <= 1  # found the peak


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
    planner = RungPlanner(KEYSPACE, RungSchedule(wave=4, spread=4, refine=1, promote=(2, 1)))
    first = planner.plan([])
    held = [Record(0, first.candidates[0], Outcome.RUNNING)]
    plan = planner.plan(held)
    assert plan.round == 0 and plan.running == first.candidates[:1] and plan.pending == first.candidates[1:]
    bad = first.candidates[0][:-1]
    records, plans = replay(
        RungPlanner(KEYSPACE, RungSchedule(wave=4, spread=4, refine=1, promote=(2, 1))), fail={bad}
    )
    promoted = [r.key[:-1] for r in records if r.key[-1] > 0]
    assert bad not in promoted  # a failed point is never promoted
    assert plans[-1].ranking[-1][:-1] == bad  # and ranks last


def test_minimize_ranks_low_scores_first() -> None:
    schedule = RungSchedule(wave=8, spread=16, refine=1, promote=(4, 2))
    planner = RungPlanner(KEYSPACE, schedule, maximize=False)
    _, plans = replay(planner, score=lambda p, r: -noisy(p, r))
    top = plans[-1].ranking[0]
    assert abs(top[0] - BEST[0]) + abs(top[1] - BEST[1]) <= 1


def test_schedule_validation() -> None:
    with pytest.raises(ValueError, match="wave"):
        RungSchedule(wave=0)
    with pytest.raises(ValueError, match="promote"):
        RungSchedule(promote=(4, 0))
    with pytest.raises(ValueError, match="rungs"):
        RungPlanner(KeySpace(sizes=(3,), rungs=2), RungSchedule(promote=(2, 1)))
    with pytest.raises(ValueError, match="TFGRungSampler"):
        TFGBeamSampler(space=SPACE, rungs=RungSchedule())


# ----------------------------------------------------------------------------- the sampler


def objective_for(sampler: TFGRungSampler, calls: list | None = None):
    def objective(trial: optuna.Trial) -> float:
        rho = trial.suggest_float("rho", 0.0, 16.0)
        mu = trial.suggest_float("mu", 0.0, 16.0)
        point = (SPACE["rho"].nearest(rho), SPACE["mu"].nearest(mu))
        rung = sampler.trial_rung(trial)
        assert sampler.trial_units(trial) == units(rung)
        if calls is not None:
            calls.append((*point, rung))
        return noisy(point, rung)

    return objective


def test_sampler_runs_the_plan_in_optimize_and_restarts_from_storage(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    whole = TFGRungSampler(space=SPACE, seed=1)
    study = optuna.create_study(direction="maximize", sampler=whole)
    calls: list = []
    study.optimize(objective_for(whole, calls))  # stops by itself when the plan is exhausted
    assert len(calls) == len(set(calls)) == 16 + 16 + 4 + 2  # spread, refine, rung 1, rung 2
    assert whole.is_exhausted(study)
    # the same search, stopped after 19 trials and continued by a new process (a new sampler)
    first = TFGRungSampler(space=SPACE, seed=1)
    stored = optuna.create_study(direction="maximize", sampler=first, storage=url, study_name="s")
    part: list = []
    stored.optimize(objective_for(first, part), n_trials=19)
    second = TFGRungSampler(space=SPACE, seed=1)
    resumed = optuna.load_study(study_name="s", storage=url, sampler=second)
    resumed.optimize(objective_for(second, part))
    assert part == calls
    assert [second.trial_key(t) for t in resumed.trials] == [whole.trial_key(t) for t in study.trials]
    assert pickle.loads(pickle.dumps(second)).plan(resumed) == second.plan(resumed)


def test_threads_evaluate_each_point_and_rung_once() -> None:
    sampler = TFGRungSampler(space=SPACE, poll_interval=0.01)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    calls: list = []
    study.optimize(objective_for(sampler, calls), n_jobs=4)
    evaluated = [t for t in study.trials if t.state == TrialState.COMPLETE]
    keys = [sampler.trial_key(t) for t in evaluated]
    assert len(keys) == len(set(keys)) == len(calls) == 38
    reference = TFGRungSampler(space=SPACE)
    sequential = optuna.create_study(direction="maximize", sampler=reference)
    sequential.optimize(objective_for(reference))
    assert sorted(keys) == sorted(reference.trial_key(t) for t in sequential.trials)

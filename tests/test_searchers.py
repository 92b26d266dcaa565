"""TFGBeamSampler and Lattice: values, sequential equivalence with the reference, restarts."""

from __future__ import annotations

import math
import pickle

import optuna
import pytest
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from searchers import DEFAULT_SPACE, SCHEDULES, BeamPlan, Lattice, TFGBeamSampler, parse_space
from tests.helpers.beam_reference import (
    DEFAULT,
    canonical,
    failing,
    objective_for,
    plateau,
    reference_search,
    rugged,
    same_configs,
    spread,
    unimodal,
    with_schedules,
)

optuna.logging.set_verbosity(optuna.logging.ERROR)

NAMES = ["rho", "mu", "gamma"]


def evaluated(study: optuna.Study) -> list[dict]:
    """Params of the trials that evaluated a configuration (not surplus), in trial order."""
    return [t.params for t in study.trials if "TFGBeamSampler:surplus" not in t.system_attrs]


def run(sampler: TFGBeamSampler, score, names=NAMES, direction="maximize", **kwargs):
    study = optuna.create_study(direction=direction, sampler=sampler, **kwargs)
    study.optimize(objective_for(score, names, bool(sampler.schedule_params)), catch=(ZeroDivisionError,))
    return study


# ----------------------------------------------------------------------------- Lattice


def test_lattice_values_and_caps() -> None:
    assert Lattice(0.25, 2.0, 8.0).values() == (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
    # The cap is on the lattice up to float rounding (0.001 * 10**3 == 1.0000000000000002).
    assert Lattice(0.001, 10.0, 1.0).values() == (0.001, 0.01, 0.1, 1.0)
    assert Lattice(0.25, 2.0, 7.0).values() == (0.25, 0.5, 1.0, 2.0, 4.0)  # cap off the lattice
    assert Lattice(3, 2, 3).values() == (3.0,)
    assert Lattice(0.25, 2, 8).size == 6
    with pytest.raises(IndexError):
        Lattice(0.25, 2, 8).value(6)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((0.0, 2.0, 8.0), "init must be > 0"),
        ((-1.0, 2.0, 8.0), "init must be > 0"),
        ((0.25, 1.0, 8.0), "factor must be > 1"),
        ((0.25, 2.0, 0.1), "cap must be >= init"),
        ((0.25, 2.0, math.inf), "finite"),
        ((1.0, 1.000001, 2.0), "more than"),
    ],
)
def test_lattice_validation(args: tuple, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Lattice(*args)


def test_lattice_parse() -> None:
    assert Lattice.parse("0.25:2:8") == Lattice(0.25, 2.0, 8.0)
    assert Lattice.parse(" 1e-3 : 10 : 1 ") == Lattice(0.001, 10.0, 1.0)
    assert str(Lattice(0.001, 10, 1)) == "0.001:10:1"
    odd = Lattice(0.1 + 0.2, 1.5, 7.0)
    assert Lattice.parse(str(odd)) == odd
    with pytest.raises(ValueError, match=r"expected INIT:FACTOR:CAP"):
        Lattice.parse("0.25:2")
    with pytest.raises(ValueError, match=r"FACTOR 'two' is not a number"):
        Lattice.parse("0.25:two:8")
    with pytest.raises(ValueError, match=r"Bad lattice '8:2:1'.*cap must be >= init"):
        Lattice.parse("8:2:1")


def test_parse_space() -> None:
    assert parse_space("rho=0.25:2:8,mu=0.25:2:8,gamma=0.001:10:1") == dict(DEFAULT_SPACE)
    assert parse_space("strength=0.25:2:8") == {"strength": Lattice(0.25, 2, 8)}
    with pytest.raises(ValueError, match=r"entry 'rho:0.25:2:8'.*NAME=INIT:FACTOR:CAP"):
        parse_space("rho:0.25:2:8")
    with pytest.raises(ValueError, match=r"entry 'mu=0.25:x:8'.*FACTOR 'x'"):
        parse_space("rho=0.25:2:8,mu=0.25:x:8")
    with pytest.raises(ValueError, match="appears twice"):
        parse_space("rho=0.25:2:8,rho=1:2:4")
    with pytest.raises(ValueError, match="Empty"):
        parse_space(" ")


def test_constructor_validation() -> None:
    with pytest.raises(ValueError, match="top_k"):
        TFGBeamSampler(top_k=0)
    with pytest.raises(ValueError, match="max_rounds"):
        TFGBeamSampler(max_rounds=0)
    with pytest.raises(TypeError, match="Lattice"):
        TFGBeamSampler(space={"rho": (0.25, 2, 8)})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="empty"):
        TFGBeamSampler(space={})
    with pytest.raises(ValueError, match="not one of"):
        TFGBeamSampler(search_schedules=True, start_schedules={"rho": "up"})


# ----------------------------------------------------------------------------- sequential


@pytest.mark.parametrize("score", [unimodal, plateau, spread, failing, rugged])
@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_sequential_equals_reference(score, direction: str) -> None:
    study = run(TFGBeamSampler(), score, direction=direction)
    expected = reference_search(DEFAULT, 2, 6, score, direction)
    # Exactly the reference's evaluations, in its order, and not one trial more.
    assert same_configs([t.params for t in study.trials], expected)
    assert all(t.state in (TrialState.COMPLETE, TrialState.FAIL) for t in study.trials)
    assert len(study.trials) <= 4 + 5 * 2 * 3


def test_worst_case_count() -> None:
    study = run(TFGBeamSampler(), rugged)
    assert len(study.trials) == 33  # the most the default space allows (34 is a loose bound)


@pytest.mark.parametrize("score", [unimodal, plateau, failing])
@pytest.mark.parametrize(("top_k", "max_rounds"), [(1, 6), (3, 4), (2, 20)])
def test_other_beam_settings(score, top_k: int, max_rounds: int) -> None:
    study = run(TFGBeamSampler(top_k=top_k, max_rounds=max_rounds), score)
    expected = reference_search(DEFAULT, top_k, max_rounds, score)
    assert same_configs([t.params for t in study.trials], expected)


@pytest.mark.parametrize("score", [unimodal, plateau, failing])
def test_one_parameter_space(score) -> None:
    space = {"strength": Lattice(0.25, 2.0, 8.0)}

    def one(p: dict) -> float:
        return score({"rho": p["strength"]})

    study = run(TFGBeamSampler(space=space), one, names=["strength"])
    expected = reference_search({"strength": (0.25, 2.0, 8.0)}, 2, 6, one)
    assert same_configs([t.params for t in study.trials], expected)
    assert len(study.trials) >= 2


def test_failed_trials_rank_last_and_are_not_rerun() -> None:
    study = run(TFGBeamSampler(), failing)
    states = [t.state for t in study.trials]
    assert TrialState.FAIL in states
    keys = [TFGBeamSampler().trial_key(t) for t in study.trials]
    assert len(keys) == len(set(keys))
    best = study.best_trial
    assert best.state == TrialState.COMPLETE and math.isfinite(best.value)


def test_search_schedules_explores_structures() -> None:
    study = run(TFGBeamSampler(search_schedules=True), with_schedules)
    expected = reference_search(DEFAULT, 2, 6, with_schedules, schedules=True)
    assert same_configs([t.params for t in study.trials], expected)
    first = study.trials[0].params
    assert (first["rho_schedule"], first["mu_schedule"], first["gamma_schedule"]) == (
        "increase",
        "increase",
        "decrease",
    )
    switched = {t.params["gamma_schedule"] for t in study.trials}
    assert switched == set(SCHEDULES)
    assert any(t.params["rho_schedule"] == "constant" for t in study.trials)
    assert study.best_value > study.trials[0].value


def test_schedule_search_off_does_not_touch_structures() -> None:
    sampler = TFGBeamSampler()
    study = run(sampler, unimodal)
    assert all(len(sampler.trial_key(t)) == 3 for t in study.trials)


# ----------------------------------------------------------------------------- API


def test_plan_and_trial_inspection() -> None:
    sampler = TFGBeamSampler()
    study = optuna.create_study(direction="maximize", sampler=sampler)
    plan = sampler.plan(study)
    assert plan == BeamPlan(
        round=0,
        candidates=[
            {"rho": 0.25, "mu": 0.25, "gamma": 0.001},
            {"rho": 0.5, "mu": 0.25, "gamma": 0.001},
            {"rho": 0.25, "mu": 0.5, "gamma": 0.001},
            {"rho": 0.25, "mu": 0.25, "gamma": 0.01},
        ],
        pending=4,
        running=0,
        exhausted=False,
        ranking=[],
        beam=[],
    )
    trial = study.ask()
    assert (sampler.plan(study).pending, sampler.plan(study).running) == (3, 1)
    assert sampler.trial_key(trial) == (0, 0, 0)
    assert sampler.trial_round(trial) == 0
    objective = objective_for(unimodal, NAMES)
    study.tell(trial, objective(trial))
    for _ in range(3):
        trial = study.ask()
        study.tell(trial, objective(trial))
    plan = sampler.plan(study)
    assert plan.round == 1 and plan.pending == len(plan.candidates) > 0
    values = {t.number: t.value for t in study.trials}
    assert plan.beam == sorted(values, key=lambda n: -values[n])[:2]
    trial = study.ask()
    assert sampler.trial_round(study.trials[-1]) == 1 == sampler.trial_round(trial)


def test_ask_and_tell_loop_until_exhausted() -> None:
    sampler = TFGBeamSampler()
    study = optuna.create_study(direction="maximize", sampler=sampler)
    objective = objective_for(spread, NAMES)
    while not sampler.is_exhausted(study):
        trial = study.ask()
        study.tell(trial, objective(trial))  # no RuntimeError from study.stop() here
    assert same_configs([t.params for t in study.trials], reference_search(DEFAULT, 2, 6, spread))
    plan = sampler.plan(study)
    assert plan.exhausted and (plan.pending, plan.running) == (0, 0)
    assert plan.beam[0] == study.best_trial.number


def test_optimize_on_exhausted_study_evaluates_nothing() -> None:
    sampler = TFGBeamSampler()
    study = run(sampler, unimodal)
    n = len(study.trials)
    calls = []

    def objective(trial: optuna.Trial) -> float:
        calls.append(trial.number)
        return objective_for(unimodal, NAMES)(trial)

    study.optimize(objective)
    assert calls == [n]  # called, but the first suggest raised TrialPruned
    surplus = study.trials[-1]
    assert surplus.state == TrialState.PRUNED
    assert surplus.system_attrs["TFGBeamSampler:surplus"] == "exhausted"
    assert len(study.trials) == n + 1


def test_sample_independent_checks_distribution() -> None:
    study = optuna.create_study(sampler=TFGBeamSampler())
    trial = study.ask()
    with pytest.raises(ValueError, match="widen the bounds"):
        trial.suggest_float("rho", 0.5, 8.0, log=True)
    with pytest.raises(ValueError, match="does not contain"):
        trial.suggest_int("mu", 1, 8)  # 0.25 is not an int
    with pytest.raises(ValueError, match="not among the choices"):
        trial.suggest_categorical("gamma", [0.1, 1.0])
    space = {"n": Lattice(1, 2, 8)}
    assert optuna.create_study(sampler=TFGBeamSampler(space=space)).ask().suggest_int("n", 1, 8) == 1
    study = optuna.create_study(sampler=TFGBeamSampler(space=space))
    assert study.ask().suggest_categorical("n", [1.0, 2.0]) == 1.0
    assert study.ask().suggest_categorical("n", [1.0, 2.0]) == 2.0


def test_unrelated_params_fall_back_to_random() -> None:
    sampler = TFGBeamSampler(seed=1)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    objective = objective_for(unimodal, NAMES)

    def with_extra(trial: optuna.Trial) -> float:
        trial.suggest_float("x", 0.0, 1.0)
        return objective(trial)

    study.optimize(with_extra)
    xs = [t.params["x"] for t in study.trials]
    assert len(set(xs)) == len(xs) and all(0.0 <= x <= 1.0 for x in xs)
    beam = [{k: v for k, v in t.params.items() if k != "x"} for t in study.trials]
    assert same_configs(beam, reference_search(DEFAULT, 2, 6, unimodal))


def test_multi_objective_is_refused() -> None:
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=TFGBeamSampler())
    with pytest.raises(ValueError, match="single objective"):
        study.ask()


def test_enqueued_trials_are_not_part_of_the_beam() -> None:
    sampler = TFGBeamSampler()
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.enqueue_trial({"rho": 4.0, "mu": 2.0, "gamma": 0.01})  # the optimum, ranked nowhere
    study.optimize(objective_for(plateau, NAMES))
    enqueued, *beam = study.trials
    assert sampler.trial_key(enqueued) is None and sampler.trial_round(enqueued) is None
    assert same_configs([t.params for t in beam], reference_search(DEFAULT, 2, 6, plateau))


def test_pickle_round_trip() -> None:
    sampler = pickle.loads(pickle.dumps(TFGBeamSampler()))
    study = run(sampler, unimodal)
    assert same_configs(evaluated(study), reference_search(DEFAULT, 2, 6, unimodal))


# ----------------------------------------------------------------------------- restarts


@pytest.mark.parametrize(
    ("stop_after", "kind"),
    [(1, "memory"), (4, "memory"), (20, "memory"), pytest.param(9, "sqlite", marks=pytest.mark.slow)],
)
def test_restart_with_new_sampler_continues(tmp_path, stop_after: int, kind: str) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}" if kind == "sqlite" else optuna.storages.InMemoryStorage()
    objective = objective_for(spread, NAMES)
    study = optuna.create_study(direction="maximize", sampler=TFGBeamSampler(), storage=url, study_name="r")

    def stop(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if trial.number + 1 >= stop_after:
            study.stop()

    study.optimize(objective, callbacks=[stop])
    assert len(study.trials) == stop_after
    resumed = optuna.load_study(study_name="r", storage=url, sampler=TFGBeamSampler())
    resumed.optimize(objective)
    assert same_configs(evaluated(resumed), reference_search(DEFAULT, 2, 6, spread))
    assert all(t.state == TrialState.COMPLETE for t in resumed.trials)


@pytest.mark.parametrize("stop_after", [3, 9])
def test_a_study_written_with_three_claim_attributes_is_continued(stop_after: int) -> None:
    """Versions before the one claim attribute wrote key, round and space as three attributes."""
    objective = objective_for(spread, NAMES)
    first = optuna.create_study(direction="maximize", sampler=TFGBeamSampler())
    first.optimize(objective, n_trials=stop_after)
    study = optuna.create_study(direction="maximize", sampler=TFGBeamSampler())
    for t in first.trials:  # the same trials, their claims as the earlier versions stored them
        claim = t.system_attrs["TFGBeamSampler:claim"]
        old = {f"TFGBeamSampler:{field}": claim[field] for field in ("key", "round", "space")}
        study.add_trial(
            optuna.trial.create_trial(
                params=t.params, distributions=t.distributions, value=t.value, system_attrs=old
            )
        )
    assert TFGBeamSampler().plan(study) == TFGBeamSampler().plan(first)
    study.optimize(objective)
    assert same_configs(evaluated(study), reference_search(DEFAULT, 2, 6, spread))
    assert all("TFGBeamSampler:key" not in t.system_attrs for t in study.trials[stop_after:])


@pytest.mark.slow
def test_requeue_of_a_trial_left_running(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'q.db'}"
    objective = objective_for(unimodal, NAMES)
    study = optuna.create_study(direction="maximize", sampler=TFGBeamSampler(), storage=url, study_name="q")
    study.optimize(objective, n_trials=5)  # round 0 and the first of round 1
    lost = study.ask()  # a process claims a configuration, then dies
    lost_key = TFGBeamSampler().trial_key(lost)
    lost.suggest_float("rho", 0.25, 8.0, log=True)

    # Without a requeue the round cannot finish: a sampler with a barrier timeout gives up.
    waiting = TFGBeamSampler(poll_interval=0.01, barrier_timeout=0.2)
    blocked = optuna.load_study(study_name="q", storage=url, sampler=waiting)
    blocked.optimize(objective)
    surplus = blocked.trials[-1]
    assert surplus.state == TrialState.PRUNED
    assert surplus.system_attrs["TFGBeamSampler:surplus"] == "barrier-timeout"

    TFGBeamSampler.requeue(blocked, lost.number)
    assert blocked.trials[lost.number].state == TrialState.FAIL
    resumed = optuna.load_study(study_name="q", storage=url, sampler=TFGBeamSampler())
    resumed.optimize(objective)

    sampler = TFGBeamSampler()
    done = [t for t in resumed.trials if t.state == TrialState.COMPLETE]
    assert [sampler.trial_key(t) for t in done].count(lost_key) == 1
    # The lost configuration ran late, so compare sets (the order within a round cannot matter).
    assert canonical([t.params for t in done]) == canonical(reference_search(DEFAULT, 2, 6, unimodal))
    with pytest.raises(ValueError, match="only RUNNING or FAIL"):
        TFGBeamSampler.requeue(resumed, done[0].number)
    with pytest.raises(ValueError, match="PRUNED; only RUNNING or FAIL"):
        TFGBeamSampler.requeue(resumed, surplus.number)


def test_requeue_of_a_failed_trial() -> None:
    sampler = TFGBeamSampler()
    study = optuna.create_study(direction="maximize", sampler=sampler)
    objective = objective_for(unimodal, NAMES)
    trial = study.ask()
    study.tell(trial, state=TrialState.FAIL)
    assert sampler.plan(study).pending == 3
    TFGBeamSampler.requeue(study, trial.number)
    assert sampler.plan(study).pending == 4
    study.optimize(objective)
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert same_configs([t.params for t in done], reference_search(DEFAULT, 2, 6, unimodal))


def test_requeue_of_a_trial_outside_the_beam_only_fails_it() -> None:
    sampler = TFGBeamSampler()
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.enqueue_trial({"rho": 1.0, "mu": 1.0, "gamma": 0.1})
    trial = study.ask()
    TFGBeamSampler.requeue(study, trial.number)
    assert study.trials[trial.number].state == TrialState.FAIL
    assert sampler.plan(study).pending == 4


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_retry_of_a_stale_beam_trial_takes_its_place() -> None:
    sampler = TFGBeamSampler()
    study = optuna.create_study(direction="maximize", sampler=sampler)
    objective = objective_for(unimodal, NAMES)
    study.optimize(objective, n_trials=2)
    trial = study.ask()
    trial.suggest_float("rho", 0.25, 8.0, log=True)
    study.tell(trial, state=TrialState.FAIL)  # as heartbeat-based stale detection would
    RetryHeartbeatStaleTrialCallback()(study, study.trials[trial.number])
    study.optimize(objective)
    retry = study.trials[trial.number + 1]
    assert retry.system_attrs["failed_trial"] == trial.number
    assert sampler.trial_key(retry) == sampler.trial_key(trial)
    assert retry.state == TrialState.COMPLETE
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert same_configs([t.params for t in done], reference_search(DEFAULT, 2, 6, unimodal))


def test_dispatch_whole_rounds_by_plan() -> None:
    # The launcher's pattern: ask plan.pending trials, evaluate them together, tell them all.
    sampler = TFGBeamSampler(barrier_timeout=5.0)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    objective = objective_for(plateau, NAMES)
    rounds = []
    while not sampler.is_exhausted(study):
        plan = sampler.plan(study)
        assert plan.running == 0 and plan.pending == len(plan.candidates)
        trials = [study.ask() for _ in range(plan.pending)]
        assert [sampler.trial_round(t) for t in trials] == [plan.round] * plan.pending
        assert sampler.plan(study).pending == 0
        values = [objective(t) for t in trials]
        assert same_configs([t.params for t in trials], plan.candidates)
        for trial, value in zip(trials, values, strict=True):
            study.tell(trial, value)
        rounds.append(plan.round)
    assert rounds == list(range(len(rounds)))
    assert same_configs([t.params for t in study.trials], reference_search(DEFAULT, 2, 6, plateau))


# ----------------------------------------------------------------------------- 0, warm start, refined


def test_a_lattice_may_include_zero() -> None:
    mu = Lattice.parse("0,0.02:2:0.64")
    assert mu.values() == (0.0, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64)
    assert mu.exponents() == (-1, 0, 1, 2, 3, 4, 5) and mu.value(-1) == 0.0 and mu.size == 6
    assert str(mu) == "0,0.02:2:0.64" and Lattice.parse(str(mu)) == mu
    assert (mu.low, mu.high) == (0.0, 0.64) and mu.nearest(0.0) == -1 and mu.nearest(0.05) == 1
    assert Lattice.from_tuple(mu.as_tuple()) == mu and Lattice(0.25, 2, 8).nearest(0.0) == 0
    space = parse_space("rho=0.25:2:8,mu=0,0.25:2:8,gamma=0,0.001:10:1")
    assert [space[n].zero for n in ("rho", "mu", "gamma")] == [False, True, True]
    with pytest.raises(ValueError, match="only 0 may come before the comma"):
        Lattice.parse("1,0.25:2:8")
    with pytest.raises(IndexError):
        Lattice(0.25, 2, 8).value(-1)


def _zero_objective(params: dict) -> float:
    # Best at mu = 0 (off) and rho = 2: the reference lattices cannot reach it.
    return -((params["rho"] - 2.0) ** 2) - 4 * params["mu"] - params["gamma"]


def _zero_study(sampler: TFGBeamSampler) -> optuna.Study:
    def objective(trial: optuna.Trial) -> float:
        params = {
            n: trial.suggest_float(n, lat.low, lat.cap, log=not lat.zero) for n, lat in sampler.space.items()
        }
        return _zero_objective(params)

    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(objective)
    return study


ZERO_SPACE = {
    "rho": Lattice(0.25, 2, 8),
    "mu": Lattice(0.25, 2, 8, zero=True),
    "gamma": Lattice(0.001, 10, 1, zero=True),
}


def test_the_step_down_to_zero_reaches_the_methods_that_switch_a_mechanism_off() -> None:
    sampler = TFGBeamSampler(space=ZERO_SPACE)
    study = _zero_study(sampler)
    round0 = [t.params for t in study.trials if sampler.trial_round(t) == 0]
    # start, then per parameter: one up, and (where 0 is a value) down to 0
    assert round0 == [
        {"rho": 0.25, "mu": 0.25, "gamma": 0.001},
        {"rho": 0.5, "mu": 0.25, "gamma": 0.001},
        {"rho": 0.25, "mu": 0.5, "gamma": 0.001},
        {"rho": 0.25, "mu": 0.0, "gamma": 0.001},
        {"rho": 0.25, "mu": 0.25, "gamma": 0.01},
        {"rho": 0.25, "mu": 0.25, "gamma": 0.0},
    ]
    assert study.best_params == {"rho": 2.0, "mu": 0.0, "gamma": 0.0}
    reference = _zero_study(
        TFGBeamSampler(space={n: Lattice(v.init, v.factor, v.cap) for n, v in ZERO_SPACE.items()})
    )
    assert reference.best_params["mu"] == 0.25 and reference.best_value < study.best_value


def test_seed_configs_join_round_zero_on_the_nearest_lattice_points() -> None:
    seeds = [{"rho": 3.0, "mu": 0.0, "gamma": 0.0}, {"rho": 100.0, "mu": 0.3}]
    sampler = TFGBeamSampler(space=ZERO_SPACE, seed_configs=seeds)
    study = _zero_study(sampler)
    round0 = [t.params for t in study.trials if sampler.trial_round(t) == 0]
    assert round0[-2:] == [{"rho": 4.0, "mu": 0.0, "gamma": 0.0}, {"rho": 8.0, "mu": 0.25, "gamma": 0.0}]
    # a warm start is another search: its trials are not mixed with the plain one's
    warm = TFGBeamSampler(space=ZERO_SPACE, seed_configs=seeds)
    assert warm._fingerprint != TFGBeamSampler(space=ZERO_SPACE)._fingerprint
    with pytest.raises(ValueError, match="must be a number"):
        TFGBeamSampler(space=ZERO_SPACE, seed_configs=[{"rho": "a lot"}])


def test_refined_mode_also_steps_down() -> None:
    from searchers.planner import KeySpace

    assert KeySpace(sizes=(6,), lows=(-1,)).neighbours((3,)) == [(4,)]
    assert KeySpace(sizes=(6,), lows=(-1,)).neighbours((0,)) == [(1,), (-1,)]
    assert KeySpace(sizes=(6,), lows=(-1,), steps_down=True).neighbours((3,)) == [(4,), (2,)]
    space = {"rho": Lattice(0.25, 2, 8)}

    def run(steps_down: bool) -> optuna.Study:
        sampler = TFGBeamSampler(
            space=space, seed_configs=[{"rho": 8.0}], max_rounds=2, steps_down=steps_down
        )
        study = optuna.create_study(direction="maximize", sampler=sampler)
        study.optimize(lambda t: -((t.suggest_float("rho", 0.25, 8, log=True) - 5.5) ** 2))
        return study

    plain, refined = run(False), run(True)
    assert 4.0 not in {t.params["rho"] for t in plain.trials}  # from the seed the paper's beam only goes up
    assert refined.best_params == {"rho": 4.0}  # one step down from the seed
    assert not TFGBeamSampler().steps_down


def test_the_0_2_spellings_warn_and_build_the_same_searches() -> None:
    from searchers import RungSchedule, TFGRungSampler

    schedule = RungSchedule(wave=4)
    with pytest.warns(FutureWarning, match=r'mode="rungs"\) is deprecated; use TFGRungSampler'):
        rungs = TFGBeamSampler(mode="rungs", rungs=schedule, seed=3)
    assert isinstance(rungs, TFGRungSampler)
    assert rungs._fingerprint == TFGRungSampler(schedule=schedule, seed=3)._fingerprint
    with pytest.warns(FutureWarning, match="steps_down=True"):
        refined = TFGBeamSampler(mode="refined")
    assert refined.steps_down and refined._fingerprint == TFGBeamSampler(steps_down=True)._fingerprint
    with pytest.warns(FutureWarning, match="the paper's beam"):
        assert TFGBeamSampler(mode="reference")._fingerprint == TFGBeamSampler()._fingerprint
    with pytest.raises(ValueError, match="mode must be"):
        TFGBeamSampler(mode="clever")
    with pytest.raises(TypeError):
        TFGBeamSampler(DEFAULT_SPACE)  # type: ignore[misc]  # keyword arguments only

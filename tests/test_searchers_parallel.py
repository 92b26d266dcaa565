"""TFGBeamSampler in parallel: threads (n_jobs) and several processes on one SQLite study."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from searchers import TFGBeamSampler
from tests.helpers.beam_reference import (
    DEFAULT,
    canonical,
    failing,
    objective_for,
    plateau,
    reference_search,
    spread,
)

optuna.logging.set_verbosity(optuna.logging.ERROR)

NAMES = ["rho", "mu", "gamma"]
REPO = Path(__file__).resolve().parents[1]


def check_parallel_result(study: optuna.Study, score, calls: list[dict]) -> None:
    """Same configurations as sequential use, each evaluated once; surplus trials unevaluated."""
    expected = canonical(reference_search(DEFAULT, 2, 6, score))
    sampler = TFGBeamSampler()
    beam = [t for t in study.trials if sampler.trial_key(t) is not None]
    keys = [sampler.trial_key(t) for t in beam]
    assert len(keys) == len(set(keys)), "a configuration was handed out twice"
    assert canonical([t.params for t in beam]) == expected
    assert canonical(calls) == expected  # the objective ran once per configuration
    for t in study.trials:
        if sampler.trial_key(t) is None:
            assert t.state == TrialState.PRUNED
            assert t.system_attrs["TFGBeamSampler:surplus"] == "exhausted"
            assert t.params == {}
    assert sampler.is_exhausted(study)


def counting(score, delay: float):
    calls: list[dict] = []
    lock = threading.Lock()
    inner = objective_for(score, NAMES)

    def objective(trial: optuna.Trial) -> float:
        value_or_error = None
        try:
            value_or_error = inner(trial)
        finally:
            if trial.params:  # a surplus trial stops at its first suggest, with no params
                with lock:
                    calls.append(dict(trial.params))
        time.sleep(delay)
        return value_or_error

    return objective, calls


@pytest.mark.parametrize(
    ("kind", "score"),
    [
        ("memory", spread),
        ("memory", plateau),
        ("memory", failing),
        pytest.param("sqlite", plateau, marks=pytest.mark.slow),
    ],
)
def test_threads_hand_out_each_configuration_once(tmp_path, score, kind: str) -> None:
    storage = f"sqlite:///{tmp_path / 't.db'}" if kind == "sqlite" else None
    sampler = TFGBeamSampler(poll_interval=0.01)
    study = optuna.create_study(direction="maximize", sampler=sampler, storage=storage)
    objective, calls = counting(score, delay=0.002)
    study.optimize(objective, n_jobs=4, catch=(ZeroDivisionError,))
    check_parallel_result(study, score, calls)


WORKER = """
import sys, time
import optuna
from searchers import TFGBeamSampler
from tests.helpers import beam_reference as reference

optuna.logging.set_verbosity(optuna.logging.ERROR)
url, name = sys.argv[1], sys.argv[2]
storage = optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})
study = optuna.load_study(study_name=name, storage=storage,
                          sampler=TFGBeamSampler(poll_interval=0.02))
inner = reference.objective_for(getattr(reference, sys.argv[3]), ["rho", "mu", "gamma"])

def objective(trial):
    value = inner(trial)
    time.sleep(0.01)
    return value

study.optimize(objective)
"""


@pytest.mark.slow
def test_processes_share_one_sqlite_study(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'mp.db'}"
    optuna.create_study(direction="maximize", storage=url, study_name="mp")
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, url, "mp", "plateau"],  # many ties
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for _ in range(3)
    ]
    for worker in workers:
        out, _ = worker.communicate(timeout=120)
        assert worker.returncode == 0, out.decode()
    study = optuna.load_study(study_name="mp", storage=url)
    beam_trials = [t for t in study.trials if "TFGBeamSampler:surplus" not in t.system_attrs]
    check_parallel_result(study, plateau, [t.params for t in beam_trials])
    assert all(t.state == TrialState.COMPLETE for t in beam_trials)


class RacingStorage(optuna.storages.InMemoryStorage):
    """Storage where another worker claims the same key right after our first claim."""

    def __init__(self) -> None:
        super().__init__()
        self.rival: int | None = None

    def set_trial_system_attr(self, trial_id: int, key: str, value) -> None:
        super().set_trial_system_attr(trial_id, key, value)
        if key == "TFGBeamSampler:claim" and value["key"] is not None and self.rival is None:
            study_id = self.get_all_studies()[0]._study_id
            self.rival = self.create_new_trial(study_id)
            for name, attr in self.get_trial_system_attrs(trial_id).items():
                super().set_trial_system_attr(self.rival, name, attr)


def test_a_contested_claim_is_yielded() -> None:
    storage = RacingStorage()
    sampler = TFGBeamSampler(poll_interval=0.01)
    study = optuna.create_study(direction="maximize", sampler=sampler, storage=storage)
    trial = study.ask()
    assert storage.rival is not None
    rival = storage.get_trial(storage.rival)
    # Both saw each other's claim; ours yielded and took the next pending configuration.
    assert sampler.trial_key(rival) == (0, 0, 0)
    assert sampler.trial_key(trial) == (1, 0, 0)
    plan = sampler.plan(study)
    assert (plan.pending, plan.running) == (2, 2)

"""The coordinator on real SQLite: study and trial records, final re-runs, resume, leases, failures."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tests.cli_util import cli_cmd, run_cli
from tfg_search import TFGConfig
from tfg_search.errors import TFGSearchError
from tfg_search.search import INTERRUPTED, run_search
from tfg_search.settings import SearchSettings
from tfg_search.storage import load_best, load_study

SMALL = dict(samples=16, final_samples=32, final_top=2, steps=10, rounds=3)


def _settings(**kw: object) -> SearchSettings:
    return SearchSettings(task="gmm2d", target="3", **{**SMALL, **kw})  # type: ignore[arg-type]


def _beam_params(study: optuna.Study) -> list[tuple[float, ...]]:
    return [
        tuple(sorted(t.params.items()))
        for t in study.get_trials(deepcopy=False)
        if t.user_attrs.get("role") == "beam" and t.state == TrialState.COMPLETE
    ]


def test_search_records_everything_and_reports_the_best_final(tmp_storage_url: str) -> None:
    events: list[str] = []
    report = run_search(_settings(), tmp_storage_url, on_event=lambda kind, data: events.append(kind))
    study = load_study(tmp_storage_url, report.study_name)
    info = study.user_attrs["tfg_search"]
    assert info["task"] == "gmm2d" and info["target"] == "3" and info["method"] == "tfg"
    assert info["settings"]["samples"] == 16 and info["settings"]["steps"] == 10
    assert set(info["versions"]) >= {"tfg_search", "optuna", "torch", "diffusers"}
    trials = study.get_trials()
    beam = [t for t in trials if t.user_attrs["role"] == "beam"]
    finals = [t for t in trials if t.user_attrs["role"] == "final"]
    assert len(finals) == 2 and len(beam) == report.n_beam >= 4
    for t in trials:
        assert t.state == TrialState.COMPLETE
        attrs = t.user_attrs
        assert set(attrs) >= {
            "metrics",
            "config",
            "samples",
            "seed",
            "wall_time_s",
            "device",
            "node",
            "round",
        }
        assert "validity" in attrs["metrics"] and 0 <= attrs["metrics"]["validity"] <= 1
        assert TFGConfig.from_dict(attrs["config"]).rho == pytest.approx(t.params["rho"])
    assert {t.user_attrs["samples"] for t in finals} == {32}
    assert {t.user_attrs["seed"] for t in beam} == {0} and {t.user_attrs["seed"] for t in finals} == {1}
    # The finals re-run the top-2 beam configurations, and the reported best is the best final.
    top2 = sorted(beam, key=lambda t: (-t.value, t.number))[:2]
    assert sorted(t.user_attrs["source_trial"] for t in finals) == sorted(t.number for t in top2)
    best_final = max(finals, key=lambda t: t.value)
    assert report.best_trial == best_final.number and report.best_role == "final"
    config, metrics = load_best(tmp_storage_url, report.study_name)
    assert config == TFGConfig.from_dict(best_final.user_attrs["config"])
    assert metrics == best_final.user_attrs["metrics"]
    assert events[0] == "study" and events[-1] == "done" and "final" in events


def test_rerun_resumes_without_repeating(tmp_storage_url: str) -> None:
    first = run_search(_settings(), tmp_storage_url)
    n = len(load_study(tmp_storage_url, first.study_name).trials)
    again = run_search(_settings(), tmp_storage_url)
    assert again.resumed and again.study_name == first.study_name
    assert len(load_study(tmp_storage_url, first.study_name).trials) == n
    assert again.best_trial == first.best_trial


def test_other_settings_are_refused_with_differences(tmp_storage_url: str) -> None:
    run_search(_settings(rounds=1, final_top=0), tmp_storage_url, study_name="mine")
    with pytest.raises(TFGSearchError, match=r"exists with other settings \(rounds: stored 1, requested 2"):
        run_search(_settings(rounds=2, final_top=0), tmp_storage_url, study_name="mine")


def test_failed_trials_are_stored_with_reason_and_search_goes_on(tmp_storage_url: str) -> None:
    # rho = 1e200 makes samples overflow: those trials FAIL with the reason; the others complete.
    from searchers import Lattice

    space = {"rho": Lattice(1e-3, 1e100, 1e200)}
    report = run_search(_settings(space=space, rounds=2, final_top=1), tmp_storage_url)
    study = load_study(tmp_storage_url, report.study_name)
    failed = [t for t in study.get_trials() if t.state == TrialState.FAIL]
    assert failed and all("non-finite" in t.user_attrs["error"] for t in failed)
    assert report.best_config.rho == pytest.approx(1e-3)


def test_baseline_method_searches_one_strength(tmp_storage_url: str) -> None:
    report = run_search(_settings(method="dps", rounds=2, final_top=1), tmp_storage_url)
    study = load_study(tmp_storage_url, report.study_name)
    assert all(set(t.params) == {"strength"} for t in study.trials)
    assert report.best_config.n_iter == 0 and report.best_config.mu == 0.0
    assert report.best_config.rho == study.trials[report.best_trial].params["strength"]


def _sqlite_trials(db: Path) -> list[tuple[int, str]]:
    if not db.exists():
        return []
    try:
        with sqlite3.connect(db, timeout=5) as conn:
            return conn.execute("select number, state from trials").fetchall()
    except sqlite3.OperationalError:
        return []


SLOW_ARGS = [
    "search", "--task", "gmm2d", "--target", "3", "--samples", "512", "--steps", "40", "--rounds", "3",
    "--final-samples", "64", "--final-top", "2", "--quiet", "--json",
]  # fmt: skip


def _start(db: Path, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        cli_cmd(*SLOW_ARGS, "--storage", f"sqlite:///{db}", "--out-dir", str(cwd / "out")),
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(predicate, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


@pytest.mark.slow
def test_kill_dash_nine_then_rerun_continues_and_matches_uninterrupted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "killed.db"
    proc = _start(db, tmp_path)
    try:
        _wait_for(
            lambda: (
                sum(s == "COMPLETE" for _, s in _sqlite_trials(db)) >= 2
                and any(s == "RUNNING" for _, s in _sqlite_trials(db))
            )
        )
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    url = f"sqlite:///{db}"
    name = optuna.get_all_study_summaries(url)[0].study_name
    before = {
        t.number: (t.params, t.value) for t in load_study(url, name).trials if t.state == TrialState.COMPLETE
    }
    running = [t.number for t in load_study(url, name).trials if t.state == TrialState.RUNNING]
    assert running, "the kill should leave a RUNNING trial"

    # Rerun the same command: it takes over the dead launcher's lease and continues.
    res = run_cli([*SLOW_ARGS, "--storage", url, "--out-dir", str(tmp_path / "out")], capsys)
    assert res.code == 0, res.err
    study = load_study(url, name)
    after = {t.number: t for t in study.trials}
    for number, (_, value) in before.items():  # nothing completed is lost or changed
        assert after[number].state == TrialState.COMPLETE and after[number].value == value
    for number in running:  # interrupted: marked failed, its configuration evaluated again
        assert after[number].state == TrialState.FAIL and after[number].user_attrs["error"] == INTERRUPTED
    beam = _beam_params(study)
    assert len(beam) == len(set(beam))  # no completed configuration repeated

    # The same search without interruption ends with the same answer.
    fresh = tmp_path / "fresh.db"
    res2 = run_cli(
        [*SLOW_ARGS, "--storage", f"sqlite:///{fresh}", "--out-dir", str(tmp_path / "out2")], capsys
    )
    assert res2.code == 0, res2.err
    clean = load_study(f"sqlite:///{fresh}", name)
    assert sorted(_beam_params(clean)) == sorted(beam)
    assert load_best(url, name) == load_best(f"sqlite:///{fresh}", name)


@pytest.mark.slow
def test_second_launcher_is_refused_while_the_first_lives(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "held.db"
    proc = _start(db, tmp_path)
    try:
        _wait_for(lambda: any(s == "COMPLETE" for _, s in _sqlite_trials(db)))
        res = run_cli([*SLOW_ARGS, "--storage", f"sqlite:///{db}"], capsys)
        assert res.code == 2
        lines = res.err.strip().splitlines()
        assert (
            len(lines) == 1
            and f"is being run by process {proc.pid} on " in lines[0]
            and " since " in lines[0]
        )
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert os.path.exists(db)

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

from tests.helpers.cli import cli_cmd, run_cli
from tests.helpers.search import SMALL
from tfg_search.errors import TFGSearchError
from tfg_search.run.coordinator import run_search
from tfg_search.run.settings import SearchSettings
from tfg_search.store.layout import METRIC_PREFIX, TRIAL_ATTR
from tfg_search.store.query import load_best
from tfg_search.store.studies import load_search


def _settings(**kw: object) -> SearchSettings:
    return SearchSettings(task="gmm2d", target="3", **{**SMALL, **kw})  # type: ignore[arg-type]


def _search_params(url: str, name: str) -> list[tuple]:
    return [
        tuple(sorted(r.params.items()))
        for r in load_search(url, name).records()
        if r.role == "search" and r.state == TrialState.COMPLETE
    ]


def test_search_records_everything_and_reports_the_best_final(tmp_storage_url: str) -> None:
    events: list[str] = []
    report = run_search(_settings(), tmp_storage_url, on_event=lambda kind, data: events.append(kind))
    studies = load_search(tmp_storage_url, report.study_name)
    info = studies.info
    assert info.task == "gmm2d" and info.target == "3" and info.method == "tfg"
    assert info.settings["samples"] == 16 and info.settings["steps"] == 10
    assert info.layout == 3
    assert set(info.versions) >= {"tfg_search", "optuna", "torch", "diffusers"}
    # The main study holds the answer (final re-runs only); the search trials live in its search study.
    assert studies.search.study_name == report.study_name + ":search"
    assert {t.user_attrs[TRIAL_ATTR]["role"] for t in studies.main.trials} == {"final"}
    assert {t.user_attrs[TRIAL_ATTR]["role"] for t in studies.search.trials} == {"search"}
    records = studies.records()
    searched = [r for r in records if r.role == "search"]
    finals = [r for r in records if r.role == "final"]
    assert len(finals) == 2 and len(searched) == report.n_search >= 4
    for study in (studies.main, studies.search):
        for t in study.trials:  # one record attr per trial, holding every field (and one number per metric)
            assert [k for k in t.user_attrs if not k.startswith(METRIC_PREFIX)] == [TRIAL_ATTR]
    for r in records:
        assert r.state == TrialState.COMPLETE
        assert (
            r.device == "cpu" and r.node and r.wall_time_s > 0 and r.round is not None
        ) or r.role == "final"
        assert "validity" in r.metrics and 0 <= r.metrics["validity"] <= 1
        assert r.tfg_config().rho == pytest.approx(r.params["rho"])
    assert {r.samples for r in finals} == {32}
    assert {r.seed for r in searched} == {0} and {r.seed for r in finals} == {1}
    # The finals re-run the top-2 search configurations, and the reported best is the best final.
    top2 = sorted(searched, key=lambda r: (-r.value, r.number))[:2]
    assert sorted(r.source_trial for r in finals) == sorted(r.number for r in top2)
    best_final = max(finals, key=lambda r: (r.value, -r.number))
    assert report.best_trial == best_final.number and report.best_role == "final"
    config, metrics = load_best(tmp_storage_url, report.study_name)
    assert config == best_final.tfg_config() and metrics == best_final.metrics
    # Optuna's own answer is the same trial.
    assert studies.main.best_trial.number == best_final.number
    assert events[0] == "study" and events[-1] == "done" and "final" in events


def test_rerun_resumes_without_repeating(tmp_storage_url: str) -> None:
    first = run_search(_settings(), tmp_storage_url)
    n = len(load_search(tmp_storage_url, first.study_name).records())
    again = run_search(_settings(), tmp_storage_url)
    assert again.resumed and again.study_name == first.study_name
    assert len(load_search(tmp_storage_url, first.study_name).records()) == n
    assert again.best_trial == first.best_trial


def test_other_settings_are_refused_with_differences(tmp_storage_url: str) -> None:
    run_search(_settings(rounds=1, final_top=1), tmp_storage_url, study_name="mine")
    with pytest.raises(
        TFGSearchError, match=r"exists with other settings \(samples: stored 16, requested 32"
    ):
        run_search(_settings(rounds=1, final_top=1, samples=32), tmp_storage_url, study_name="mine")
    with pytest.raises(TFGSearchError, match=r"rounds: stored 3, requested 1 \(it can only grow\)"):
        run_search(_settings(rounds=3, final_top=1), tmp_storage_url, study_name="mine")
        run_search(_settings(rounds=1, final_top=1), tmp_storage_url, study_name="mine")


def test_more_rounds_extend_a_study_to_what_a_longer_search_finds(tmp_storage_url: str) -> None:
    short = run_search(_settings(rounds=2), tmp_storage_url)
    longer = run_search(_settings(rounds=3), tmp_storage_url)
    assert longer.study_name == short.study_name and longer.resumed
    fresh_url = tmp_storage_url.replace(".db", "-fresh.db")
    fresh = run_search(_settings(rounds=3), fresh_url)
    extended_configs, fresh_configs = (
        _search_params(tmp_storage_url, short.study_name),
        _search_params(fresh_url, fresh.study_name),
    )
    assert sorted(extended_configs) == sorted(fresh_configs)
    assert len(set(extended_configs)) == len(extended_configs)
    finals = [r for r in load_search(tmp_storage_url, short.study_name).records() if r.role == "final"]
    sources = [r.source_trial for r in finals]
    assert len(sources) == len(set(sources))  # no configuration re-run twice
    fresh_finals = [r for r in load_search(fresh_url, fresh.study_name).records() if r.role == "final"]
    assert {r.source_trial for r in fresh_finals} <= set(sources)  # the longer search's re-runs are there
    info = load_search(tmp_storage_url, short.study_name).info
    assert info.settings["rounds"] == 3 and info.extended[0]["rounds"] == [2, 3]


def test_the_best_warm_start_point_is_always_re_run_with_the_top(tmp_storage_url: str) -> None:
    # A far-off warm-start point scores low on the small samples: it is re-run anyway (the answer,
    # chosen on the final samples, can then never be below the best warm-start configuration).
    from tasks import get_task

    lattices = _settings().resolve(get_task("gmm2d")).lattices()
    far = {name: lattice.cap for name, lattice in lattices.items()}
    report = run_search(_settings(rounds=2, final_top=1, seed_configs=(far,)), tmp_storage_url)
    records = load_search(tmp_storage_url, report.study_name).records()
    searched = sorted((r for r in records if r.role == "search" and r.ok), key=lambda r: (-r.value, r.number))
    warm = next(r for r in searched if all(r.params[n] == v for n, v in far.items()))
    assert warm.number != searched[0].number  # ranked out by the search ...
    finals = [r for r in records if r.role == "final"]
    assert sorted(r.source_trial for r in finals) == sorted([searched[0].number, warm.number])  # ... re-run
    assert report.best_score == max(r.value for r in finals)
    # When the warm start is among the top, nothing extra is re-run.
    again = run_search(_settings(rounds=2, final_top=len(searched), seed_configs=(far,)), tmp_storage_url)
    finals = [r for r in load_search(tmp_storage_url, again.study_name).records() if r.role == "final"]
    assert sorted(r.source_trial for r in finals) == sorted(r.number for r in searched)


def test_failed_trials_are_stored_with_reason_and_search_goes_on(tmp_storage_url: str) -> None:
    # rho = 1e200 makes samples overflow: those trials FAIL with the reason; the others complete.
    from searchers import Lattice

    space = {"rho": Lattice(1e-3, 1e100, 1e200)}
    report = run_search(_settings(space=space, rounds=2, final_top=1), tmp_storage_url)
    failed = [
        r for r in load_search(tmp_storage_url, report.study_name).records() if r.state == TrialState.FAIL
    ]
    assert failed and all("non-finite" in r.error and r.failure == "trial" for r in failed)
    assert report.best_config.rho == pytest.approx(1e-3)
    assert report.counts.failed == len(failed) and report.counts.interrupted == 0


def test_baseline_method_searches_one_strength(tmp_storage_url: str) -> None:
    report = run_search(_settings(method="dps", rounds=2, final_top=1), tmp_storage_url)
    records = load_search(tmp_storage_url, report.study_name).records()
    assert all(set(r.params) == {"strength"} for r in records)
    assert report.best_config.n_iter == 0 and report.best_config.mu == 0.0
    best = next(r for r in records if r.role == "final" and r.number == report.best_trial)
    assert report.best_config.rho == best.params["strength"]


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
    "--search", "beam", "--final-samples", "64", "--final-top", "2", "--quiet", "--json",
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
    name = next(
        s.study_name for s in optuna.get_all_study_summaries(url) if not s.study_name.endswith(":search")
    )
    before = {(r.role, r.number): r.value for r in load_search(url, name).records() if r.ok}
    running = [(r.role, r.number) for r in load_search(url, name).records() if r.state == TrialState.RUNNING]
    assert running, "the kill should leave a RUNNING trial"

    # Rerun the same command: it takes over the dead launcher's lease and continues.
    res = run_cli([*SLOW_ARGS, "--storage", url, "--out-dir", str(tmp_path / "out")], capsys)
    assert res.code == 0, res.err
    after = {(r.role, r.number): r for r in load_search(url, name).records()}
    for key, value in before.items():  # nothing completed is lost or changed
        assert after[key].state == TrialState.COMPLETE and after[key].value == value
    for key in running:  # what ran when it was killed: re-run in place, in the same trial
        assert after[key].state == TrialState.COMPLETE and after[key].interruptions == 1
    assert not any(r.state in (TrialState.RUNNING, TrialState.WAITING) for r in after.values())
    searched = _search_params(url, name)
    assert len(searched) == len(set(searched))  # no completed configuration repeated

    # The same search without interruption ends with the same answer.
    fresh = tmp_path / "fresh.db"
    res2 = run_cli(
        [*SLOW_ARGS, "--storage", f"sqlite:///{fresh}", "--out-dir", str(tmp_path / "out2")], capsys
    )
    assert res2.code == 0, res2.err
    assert sorted(_search_params(f"sqlite:///{fresh}", name)) == sorted(searched)
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

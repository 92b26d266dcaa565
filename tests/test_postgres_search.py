"""Every launcher command on PostgreSQL (psycopg 3): searches, reads, concurrency, no password shown."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from tests.helpers.pg import PostgresServer
from tfg_search.store.layout import StudyInfo
from tfg_search.store.lease import read_lease

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

CLI = str(Path(sys.executable).parent / "tfg-search")
TINY = ["--samples", "16", "--final-samples", "16", "--final-top", "1", "--steps", "10"]


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def search_args(url: str, study: str, target: str, rounds: int, out: Path) -> list[str]:
    # Study "a" must outlive the start of a second launcher (seconds of imports): its trials are
    # made slow on purpose (many samples, one candidate per batch); the others stay tiny.
    slow = ["--samples", "4096", "--steps", "50", "--batch-size", "1"] if study == "a" else []
    return [
        "search", "--task", "gmm2d", "--target", target, *TINY, *slow, "--search", "beam",
        "--rounds", str(rounds), "--study", study, "--storage", url, "--json", "--quiet",
        "--out-dir", str(out),
    ]  # fmt: skip


def test_search_and_reads_on_postgres(
    fresh_postgres_url: str, postgres_server: PostgresServer, tmp_path: Path
) -> None:
    password = postgres_server.password
    run = cli(*search_args(fresh_postgres_url, "pg", "3", 1, tmp_path / "out"), cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:].replace(password, "<pw>")
    assert password not in run.stdout + run.stderr
    report = json.loads(run.stdout)
    assert report["study"] == "pg" and "***" in report["storage"]

    study = optuna.load_study(study_name="pg", storage=fresh_postgres_url)  # plain optuna reads it
    search = optuna.load_study(study_name="pg:search", storage=fresh_postgres_url)
    assert len(study.trials) == report["trials"]["final"] and len(search.trials) == report["trials"]["search"]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials + search.trials)
    assert study.best_trial.number == report["best"]["trial"]  # optuna's best is the service's

    best = cli("best", "--study", "pg", "--storage", fresh_postgres_url, "--json", cwd=tmp_path)
    assert best.returncode == 0, best.stderr[-2000:].replace(password, "<pw>")
    assert password not in best.stdout + best.stderr
    assert json.loads(best.stdout)["trial"] == report["best"]["trial"]

    wrong = fresh_postgres_url.replace(password, "not-the-password-42")
    refused = cli("studies", "--storage", wrong, cwd=tmp_path)
    assert refused.returncode == 2
    assert refused.stdout == ""
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert refused.stderr.startswith("error: ") and "password" in refused.stderr.lower()
    for secret in (password, "not-the-password-42"):
        assert secret not in refused.stdout + refused.stderr


def test_two_launchers_a_refused_one_and_a_dashboard(fresh_postgres_url: str, tmp_path: Path) -> None:
    from optuna_dashboard import wsgi
    from webtest import TestApp

    url = fresh_postgres_url
    # Create the schema first, as a deployment does once (two launchers racing to create Optuna's tables
    # on an empty database is outside what this test is about).
    optuna.storages.RDBStorage(url)
    env = {**os.environ}
    procs = {
        name: subprocess.Popen(
            [CLI, *search_args(url, name, target, rounds, tmp_path / name)],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, target, rounds in (("a", "1", 3), ("b", "5", 1))
    }
    try:
        storage = optuna.storages.RDBStorage(url)
        deadline = time.monotonic() + 120
        lease = None
        while lease is None and time.monotonic() < deadline:  # wait until launcher "a" holds its study
            if "a" in {s.study_name for s in storage.get_all_studies()}:
                lease = read_lease(optuna.load_study(study_name="a", storage=storage))
            if lease is None:
                time.sleep(0.1)
        assert lease is not None and procs["a"].poll() is None, "launcher a never took its lease"

        second = cli(*search_args(url, "a", "1", 3, tmp_path / "second"), cwd=tmp_path)
        assert second.returncode == 2, second.stderr[-2000:]
        message = second.stderr.strip()
        assert len(message.splitlines()) == 1
        assert f"process {procs['a'].pid}" in message and lease.host in message
        assert f"since {lease.since}" in message

        app = TestApp(wsgi(storage))  # optuna-dashboard reading the database while both searches run
        response = app.get("/api/studies")
        assert response.status_int == 200
        names = {s["study_name"] for s in response.json["study_summaries"]}
        assert "a" in names
        assert procs["a"].poll() is None or procs["b"].poll() is None, "searches ended before the reads"

        for name, proc in procs.items():
            out, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, f"launcher {name}: {err[-2000:]}"
            assert json.loads(out)["study"] == name
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for name, target in (("a", "1"), ("b", "5")):
        study = optuna.load_study(study_name=name, storage=url)
        info = StudyInfo.of(study)
        assert info is not None and info.target == target
        search = optuna.load_study(study_name=name + ":search", storage=url)
        assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials + search.trials)
        assert read_lease(study) is None  # released at the end

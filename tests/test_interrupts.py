"""Ctrl-C and SIGTERM during a real ``tfg-search search``: exit code 130, one line saying how many
evaluations it stopped and how to resume; those stay RUNNING, and the rerun of the same command
re-runs them in place and ends with the trials and the answer of a search that was never
interrupted (same seed, fresh database), counting the re-runs. (Stops at every phase of every
search: tests/test_exact_resume.py.)"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy
from optuna.trial import TrialState

from tests.helpers.cli import cli_cmd, run_proc
from tfg_search.store.studies import load_search

STUDY = "stopped"
# Long enough to be caught mid-search (one candidate at a time: the trials of a round are RUNNING
# while the first of them is evaluated), short enough for a test; batch size 1 also makes every
# evaluation the same whether or not the search was interrupted.
ARGS = [
    "search", "--task", "gmm2d", "--target", "3", "--samples", "64", "--steps", "10", "--rounds", "2",
    "--search", "beam", "--final-samples", "64", "--final-top", "2", "--batch-size", "1",
    "--study", STUDY, "--quiet", "--json",
]  # fmt: skip
MESSAGE = re.compile(
    r"interrupted: (\d+) evaluation\(s\) stopped, left to re-run in place; rerun the same command to resume"
)


def states(url: str) -> list[str]:
    """The state of every trial in the database (both studies), read with plain SQL."""
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        return []
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as conn:
            return [str(s) for (s,) in conn.execute(sqlalchemy.text("select state from trials"))]
    except sqlalchemy.exc.SQLAlchemyError:  # not created yet, or locked for a moment
        return []
    finally:
        engine.dispose()


def wait_for(predicate: Callable[[], bool], proc: subprocess.Popen[str], timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            raise AssertionError(f"the search ended (code {proc.returncode}) before it could be stopped")
        time.sleep(0.05)
    raise AssertionError("timed out waiting for a completed and a running trial")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The report of the same search, never interrupted, on a fresh database."""
    cwd = tmp_path_factory.mktemp("uninterrupted")
    res = run_proc([*ARGS, "--storage", f"sqlite:///{cwd}/fresh.db", "--out-dir", str(cwd / "out")], cwd)
    assert res.code == 0, res.err[-3000:]
    report = json.loads(res.out)
    assert report["trials"]["interrupted"] == 0
    return report


def stop_and_resume(url: str, sig: signal.Signals, cwd: Path, uninterrupted: dict) -> None:
    """Stop a search with ``sig`` once a trial completed and one runs; check the study; rerun."""
    cmd = cli_cmd(*ARGS, "--storage", url, "--out-dir", str(cwd / "out"))
    env = {**os.environ, "COLUMNS": "160"}
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # Python leaves SIGINT ignored when its parent ignored it (a background job): not here.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        wait_for(lambda: "COMPLETE" in (s := states(url)) and "RUNNING" in s, proc)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err[-3000:]
    assert out == ""
    lines = err.strip().splitlines()
    match = MESSAGE.fullmatch(lines[0]) if len(lines) == 1 else None
    assert match, err[-3000:]
    stopped = int(match.group(1))
    assert stopped >= 1

    records = load_search(url, STUDY).records()
    running = [r.number for r in records if r.state == TrialState.RUNNING]
    assert len(running) == stopped and not [r for r in records if r.state == TrialState.FAIL]
    assert any(r.ok for r in records)

    res = run_proc([*ARGS, "--storage", url, "--out-dir", str(cwd / "out")], cwd)  # the same command
    assert res.code == 0, res.err[-3000:]
    report = json.loads(res.out)
    assert report["trials"]["interrupted"] == stopped  # the resumed run counts its re-runs
    assert report["trials"]["failed"] == 0
    assert report["best"] == uninterrupted["best"]
    assert report["trials"] == {**uninterrupted["trials"], "interrupted": stopped}
    after = load_search(url, STUDY).records()
    assert not [r for r in after if r.state == TrialState.RUNNING]
    redone = {r.number: r for r in after if r.role == "search"}
    assert all(redone[n].ok and redone[n].interruptions == 1 for n in running)  # re-run in place


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_stopped_search_marks_its_trials_and_resumes_to_the_same_best(
    sig: signal.Signals, tmp_path: Path, uninterrupted: dict
) -> None:
    stop_and_resume(f"sqlite:///{tmp_path}/studies.db", sig, tmp_path, uninterrupted)


@pytest.mark.slow
def test_stopped_search_on_postgresql(fresh_postgres_url: str, tmp_path: Path, uninterrupted: dict) -> None:
    stop_and_resume(fresh_postgres_url, signal.SIGINT, tmp_path, uninterrupted)

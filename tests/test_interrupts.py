"""Ctrl-C and SIGTERM during a real ``tfg-search search``: exit code 130, one line saying how to
resume, no trial left RUNNING, and the rerun of the same command ends with the answer of a search
that was never interrupted (same seed, fresh database), counting the interrupted trials."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
import sqlalchemy
from optuna.trial import TrialState

from tests.helpers.cli import cli_cmd, run_proc
from tfg_search.run.coordinator import SearchInterrupted, run_search
from tfg_search.run.executors import LocalExecutor
from tfg_search.run.loop import SearchLoop
from tfg_search.run.settings import SearchSettings
from tfg_search.store.studies import load_search
from tfg_search.trial import TrialOutcome, TrialSpec

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
    r"interrupted: (\d+) running trial\(s\) marked interrupted; rerun the same command to resume"
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
    marked = int(match.group(1))
    assert marked >= 1

    records = load_search(url, STUDY).records()
    assert not [r for r in records if r.state == TrialState.RUNNING]  # neither study has one left
    interrupted = [r for r in records if r.state == TrialState.FAIL]
    assert len(interrupted) == marked and all(r.failure == "interrupted" for r in interrupted)
    assert any(r.ok for r in records)

    res = run_proc([*ARGS, "--storage", url, "--out-dir", str(cwd / "out")], cwd)  # the same command
    assert res.code == 0, res.err[-3000:]
    report = json.loads(res.out)
    assert report["trials"]["interrupted"] == marked  # the resumed run counts them
    assert report["trials"]["failed"] == 0
    assert report["best"]["config"] == uninterrupted["best"]["config"]
    assert report["best"]["score"] == uninterrupted["best"]["score"]
    assert report["best"]["role"] == "final"
    after = load_search(url, STUDY).records()
    assert not [r for r in after if r.state == TrialState.RUNNING]
    beam = [tuple(sorted(r.params.items())) for r in after if r.role == "search" and r.ok]
    assert len(beam) == len(set(beam)) == uninterrupted["trials"]["search"]  # each configuration once


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_stopped_search_marks_its_trials_and_resumes_to_the_same_best(
    sig: signal.Signals, tmp_path: Path, uninterrupted: dict
) -> None:
    stop_and_resume(f"sqlite:///{tmp_path}/studies.db", sig, tmp_path, uninterrupted)


@pytest.mark.slow
def test_stopped_search_on_postgresql(fresh_postgres_url: str, tmp_path: Path, uninterrupted: dict) -> None:
    stop_and_resume(fresh_postgres_url, signal.SIGINT, tmp_path, uninterrupted)


SMALL = SearchSettings(
    task="gmm2d", target="3", samples=8, final_samples=8, steps=4, rounds=2, final_top=2, search="beam"
)


class _StopsAfter(LocalExecutor):
    """The local executor, with Ctrl-C pressed after ``n`` outcomes of the second batch."""

    def __init__(self, n: int) -> None:
        super().__init__(batch_size=1)
        self.n, self.batches = n, 0

    def map(self, specs: Sequence[TrialSpec]) -> Iterator[TrialOutcome]:
        self.batches += 1
        for i, outcome in enumerate(super().map(specs)):
            if self.batches == 2 and i == self.n:
                raise KeyboardInterrupt
            yield outcome


@pytest.mark.parametrize("where", ["executor", "tell", "ask", "final"])
def test_an_interrupt_anywhere_leaves_no_trial_running(
    where: str, tmp_storage_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """KeyboardInterrupt inside the executor, while a result is told, between asking the trials of
    a round, or in the final re-runs: every trial left is FAIL "interrupted", and the rerun ends
    as a search that was never stopped."""
    executor: LocalExecutor = LocalExecutor(batch_size=1)
    calls = {"n": 0}
    if where == "executor":
        executor = _StopsAfter(1)
    elif where in ("tell", "ask", "final"):
        name = {"tell": "tell", "ask": "_ask_search", "final": "_ask_final"}[where]
        original = getattr(SearchLoop, name)

        def stopping(self: SearchLoop, *args: object) -> object:
            calls["n"] += 1
            if where == "tell" and calls["n"] == 6:
                raise KeyboardInterrupt  # the outcome arrived; the trial is still RUNNING
            result = original(self, *args)
            if (where == "ask" and calls["n"] == 6) or (where == "final" and calls["n"] == 2):
                raise KeyboardInterrupt  # the trial exists (RUNNING) but was never handed out
            return result

        monkeypatch.setattr(SearchLoop, name, stopping)
    with pytest.raises(SearchInterrupted) as stopped:
        run_search(SMALL, tmp_storage_url, "s", executor)
    records = load_search(tmp_storage_url, "s").records()
    assert not [r for r in records if r.state == TrialState.RUNNING]
    failed = [r for r in records if r.state == TrialState.FAIL]
    assert stopped.value.marked == len(failed) >= 1 and stopped.value.study == "s"
    assert all(r.failure == "interrupted" for r in failed)
    monkeypatch.undo()

    resumed = run_search(SMALL, tmp_storage_url, "s")
    fresh = run_search(SMALL, tmp_storage_url.replace(".db", "-fresh.db"), "s")
    assert resumed.counts.interrupted == len(failed) and fresh.counts.interrupted == 0
    assert (resumed.best_config, resumed.best_score) == (fresh.best_config, fresh.best_score)
    assert not [r for r in load_search(tmp_storage_url, "s").records() if r.state == TrialState.RUNNING]

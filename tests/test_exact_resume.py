"""A search stopped anywhere, then run again with the same command, ends with exactly the trials
and the answer of the same search never stopped (issue 26, item 5), for every search, with nothing
left WAITING or RUNNING. The stops are injected at the named phases of tfg_search/run/faults.py:
as Ctrl-C (a KeyboardInterrupt, in-process), and as ``kill -9`` (a subprocess, slow).

Evaluations run one candidate at a time (``--batch-size 1``): a candidate sampled in a batch of
others matches its sample alone to float rounding only (tests/test_batching.py), and a re-run
evaluation may be batched with other candidates than it first was.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from tests.helpers.cli import run_proc
from tfg_search.run import faults
from tfg_search.run.coordinator import SearchInterrupted, run_search
from tfg_search.run.executors import LocalExecutor
from tfg_search.run.settings import SearchSettings
from tfg_search.store.layout import TRIAL_ATTR
from tfg_search.store.studies import load_search

optuna.logging.set_verbosity(optuna.logging.WARNING)

BASE = dict(task="gmm2d", target="3", samples=8, final_samples=8, steps=4, final_top=2)
SEARCHES: dict[str, dict[str, Any]] = {
    "rungs": dict(wave=4),
    "beam": dict(search="beam", rounds=2),
    "gp": dict(search="gp", trials=12, wave=4),
    "tpe": dict(search="tpe", trials=12, wave=4),
    "random": dict(search="random", trials=12, wave=4),
}
STOPS = {
    "rungs": [("create", 1), ("ask", 20), ("tell", 27), ("finals", 1), ("final-tell", 1)],
    "beam": [("ask", 3), ("result", 6), ("final-ask", 2)],
    "gp": [("ask", 6), ("tell", 9), ("final-result", 1)],
    "tpe": [("result", 5), ("finals", 1), ("final-ask", 1)],
    "random": [("tell", 6), ("ask", 11), ("final-result", 2)],
}
"""Where each search is stopped (phase, the how-many-th time it is reached): every phase of
tfg_search/run/faults.py, each search at least three times, mid-wave, between the two studies,
between the search and its finals, and inside the finals."""


def settings(kind: str) -> SearchSettings:
    return SearchSettings(**BASE, **SEARCHES[kind])  # type: ignore[arg-type]


def trials(url: str, name: str) -> list[tuple]:
    """Every trial of both studies as it ends: number, state, parameters, value, reported
    estimates, and what its record says was evaluated (samples, seeds, metrics, per rung)."""
    studies = load_search(url, name)
    out = []
    for study in (studies.search, studies.main):
        for t in study.get_trials(deepcopy=False):
            body = dict(t.user_attrs.get(TRIAL_ATTR) or {})
            evaluated = [
                (e.get("rung"), e.get("samples"), e.get("seed"), e.get("metrics"))
                for e in body.get("evaluations") or [body]
            ]
            out.append(
                (
                    study.study_name,
                    t.number,
                    t.state,
                    tuple(sorted(t.params.items())),
                    t.value,
                    tuple(sorted(t.intermediate_values.items())),
                    body.get("source_trial"),
                    json.dumps(evaluated, sort_keys=True),
                )
            )
    return out


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[list[tuple], Any]]:
    """Each search, never stopped, on a fresh database."""
    out = {}
    for kind in SEARCHES:
        url = f"sqlite:///{tmp_path_factory.mktemp(kind)}/fresh.db"
        report = run_search(settings(kind), url, "s", LocalExecutor(batch_size=1))
        out[kind] = (trials(url, "s"), (report.best_trial, report.best_score, report.best_config))
    return out


def check_same(url: str, expected: tuple[list[tuple], Any]) -> None:
    got = trials(url, "s")
    assert not [t for t in got if t[2] in (TrialState.RUNNING, TrialState.WAITING)]
    assert got == expected[0]


@pytest.mark.parametrize(
    ("kind", "phase", "when"), [(k, p, n) for k, stops in STOPS.items() for p, n in stops]
)
def test_a_search_stopped_anywhere_resumes_to_the_same_trials_and_answer(
    kind: str,
    phase: str,
    when: int,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    uninterrupted: dict[str, tuple[list[tuple], Any]],
) -> None:
    url = f"sqlite:///{tmp_path}/stopped.db"
    faults.reset()
    monkeypatch.setenv(faults.ENV, f"{phase}:{when}")
    with pytest.raises(KeyboardInterrupt):  # SearchInterrupted, or the stop between the studies
        run_search(settings(kind), url, "s", LocalExecutor(batch_size=1))
    monkeypatch.delenv(faults.ENV)
    report = run_search(settings(kind), url, "s", LocalExecutor(batch_size=1))
    assert (report.best_trial, report.best_score, report.best_config) == uninterrupted[kind][1]
    check_same(url, uninterrupted[kind])


def test_ctrl_c_says_how_many_evaluations_it_stopped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path}/stopped.db"
    faults.reset()
    monkeypatch.setenv(faults.ENV, "result:3")  # the third outcome of the first wave of 4
    with pytest.raises(SearchInterrupted) as stopped:
        run_search(settings("random"), url, "s", LocalExecutor(batch_size=1))
    assert stopped.value.stopped == 4 - 2  # two told, two left RUNNING for the next run
    running = [r for r in load_search(url, "s").records() if r.state == TrialState.RUNNING]
    assert [r.number for r in running] == [2, 3]
    monkeypatch.delenv(faults.ENV)
    report = run_search(settings("random"), url, "s", LocalExecutor(batch_size=1))
    assert report.counts.interrupted == 2


# ----------------------------------------------------------------------------- kill -9, the CLI

ARGS = ["search", "--task", "gmm2d", "--target", "3", "--samples", "8", "--final-samples", "8",
        "--steps", "4", "--wave", "4", "--batch-size", "1", "--study", "s", "--quiet", "--json"]  # fmt: skip


def _cli(cwd: Path, db: str, fault: str | None) -> tuple[int, str]:
    env = {faults.ENV: fault} if fault else {}
    res = run_proc([*ARGS, "--storage", f"sqlite:///{cwd / db}", "--out-dir", str(cwd / "out")], cwd, env=env)
    return res.code, res.err


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["create:1:kill", "tell:22:kill", "final-ask:1:kill"])
def test_kill_dash_nine_anywhere_then_the_same_command(tmp_path: Path, fault: str) -> None:
    code, err = _cli(tmp_path, "fresh.db", None)
    assert code == 0, err[-2000:]
    code, err = _cli(tmp_path, "killed.db", fault)
    assert code == -9 or code == 137, err[-2000:]  # killed where asked
    code, err = _cli(tmp_path, "killed.db", None)  # the same command again
    assert code == 0, err[-2000:]
    fresh = trials(f"sqlite:///{tmp_path / 'fresh.db'}", "s")
    check_same(f"sqlite:///{tmp_path / 'killed.db'}", (fresh, None))


@pytest.mark.slow
@pytest.mark.ray
def test_a_search_on_ray_stopped_mid_wave_resumes_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tfg_search.run.executors.ray_pool import RayExecutor

    fresh, stopped = f"sqlite:///{tmp_path}/fresh.db", f"sqlite:///{tmp_path}/stopped.db"
    kind = settings("rungs")
    with RayExecutor(num_workers=2) as pool:
        run_search(kind, fresh, "s", pool)
        faults.reset()
        monkeypatch.setenv(faults.ENV, "result:10")
        with pytest.raises(SearchInterrupted):
            run_search(kind, stopped, "s", pool)
        monkeypatch.delenv(faults.ENV)
        run_search(kind, stopped, "s", pool)
    assert trials(stopped, "s") == trials(fresh, "s")
    assert not os.environ.get(faults.ENV)

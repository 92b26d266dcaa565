"""The launcher end to end on real SQLite files, optuna's own tools on the same file, and bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest

from tests.helpers.cli import run_cli, run_proc
from tfg_search.store.studies import load_search


def search_trial_count(cwd: Path, name: str) -> int:
    return sum(r.role == "search" for r in load_search(f"sqlite:///{cwd}/tfg-studies.db", name).records())


SEARCH = [
    "search",
    "--task",
    "gmm2d",
    "--target",
    "5",
    "--samples",
    "16",
    "--final-samples",
    "32",
    "--steps",
    "10",
    "--wave",
    "4",
]  # fmt: skip  (the default search: the rung search)


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, dict]:
    """One real search through the console entry point (a subprocess), shared by the tests below."""
    cwd = tmp_path_factory.mktemp("cli")
    res = run_proc([*SEARCH, "--json", "--quiet"], cwd)
    assert res.code == 0, res.err
    payload = json.loads(res.out)
    return cwd, payload["study"], payload


def test_search_writes_default_sqlite_file_plots_and_json(searched) -> None:
    cwd, name, payload = searched
    assert (cwd / "tfg-studies.db").exists()  # the default storage, in the current folder
    assert name.startswith("gmm2d-5-tfg-")
    assert Path(cwd / payload["files"]["search_plot"]).stat().st_size > 1000
    assert Path(cwd / payload["files"]["samples"]).stat().st_size > 1000
    assert payload["best"]["role"] == "final" and "validity" in payload["best"]["metrics"]
    assert payload["trials"]["final"] == 2


def test_studies_best_export_sample(searched, capsys, monkeypatch) -> None:
    cwd, name, payload = searched
    monkeypatch.chdir(cwd)
    res = run_cli(["studies", "--json"], capsys)
    assert res.code == 0
    rows = json.loads(res.out)
    assert [r["study"] for r in rows] == [name] and rows[0]["finished"] is True
    res = run_cli(["best", "--study", name, "--json"], capsys)
    best = json.loads(res.out)
    assert best["config"] == payload["best"]["config"] and best["role"] == "final"
    res = run_cli(["best", "--study", name], capsys)
    assert res.code == 0 and "score" in res.out and "rho=" in res.out
    res = run_cli(["export", "--study", name, "--out", "best.json"], capsys)
    assert res.code == 0
    exported = json.loads((cwd / "best.json").read_text())
    from tfg_search import TFGConfig

    assert TFGConfig.from_dict(exported["config"]).to_dict() == payload["best"]["config"]
    res = run_cli(["sample", "--study", name, "--n", "16", "--out", "grid.png"], capsys)
    assert res.code == 0 and (cwd / "grid.png").stat().st_size > 1000


def test_rerunning_the_command_resumes(searched, capsys, monkeypatch) -> None:
    cwd, name, _ = searched
    monkeypatch.chdir(cwd)
    n = len(load_search("sqlite:///tfg-studies.db", name).records())
    res = run_cli([*SEARCH, "--json", "--quiet"], capsys)
    assert res.code == 0 and json.loads(res.out)["study"] == name
    assert len(load_search("sqlite:///tfg-studies.db", name).records()) == n


def _optuna_best(cwd: Path, study: str) -> dict:
    optuna_cli = Path(sys.executable).with_name("optuna")
    out = subprocess.run(
        [str(optuna_cli), "best-trial", "--study-name", study, "--storage", "sqlite:///tfg-studies.db",
         "-f", "json"],
        cwd=cwd, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _ours(cwd: Path, name: str) -> Any:
    """The service's answer: the best final re-run (ties: the lower number)."""
    finals = [
        r
        for r in load_search(f"sqlite:///{cwd}/tfg-studies.db", name).records()
        if r.role == "final" and r.ok
    ]
    return max(finals, key=lambda r: (r.value, -r.number))


def test_optuna_cli_reads_the_same_file(searched) -> None:
    cwd, name, _ = searched
    # Optuna's answer on the main study is the service's answer: the best final re-run.
    best = _optuna_best(cwd, name)
    ours = _ours(cwd, name)
    assert best["state"] == "COMPLETE" and best["number"] == ours.number and best["value"] == ours.value
    # On the search study, Optuna's best trial is the top of the rung search's ranking (a point of
    # its top rung), not a lucky small-sample score: one of the points the finals re-ran.
    top = _optuna_best(cwd, name + ":search")
    records = load_search(f"sqlite:///{cwd}/tfg-studies.db", name).records()
    sources = {r.source_trial for r in records if r.role == "final"}
    assert top["state"] == "COMPLETE" and top["number"] in sources
    assert top["value"] >= max(r.value for r in records if r.role == "search" and r.value is not None)


def test_optuna_dashboard_serves_the_study(searched) -> None:
    import webtest
    from optuna_dashboard import wsgi

    cwd, name, _ = searched
    storage = optuna.storages.RDBStorage(f"sqlite:///{cwd}/tfg-studies.db")
    app = webtest.TestApp(wsgi(storage))
    studies = {s["study_name"]: s for s in app.get("/api/studies").json["study_summaries"]}
    assert set(studies) == {name, name + ":search"}  # the answer, and the search that found it
    detail = app.get(f"/api/studies/{studies[name]['study_id']}").json
    assert detail["name"] == name and len(detail["trials"]) == 2
    metrics = {f"metric:{m}" for m in ("validity", "sw", "fidelity")}  # numbers, beside the record
    assert {a["key"] for a in detail["trials"][0]["user_attrs"]} == {"tfg_search:trial", *metrics}
    ours = _ours(cwd, name)
    assert detail["best_trials"][0]["state"] == "Complete"
    assert detail["best_trials"][0]["number"] == ours.number  # the dashboard's best is ours too
    search = app.get(f"/api/studies/{studies[name + ':search']['study_id']}").json
    assert len(search["trials"]) == search_trial_count(cwd, name)
    assert app.get("/dashboard").status_int == 200


# Bad input (one error line, exit code 2, nothing written): tests/test_bad_inputs.py.


def test_live_best_and_samples_total_of_the_progress_display() -> None:
    """The live best is the search's leader that each trial event carries (the top of its own
    ranking, not the best raw score); the samples bar always has a total: the planned work, exact
    once the final re-runs start."""
    from tfg_search.cli.progress import SearchProgress as _Display

    settings = {"samples": 16, "final_samples": 32, "final_top": 2}
    display = _Display(rounds=2, quiet=True)
    total = lambda: display.progress.tasks[display.samples].total  # noqa: E731
    display("study", {"name": "s", "resumed": False, "recovered": 0, "completed": 0, "settings": settings})
    display("round", {"round": 0, "candidates": 4, "pending": 4})
    assert total() == 4 * 16 + 2 * 32

    def trial(number: int, value: float | None, leader: int | None, role: str = "search") -> None:
        samples = 16 if role == "search" else 32
        top = None if leader is None else {"number": leader, "value": 0.5, "params": {"rho": leader}}
        display(
            "trial",
            {"number": number, "role": role, "round": 0, "params": {"rho": number}, "value": value,
             "error": None if value is not None else "boom", "samples": samples, "wall_time_s": 0.1,
             "leader": top},
        )  # fmt: skip

    trial(2, None, None)
    assert display.best is None and display._best_info() == ""
    for number in (3, 1, 0):
        trial(number, 0.9 if number == 0 else 0.5, 1)  # trial 0 scored more, the ranking says 1
    assert display.best == (0.5, 1) and "trial 1: rho=1" in display._best_info()
    display("round", {"round": 1, "candidates": 2, "pending": 2})
    assert total() == 4 * 16 + 2 * 16 + 2 * 32  # grows as the round is planned
    trial(4, 0.5, 4)
    trial(5, 0.5, 4)
    assert display.best == (0.5, 4)
    display("final", {"count": 1, "samples": 32})
    assert total() == 6 * 16 + 32
    trial(0, 0.99, None, role="final")  # a final re-run is not a search trial: the live best stays
    assert display.best == (0.5, 4)
    display("done", {})
    assert display.progress.tasks[display.samples].completed == total() == 6 * 16 + 32


def test_missing_study_is_named_and_existing_out_file_is_kept(
    searched, tmp_path, capsys, monkeypatch
) -> None:
    cwd, name, _ = searched
    monkeypatch.chdir(cwd)
    res = run_cli(["best", "--study", "nope"], capsys)
    assert res.code == 2 and f"no study named 'nope' in this storage; studies: {name}" in res.err
    keep = tmp_path / "keep.json"
    keep.write_text("precious")
    res = run_cli(["export", "--study", name, "--out", str(keep)], capsys)
    assert res.code == 2 and "exists; pass --force" in res.err and keep.read_text() == "precious"
    res = run_cli(["sample", "--study", "nope", "--out", str(tmp_path / "g.png")], capsys)
    assert res.code == 2 and not (tmp_path / "g.png").exists()

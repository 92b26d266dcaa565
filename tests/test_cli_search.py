"""The launcher end to end on real SQLite files, optuna's own tools on the same file, and bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from tests.cli_util import run_cli, run_proc
from tfg_search.storage import load_search


def payload_beam(cwd: Path, name: str) -> int:
    return sum(r.role == "beam" for r in load_search(f"sqlite:///{cwd}/tfg-studies.db", name).records())


SEARCH = ["search", "--task", "gmm2d", "--target", "5", "--samples", "16", "--final-samples", "32",
          "--steps", "10", "--rounds", "2"]  # fmt: skip


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


def test_optuna_cli_reads_the_same_file(searched) -> None:
    cwd, name, _ = searched
    optuna_cli = Path(sys.executable).with_name("optuna")
    out = subprocess.run(
        [str(optuna_cli), "best-trial", "--study-name", name, "--storage", "sqlite:///tfg-studies.db",
         "-f", "json"],
        cwd=cwd, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    best = json.loads(out.stdout)
    # Optuna's answer on the main study is the service's answer: the best final re-run.
    ours = load_search(f"sqlite:///{cwd}/tfg-studies.db", name).best()
    assert best["state"] == "COMPLETE" and best["number"] == ours.number and best["value"] == ours.value


def test_optuna_dashboard_serves_the_study(searched) -> None:
    import webtest
    from optuna_dashboard import wsgi

    cwd, name, _ = searched
    storage = optuna.storages.RDBStorage(f"sqlite:///{cwd}/tfg-studies.db")
    app = webtest.TestApp(wsgi(storage))
    studies = {s["study_name"]: s for s in app.get("/api/studies").json["study_summaries"]}
    assert set(studies) == {name, name + ":search"}  # the answer, and the beam that found it
    detail = app.get(f"/api/studies/{studies[name]['study_id']}").json
    assert detail["name"] == name and len(detail["trials"]) == 2
    assert {a["key"] for a in detail["trials"][0]["user_attrs"]} == {"tfg_search:trial"}
    ours = load_search(f"sqlite:///{cwd}/tfg-studies.db", name).best()
    assert detail["best_trials"][0]["state"] == "Complete"
    assert detail["best_trials"][0]["number"] == ours.number  # the dashboard's best is ours too
    search = app.get(f"/api/studies/{studies[name + ':search']['study_id']}").json
    assert len(search["trials"]) == payload_beam(cwd, name)
    assert app.get("/dashboard").status_int == 200


BAD = [
    (["search", "--task", "nope", "--target", "3"], "unknown task 'nope'"),
    (["search", "--task", "gmm2d", "--target", "99"], "unknown target '99'"),
    (["search", "--task", "gmm2d", "--target", "3", "--method", "foo"], "unknown method 'foo'"),
    (["search", "--task", "gmm2d", "--target", "3", "--samples", "0"], "--samples must be an integer >= 1"),
    (["search", "--task", "gmm2d", "--target", "3", "--samples", "-5"], "--samples must be an integer >= 1"),
    (["search", "--task", "gmm2d", "--target", "3", "--samples", "abc"], "Invalid value for '--samples'"),
    (["search", "--task", "gmm2d", "--target", "3", "--rounds", "0"], "--rounds must be an integer >= 1"),
    (["search", "--task", "gmm2d", "--target", "3", "--top-k", "0"], "--top-k must be an integer >= 1"),
    (["search", "--task", "gmm2d", "--target", "3", "--final-top", "-1"],
     "--final-top must be an integer >= 1"),
    (["search", "--task", "gmm2d", "--target", "3", "--n-recur", "0"], "--n-recur must be an integer >= 1"),
    (["search", "--task", "gmm2d", "--target", "3", "--eta", "2"], "--eta must be a number in [0, 1]"),
    (["search", "--task", "gmm2d", "--target", "3", "--space", "rho=abc"], "bad --space"),
    (["search", "--task", "gmm2d", "--target", "3", "--method", "dps", "--space", "rho=0.1:2:1"],
     "--space for method 'dps' must name strength"),
    (["search", "--task", "gmm2d", "--target", "3", "--final-top", "0"],
     "--final-top must be an integer >= 1"),
    (["search", "--task", "gmm2d", "--target", "3", "--objective", "accuracy"],
     "objective metric(s) accuracy"),
    (["search", "--task", "gmm2d", "--target", "3", "--executor", "spark"], "unknown executor 'spark'"),
    (["search", "--task", "gmm2d", "--target", "3", "--batch-size", "0"],
     "--batch-size must be an integer >= 1"),
    (["search", "--task", "gmm2d", "--target", "3", "--method", "dps", "--search-schedules"],
     "--search-schedules applies to method 'tfg' only"),
    (["search", "--task", "gmm2d", "--target", "3", "--task-option", "novalue"], "must look like KEY=VALUE"),
    (["search", "--task", "gmm2d", "--target", "3", "--storage", "not a url"], "malformed storage URL"),
    (["search", "--task", "gmm2d", "--target", "3", "--storage", "sqlite:///no/such/dir/x.db"],
     "folder no/such/dir does not exist"),
    (["search", "--task", "gmm2d", "--target", "3", "--storage", "sqlite:///notes.txt"],
     "notes.txt is not an SQLite database"),
    (["search", "--task", "gmm2d", "--target", "3", "--storage",
      "postgresql+psycopg://tfg:hunter2secret@127.0.0.1:9/tfg"], "cannot connect to storage"),
    (["search", "--task", "gmm2d", "--target", "3", "--storage", "mysql://u:p@127.0.0.1/db"],
     "is not installed for storage"),
    (["studies"], "no study database at tfg-studies.db"),
    (["studies", "--storage", "sqlite:///notes.txt"], "not an SQLite database"),
    (["best", "--study", "x"], "no study database at tfg-studies.db"),
    (["best", "--study", "x", "--storage", "sqlite:///empty.db"], "holds no tfg-search studies"),
    (["export", "--study", "x", "--out", "o.json"], "no study database"),
    (["sample", "--study", "x", "--n", "0", "--out", "g.png"], "--n must be >= 1"),
    (["sample", "--study", "x", "--out", "g.jpg"], "--out must be a .png file"),
    (["evaluate", "--task", "gmm2d", "--target", "3", "--samples", "0"], ""),
    (["search", "--target", "3"], "Missing option '--task'"),
]  # fmt: skip


@pytest.mark.parametrize(("args", "needle"), BAD, ids=[" ".join(a)[:60] for a, _ in BAD])
def test_bad_input_one_line_exit_2_nothing_written(args, needle, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("not a database\n")
    (tmp_path / "empty.db").write_bytes(b"")
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    res = run_cli(args, capsys)
    assert res.code == 2, (res.out, res.err)
    lines = [line for line in res.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.err
    assert needle in lines[0]
    assert "hunter2secret" not in res.err + res.out
    after = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    assert after == before  # nothing written


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

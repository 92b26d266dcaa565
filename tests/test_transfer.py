"""Transfer through the service (tfg_search/run/transfer.py): which searches a new search starts
from, frozen at creation, out of the name; --no-transfer, --transfer-from; ``tfg-search suggest``."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import optuna
import pytest

from tests.helpers.cli import run_cli
from tfg_search.run import faults
from tfg_search.run.coordinator import run_search
from tfg_search.run.executors import LocalExecutor
from tfg_search.run.settings import SearchSettings
from tfg_search.store.layout import StudyInfo

TINY = dict(task="gmm2d", samples=4, final_samples=4, steps=2, final_top=1, wave=4)


def settings(target: str, **kw) -> SearchSettings:
    return SearchSettings(target=target, **{**TINY, **kw})


def info(url: str, name: str) -> StudyInfo:
    found = StudyInfo.of(optuna.load_study(study_name=name, storage=url))
    assert found is not None
    return found


def trials(url: str, name: str) -> list[tuple]:
    search = optuna.load_study(study_name=name + ":search", storage=url)
    return [(t.number, t.state, t.params, t.value, dict(t.intermediate_values)) for t in search.trials]


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A storage with one finished search of target 0 (its url, its study name)."""
    db = tmp_path_factory.mktemp("transfer") / "h.db"
    url = f"sqlite:///{db}"
    report = run_search(settings("0"), url)
    return url, report.study_name


def copy(history: tuple[str, str], tmp_path: Path, name: str = "h.db") -> str:
    """A copy of the history's database (its write-ahead log included)."""
    dst = tmp_path / name
    with sqlite3.connect(history[0].removeprefix("sqlite:///")) as src, sqlite3.connect(dst) as out:
        src.backup(out)
    return f"sqlite:///{dst}"


def test_a_new_target_starts_from_the_earlier_search_frozen_and_out_of_the_name(history, tmp_path):
    url = copy(history, tmp_path)
    report = run_search(settings("1"), url)
    cold = run_search(settings("1", transfer=False), f"sqlite:///{tmp_path / 'cold.db'}")
    assert report.study_name == cold.study_name  # the sources stay out of the name
    frozen = info(url, report.study_name).transfer
    assert frozen is not None and frozen["mode"] == "auto"
    [source] = frozen["sources"]
    assert source["name"] == history[1] and source["target"] == "0" and source["points"]
    first = min(
        optuna.load_study(study_name=report.study_name + ":search", storage=url).trials,
        key=lambda t: t.number,
    )
    assert first.params == source["answer"]["params"]  # the start opens with its answer
    assert report.transfer["sources"][0]["study"] == history[1]
    assert report.transfer["start"]["trials"] >= 1 and report.transfer["start"]["passes"]["denoiser"] > 0
    assert info(f"sqlite:///{tmp_path / 'cold.db'}", cold.study_name).transfer is None


def test_a_resume_uses_the_frozen_sources_even_when_they_are_gone(history, tmp_path, monkeypatch):
    whole = copy(history, tmp_path)
    done = run_search(settings("1"), whole, None, LocalExecutor(batch_size=1))
    part = copy(history, tmp_path, "part.db")
    faults.reset()
    monkeypatch.setenv(faults.ENV, "result:6")
    with pytest.raises(KeyboardInterrupt):
        run_search(settings("1"), part, None, LocalExecutor(batch_size=1))
    monkeypatch.delenv(faults.ENV)
    for name in (history[1] + ":search", history[1]):  # the source is deleted before the resume
        optuna.delete_study(study_name=name, storage=part)
    resumed = run_search(settings("1"), part, None, LocalExecutor(batch_size=1))
    assert resumed.study_name == done.study_name and resumed.transfer["sources"][0]["study"] == history[1]
    assert trials(part, done.study_name) == trials(whole, done.study_name)


def test_searches_of_other_settings_are_not_used_unless_named(history, tmp_path):
    url = copy(history, tmp_path)
    other = run_search(settings("1", steps=3, transfer=False), url)
    report = run_search(settings("2", steps=3), url)
    assert [s["study"] for s in report.transfer["sources"]] == [other.study_name]  # not the 4-step one
    named = run_search(settings("3", steps=3, transfer=(history[1],)), url)
    [source] = info(url, named.study_name).transfer["sources"]
    assert source["name"] == history[1] and source["differs"] == ["steps"]


def test_bad_transfer_flags_are_one_line_and_write_nothing(history, tmp_path, capsys, monkeypatch):
    url = copy(history, tmp_path)
    db = Path(url.removeprefix("sqlite:///"))
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    monkeypatch.chdir(tmp_path)
    base = ["search", "--task", "gmm2d", "--target", "1", "--storage", url, "--steps", "2", "--samples", "4"]
    for extra, words in (
        (["--transfer-from", "nope"], "no tfg-search study 'nope'"),
        (["--transfer-from", history[1], "--no-transfer"], "contradict"),
        (["--transfer-from", history[1], "--search", "gp"], "applies to the rung search"),
    ):
        result = run_cli([*base, *extra], capsys)
        lines = [line for line in result.err.splitlines() if line.strip()]
        assert result.code == 2 and len(lines) == 1 and words in lines[0], result.err
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before


def test_suggest_answers_from_history_and_refuses_without(history, tmp_path, capsys):
    url = copy(history, tmp_path)
    args = ["suggest", "--task", "gmm2d", "--target", "1", "--steps", "2", "--storage", url]
    result = run_cli([*args, "--json"], capsys)
    assert result.code == 0, result.err
    answer = json.loads(result.out)
    assert answer["passes"] == 0 and answer["sources"][0]["study"] == history[1]
    assert set(answer["params"]) == {"rho", "mu", "gamma"}
    result = run_cli(
        ["suggest", "--task", "gmm2d", "--target", "1", "--steps", "5", "--storage", url], capsys
    )
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert result.code == 1 and len(lines) == 1 and "nothing to suggest" in lines[0]
    result = run_cli(
        ["suggest", "--task", "gmm2d", "--target", "0", "--steps", "2", "--storage", url], capsys
    )
    assert result.code == 1  # its own target is no history


def test_the_transfer_setting_is_not_stored(history):
    assert "transfer" not in info(history[0], history[1]).settings

"""Studies written by every earlier version: ``tfg-search migrate`` brings them to this version's
layout, after which they answer the ``best`` their version answered and resume; a 0.2 study also
resumes without it (the search then keeps its summary itself), and a 0.1 study is refused until it
is migrated (one line).

``tests/data`` keeps one study file per layout, as the version that wrote it left it:

* ``legacy-v0.1.db``: layout 1 (tfg-search 0.1): one study holds beam and final trials, one user
  attr per field; gmm2d target 3, 16 samples, 10 steps, 2 rounds.
* ``layout-2-v0.2.db``: layout 2 (tfg-search 0.2): the answer in ``N``, the beam in ``N:search``,
  one JSON record per trial; gmm2d target 3, 16 samples, 10 steps, 2 rounds, the best re-run.
* ``rungs-v0.2.db``: layout 2, the rung search of tfg-search 0.2.0 (commit 1208c3b; the command
  is in tests/data/README.md): one search trial per rung evaluation, 2 final re-runs.

Each answers the ``best`` recorded here from the version that wrote it (:data:`ANSWERS`).
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from tests.helpers.cli import run_cli
from tests.helpers.search import SMALL
from tfg_search.errors import TFGSearchError
from tfg_search.run.coordinator import run_search
from tfg_search.run.settings import SearchSettings
from tfg_search.store import query
from tfg_search.store.layout import FINAL, SEARCH
from tfg_search.store.studies import load_search

DATA = Path(__file__).parent / "data"
FIXTURES = {
    1: ("legacy-v0.1.db", "gmm2d-3-tfg-43e62bc5", {"rounds": 2, "final_top": 2}),
    2: ("layout-2-v0.2.db", "gmm2d-3-tfg-c8fe984c", {"rounds": 2, "final_top": 1}),
}


ANSWERS = {
    "legacy-v0.1.db": (9, 0.9728533625602722, {"rho": 0.002, "mu": 0.008, "gamma": 0.001}),
    "layout-2-v0.2.db": (0, 0.9728533625602722, {"rho": 0.002, "mu": 0.008, "gamma": 0.001}),
    "rungs-v0.2.db": (0, 0.975162923336029, {"rho": 0.032, "mu": 0.002, "gamma": 0.001}),
}
"""File -> (trial, score, params) of its best, as ``tfg-search best`` of the version that made it says
(migrating 0.1's one study into two numbers its finals from 0: its trial 9 is trial 0 of ``N``)."""
MIGRATED_NUMBER = {9: 0}
RUNGS = ("rungs-v0.2.db", "gmm2d-3-tfg-d574513d")
RUNGS_SETTINGS = dict(samples=16, final_samples=32, steps=10, wave=4)
"""The settings of tests/data/README.md's command (the rung search is the default)."""


@pytest.fixture(params=[*(f[0] for f in FIXTURES.values()), RUNGS[0]])
def migrated(
    request: pytest.FixtureRequest, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> tuple[str, str, str]:
    """A copy of a fixture, migrated by the command: (file, url, study name)."""
    file = request.param
    name = RUNGS[1] if file == RUNGS[0] else next(v[1] for v in FIXTURES.values() if v[0] == file)
    shutil.copy(DATA / file, tmp_path / file)
    url = f"sqlite:///{tmp_path / file}"
    res = run_cli(["migrate", "--storage", url], capsys)
    assert res.code == 0, res.err
    lines = res.out.strip().splitlines()
    assert lines[0].startswith("backup: ") and f"study {name}: layout " in lines[1] and "-> 3" in lines[1]
    backup = Path(lines[0].removeprefix("backup: "))
    assert _rows(backup) == _rows(DATA / file)  # the backup holds the study as it was
    again = run_cli(["migrate", "--storage", url], capsys)
    assert again.code == 0 and again.out.startswith("nothing to migrate")
    return file, url, name


def _rows(db: Path) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        tables = [t for (t,) in conn.execute("select name from sqlite_master where type = 'table'")]
        return [(t, row) for t in sorted(tables) for row in conn.execute(f"select * from {t}")]


def test_each_fixture_answers_what_its_version_answered(
    migrated: tuple[str, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    file, url, name = migrated
    studies = load_search(url, name)
    assert studies.info.layout == 3
    records = studies.records()
    assert {r.role for r in records} == {SEARCH, FINAL}
    assert all(r.config is not None and r.metrics is not None for r in records if r.ok)
    payload = query.best_payload(url, name)
    trial, score, params = ANSWERS[file]
    assert (payload["trial"], payload["score"], payload["params"]) == (
        MIGRATED_NUMBER.get(trial, trial),
        score,
        params,
    )
    assert payload["role"] == FINAL
    (row,) = [r for r in query.list_searches(url) if r["study"] == name]
    assert row["finished"] and row["best"] == payload["score"] and row["trials"] == len(records)
    config, metrics = query.load_best(url, name)
    assert config.to_dict() == {**config.to_dict(), **payload["config"]} and metrics == payload["metrics"]
    shown = run_cli(["best", "--study", name, "--json", "--storage", url], capsys)
    assert shown.code == 0 and json.loads(shown.out) == payload


@pytest.mark.parametrize("layout", sorted(FIXTURES), ids=lambda layout: f"layout-{layout}")
def test_each_beam_fixture_resumes_with_more_rounds(layout: int, tmp_path: Path, capsys) -> None:
    file, name, grown = FIXTURES[layout]
    shutil.copy(DATA / file, tmp_path / file)
    url = f"sqlite:///{tmp_path / file}"
    settings = SearchSettings(task="gmm2d", target="3", **{**SMALL, **grown, "rounds": 3})
    if layout == 1:  # 0.1's layout is read only once migrated
        with pytest.raises(
            TFGSearchError, match=r"written by tfg-search 0.1 \(layout 1\); run `tfg-search migrate"
        ):
            run_search(settings, url)
        assert run_cli(["migrate", "--storage", url], capsys).code == 0
    before = {(r.role, r.number): r.value for r in load_search(url, name).records()}
    report = run_search(settings, url)
    assert report.study_name == name and report.resumed
    after = load_search(url, name).records()
    assert all(before[(r.role, r.number)] == r.value for r in after if (r.role, r.number) in before)
    assert len([r for r in after if r.role == SEARCH]) > len([k for k in before if k[0] == SEARCH])
    configs = [tuple(sorted(r.params.items())) for r in after if r.role == SEARCH]
    assert len(configs) == len(set(configs))
    assert load_search(url, name).info.layout == 3  # the search keeps its summary from now on
    assert query.best_payload(url, name)["trial"] == report.best_trial


def test_a_rung_search_of_0_2_resumes_and_answers_the_same(tmp_path: Path) -> None:
    file, name = RUNGS
    shutil.copy(DATA / file, tmp_path / file)
    url = f"sqlite:///{tmp_path / file}"
    before = load_search(url, name).records()
    report = run_search(SearchSettings(task="gmm2d", target="3", **RUNGS_SETTINGS), url)
    assert report.study_name == name and report.resumed  # the same command finds it
    assert (report.best_trial, report.best_score) == ANSWERS[file][:2]
    after = load_search(url, name).records()
    assert [(r.number, r.role, r.value) for r in after] == [(r.number, r.role, r.value) for r in before]
    payload = query.best_payload(url, name)
    assert (payload["trial"], payload["score"], payload["params"]) == ANSWERS[file]


NAMES_0_2 = [
    ({}, "gmm2d-3-tfg-ce36f68b"),
    ({"wave": 4}, "gmm2d-3-tfg-d574513d"),
    ({"search": "beam"}, "gmm2d-3-tfg-c8fe984c"),
    ({"search": "beam", "steps_down": True, "top_k": 3}, "gmm2d-3-tfg-7d119496"),
    ({"search": "gp"}, "gmm2d-3-tfg-b22dac27"),
    ({"search": "tpe", "trials": 12, "wave": 4}, "gmm2d-3-tfg-8b3434e3"),
    ({"search": "random"}, "gmm2d-3-tfg-6399f418"),
    ({"method": "dps", "search": "beam"}, "gmm2d-3-dps-cecd3277"),
    ({"seed_presets": False}, "gmm2d-3-tfg-e8fbc35d"),
]
"""Settings (in this version's spelling) and the study name tfg-search 0.2.0 (commit 1208c3b) gave
the same search, spelled there with --sampler and --mode (gmm2d target 3, 16 samples, 32 final
samples, 10 steps)."""


@pytest.mark.parametrize(("settings", "name"), NAMES_0_2, ids=[n for _, n in NAMES_0_2])
def test_the_same_search_has_the_name_0_2_gave_it(settings: dict, name: str) -> None:
    from tasks import get_task

    base = dict(task="gmm2d", target="3", samples=16, final_samples=32, steps=10)
    assert SearchSettings(**base, **settings).resolve(get_task("gmm2d")).study_name == name

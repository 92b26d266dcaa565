"""Studies written by every earlier layout still read, through both read paths, and resume.

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

import shutil
from pathlib import Path

import pytest

from tests.helpers.search import SMALL
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
"""File -> (trial, score, params) of its best, as ``tfg-search best`` of the version that made it says."""
RUNGS = ("rungs-v0.2.db", "gmm2d-3-tfg-d574513d")
RUNGS_SETTINGS = dict(samples=16, final_samples=32, steps=10, wave=4)
"""The settings of tests/data/README.md's command (the rung search is the default)."""


@pytest.fixture(params=sorted(FIXTURES), ids=lambda layout: f"layout-{layout}")
def stored(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[int, str, str, dict]:
    layout = request.param
    file, name, grown = FIXTURES[layout]
    shutil.copy(DATA / file, tmp_path / file)
    return layout, f"sqlite:///{tmp_path / file}", name, grown


def test_each_layout_reads_the_same_through_both_paths(stored: tuple[int, str, str, dict]) -> None:
    layout, url, name, _ = stored
    studies = load_search(url, name)
    assert studies.info.layout == layout and studies.legacy == (layout == 1)
    records = studies.records()
    assert {r.role for r in records} == {SEARCH, FINAL}
    assert all(r.config is not None and r.metrics is not None for r in records if r.ok)
    best = studies.best()
    assert best.role == FINAL
    for via in ("direct", "optuna"):
        payload = query.best_payload(url, name, via=via)
        found = (payload["trial"], payload["score"], payload["config"])
        assert found == (best.number, best.value, best.config)
        (row,) = [r for r in query.list_searches(url, via=via) if r["study"] == name]
        assert row["finished"] and row["best"] == best.value and row["trials"] == len(records)
    config, metrics = query.load_best(url, name)
    assert config == best.tfg_config() and metrics == best.metrics
    file = FIXTURES[layout][0]
    assert (best.number, best.value, best.params) == ANSWERS[file]


def test_each_layout_resumes_with_more_rounds(stored: tuple[int, str, str, dict]) -> None:
    layout, url, name, grown = stored
    before = {(r.role, r.number): r.value for r in load_search(url, name).records()}
    settings = SearchSettings(task="gmm2d", target="3", **{**SMALL, **grown, "rounds": 3})
    report = run_search(settings, url)
    assert report.study_name == name and report.resumed
    after = load_search(url, name).records()
    assert all(before[(r.role, r.number)] == r.value for r in after if (r.role, r.number) in before)
    assert len([r for r in after if r.role == SEARCH]) > len([k for k in before if k[0] == SEARCH])
    beams = [tuple(sorted(r.params.items())) for r in after if r.role == SEARCH]
    assert len(beams) == len(set(beams))
    assert load_search(url, name).info.layout == layout  # a resumed study keeps its layout


def test_a_rung_search_of_0_2_opens_resumes_and_answers_the_same(tmp_path: Path) -> None:
    file, name = RUNGS
    shutil.copy(DATA / file, tmp_path / file)
    url = f"sqlite:///{tmp_path / file}"
    before = load_search(url, name).records()
    payload = query.best_payload(url, name)
    assert (payload["trial"], payload["score"], payload["params"]) == ANSWERS[file]
    report = run_search(SearchSettings(task="gmm2d", target="3", **RUNGS_SETTINGS), url)
    assert report.study_name == name and report.resumed  # the same command finds it
    assert (report.best_trial, report.best_score) == ANSWERS[file][:2]
    after = load_search(url, name).records()
    assert [(r.number, r.role, r.value) for r in after] == [(r.number, r.role, r.value) for r in before]
    assert query.best_payload(url, name) == payload


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

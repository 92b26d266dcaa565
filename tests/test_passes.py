"""Every trial records the model passes it spent; the search summary and `best --json` sum them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.helpers.cli import run_cli
from tfg_search.guidance.config import TFGConfig
from tfg_search.guidance.passes import sample_passes
from tfg_search.run.coordinator import run_search
from tfg_search.run.settings import SearchSettings
from tfg_search.store import query
from tfg_search.store.studies import load_search

DATA = Path(__file__).parent / "data"


def test_passes_count_samples_steps_and_recurrence() -> None:
    one = sample_passes(TFGConfig(rho=1.0, mu=1.0, n_iter=2), steps=10, samples=64)
    assert one == {"denoiser": 640, "denoiser_backward": 640, "predictor": 1280}
    two = sample_passes(TFGConfig(rho=1.0, mu=1.0, n_iter=2, n_recur=2), steps=10, samples=64)
    assert all(two[k] == 2 * one[k] for k in one)  # n_recur 2 costs twice n_recur 1
    big = sample_passes(TFGConfig(rho=1.0, mu=1.0, n_iter=2), steps=10, samples=512)
    assert all(big[k] == 8 * one[k] for k in one)  # a 512-sample final costs 8x a 64-sample trial
    mean_only = sample_passes(TFGConfig(mu=1.0, n_iter=2), steps=10, samples=64)
    assert mean_only == {"denoiser": 640, "denoiser_backward": 0, "predictor": 1280}


SEARCHES = {
    "rungs": {},  # the default: rung j >= 1 evaluates 8 * 2 ** (j - 1) fresh samples
    "reference": {"mode": "reference", "rounds": 2},
    "random": {"sampler": "random", "trials": 4, "wave": 2},
}


@pytest.mark.parametrize("search", list(SEARCHES))
def test_each_trial_stores_its_passes_and_the_study_sums_them(
    search: str, tmp_storage_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = SearchSettings(
        task="gmm2d", target="3", samples=8, final_samples=32, steps=6, final_top=1, **SEARCHES[search]
    )
    report = run_search(settings, tmp_storage_url)
    records = load_search(tmp_storage_url, report.study_name).records()
    for r in records:
        want = sample_passes(r.tfg_config(), r.steps, r.samples)
        assert r.passes == want
        assert r.samples in ((32,) if r.role == "final" else (8, 16, 32) if search == "rungs" else (8,))
    if search == "rungs":
        assert {r.samples for r in records if r.role == "beam"} == {8, 16}  # rung 0 and 1 on 8, rung 2 on 16
    finals = [r for r in records if r.role == "final"]
    assert finals and all(r.passes["denoiser"] == 32 * 6 for r in finals)
    total = {k: sum(r.passes[k] for r in records) for k in records[0].passes}
    assert report.compute["passes"] == total
    assert report.compute["trials"] == {"beam": len(records) - len(finals), "final": len(finals)}
    for via in ("direct", "optuna"):
        assert query.best_payload(tmp_storage_url, report.study_name, via=via)["compute"] == report.compute
    shown = run_cli(["best", "--study", report.study_name, "--json", "--storage", tmp_storage_url], capsys)
    assert shown.code == 0 and json.loads(shown.out)["compute"]["passes"] == total


def test_studies_of_earlier_versions_get_their_passes_from_their_records(tmp_path: Path) -> None:
    for file, name in (
        ("legacy-v0.1.db", "gmm2d-3-tfg-43e62bc5"),
        ("layout-2-v0.2.db", "gmm2d-3-tfg-c8fe984c"),
    ):
        shutil.copy(DATA / file, tmp_path / file)  # written before trials stored their passes
        url = f"sqlite:///{tmp_path / file}"
        records = [r for r in load_search(url, name).records() if r.config is not None]
        assert records and all(r.passes == sample_passes(r.tfg_config(), r.steps, r.samples) for r in records)
        direct = query.best_payload(url, name, via="direct")["compute"]
        assert direct == query.best_payload(url, name, via="optuna")["compute"]
        assert direct["passes"]["denoiser"] == sum(r.passes["denoiser"] for r in records)

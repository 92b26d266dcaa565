"""Every trial records the model passes it spent; the search summary and `best --json` sum them."""

from __future__ import annotations

import doctest
import json
import shutil
from pathlib import Path

import pytest

from tests.helpers.cli import run_cli
from tfg_search.guidance import config_file, passes
from tfg_search.guidance.config import TFGConfig
from tfg_search.guidance.passes import best_of_n_passes, read_passes, sample_passes, total_passes
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


def test_cfg_counts_both_branches_and_a_latent_model_its_decoder() -> None:
    one = sample_passes(TFGConfig(rho=1.0, mu=1.0, n_iter=2), steps=10, samples=64)
    cfg = sample_passes(TFGConfig(rho=1.0, mu=1.0, n_iter=2, guidance_scale=3.0), steps=10, samples=64)
    assert cfg == {**one, "denoiser": 2 * one["denoiser"], "denoiser_backward": 2 * one["denoiser_backward"]}
    latent = sample_passes(TFGConfig(rho=1.0, mu=1.0, n_iter=2), steps=10, samples=64, decoder=True)
    # each predictor pass on a latent decodes it (forward + backward), each sample is decoded once more
    assert latent == {**one, "decoder": one["predictor"] + 64, "decoder_backward": one["predictor"]}


def test_best_of_n_counts_unguided_candidates_scored_once() -> None:
    config = TFGConfig(rho=1.0, mu=1.0, n_iter=4, n_recur=2, guidance_scale=5.0)  # its TFG is not run
    got = best_of_n_passes(config, steps=50, n=8, samples=256, decoder=True)
    candidates = 8 * 256
    assert got == {
        "denoiser": 50 * 2 * candidates,  # both CFG branches, one pass per step, no recurrence
        "denoiser_backward": 0,
        "predictor": candidates,
        "decoder": candidates,
        "decoder_backward": 0,
    }
    assert best_of_n_passes(TFGConfig(), steps=50, n=1, samples=4) == {
        "denoiser": 200,
        "denoiser_backward": 0,
        "predictor": 4,
    }
    with pytest.raises(ValueError, match="n >= 1"):
        best_of_n_passes(TFGConfig(), steps=50, n=0, samples=4)


def test_stored_passes_of_every_version_read_and_sum() -> None:
    old = {"denoiser": 10, "predictor": 5}  # a record without a kind: that kind is 0
    pixel = sample_passes(TFGConfig(rho=1.0), steps=2, samples=3)
    latent = sample_passes(TFGConfig(rho=1.0), steps=2, samples=3, decoder=True)
    assert read_passes(old) == {"denoiser": 10, "denoiser_backward": 0, "predictor": 5}
    assert read_passes(pixel) == pixel and read_passes(latent) == latent
    assert total_passes([old, pixel]) == {k: read_passes(old)[k] + pixel[k] for k in pixel}
    both = total_passes([old, latent])
    assert both["decoder"] == latent["decoder"] and both["denoiser"] == 10 + latent["denoiser"]


@pytest.mark.parametrize("module", [passes, config_file])
def test_the_torch_free_modules_examples_run(module: object) -> None:
    failed, tried = doctest.testmod(module, optionflags=doctest.ELLIPSIS)  # type: ignore[arg-type]
    assert tried > 0 and failed == 0


SEARCHES = {
    "rungs": {},  # the default: rung j >= 1 evaluates 8 * 2 ** (j - 1) fresh samples
    "reference": {"search": "beam", "rounds": 2},
    "random": {"search": "random", "trials": 4, "wave": 2},
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
    if search == "rungs":  # a point's samples in all: 8 (rung 0), 16 (and rung 1), 32 (and rung 2 on 16)
        assert {r.samples for r in records if r.role == "search"} == {8, 16, 32}
        for r in records:
            if r.role == "search":
                assert [e["samples"] for e in r.evaluations] == [8, 8, 16][: r.rung + 1]
    finals = [r for r in records if r.role == "final"]
    assert finals and all(r.passes["denoiser"] == 32 * 6 for r in finals)
    total = {k: sum(r.passes[k] for r in records) for k in records[0].passes}
    assert report.compute["passes"] == total
    assert report.compute["trials"] == {"search": len(records) - len(finals), "final": len(finals)}
    assert query.best_payload(tmp_storage_url, report.study_name)["compute"] == report.compute
    shown = run_cli(["best", "--study", report.study_name, "--json", "--storage", tmp_storage_url], capsys)
    assert shown.code == 0 and json.loads(shown.out)["compute"]["passes"] == total


def test_studies_of_earlier_versions_get_their_passes_from_their_records(tmp_path: Path) -> None:
    from tfg_search.run.migrate import migrate

    for file, name in (
        ("legacy-v0.1.db", "gmm2d-3-tfg-43e62bc5"),
        ("layout-2-v0.2.db", "gmm2d-3-tfg-c8fe984c"),
    ):
        shutil.copy(DATA / file, tmp_path / file)  # written before trials stored their passes
        url = f"sqlite:///{tmp_path / file}"
        migrate(url)
        records = [r for r in load_search(url, name).records() if r.config is not None]
        assert records and all(r.passes == sample_passes(r.tfg_config(), r.steps, r.samples) for r in records)
        spent = query.best_payload(url, name)["compute"]
        assert spent["passes"]["denoiser"] == sum(r.passes["denoiser"] for r in records)

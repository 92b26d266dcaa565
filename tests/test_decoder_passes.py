"""The evaluation reports the passes it spent (a latent task adds its decoder passes:
tests/test_e2e_sd.py), and every total reads the records of earlier versions (no decoder kinds, or
no passes at all) with the kinds they lack as 0."""

from __future__ import annotations

from tasks import get_task
from tfg_search.guidance.config import TFGConfig
from tfg_search.guidance.passes import sample_passes
from tfg_search.run.evaluation import evaluate
from tfg_search.store.layout import compute, passes_of


def test_the_evaluation_reports_the_passes_it_spent() -> None:
    config = TFGConfig(rho=0.1, mu=0.1, n_iter=1)
    pixel = evaluate(get_task("gmm2d"), "3", config, n_samples=4, seed=0, num_inference_steps=3)
    assert pixel.passes == sample_passes(pixel.config, 3, 4) and "decoder" not in pixel.passes


def test_totals_read_every_version_of_the_record() -> None:
    config = TFGConfig(rho=0.5, mu=0.5, n_iter=2, guidance_scale=2.0)
    latent = sample_passes(config, 5, 4, decoder=True)
    records = [
        {"role": "search", "passes": latent, "wall_time_s": 1.0},
        {"role": "search", "passes": {"denoiser": 10, "predictor": 5}, "wall_time_s": 1.0},  # 0.2
        {"role": "final", "config": TFGConfig().to_dict(), "steps": 5, "samples": 2},  # 0.1: derived
    ]
    records = [{**r, "passes": passes_of(r)} for r in records]
    assert records[0]["passes"] == latent
    assert records[1]["passes"] == {"denoiser": 10, "denoiser_backward": 0, "predictor": 5}
    assert records[2]["passes"] == sample_passes(TFGConfig(), 5, 2)
    spent = compute(records)
    assert spent["trials"] == {"search": 2, "final": 1}
    assert spent["passes"] == {
        "denoiser": latent["denoiser"] + 10 + 10,
        "denoiser_backward": latent["denoiser_backward"],
        "predictor": latent["predictor"] + 5,
        "decoder": latent["decoder"],
        "decoder_backward": latent["decoder_backward"],
    }

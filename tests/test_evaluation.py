"""evaluation: scores, method configs, determinism, non-finite failures; images."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import DDIMScheduler

from tasks import Task, get_task
from tfg_search.cli.images import image_grid, save_samples
from tfg_search.errors import NonFiniteSampleError, TFGSearchError
from tfg_search.guidance.config import TFGConfig, method_config
from tfg_search.run.evaluation import evaluate
from tfg_search.run.objective import check_objective, score


def test_score_orients_and_averages() -> None:
    assert score({"validity": 0.8, "fd": 2.0}, ["validity", "_fd"]) == pytest.approx(-0.6)
    assert score({"validity": 0.8}, ["validity"]) == 0.8
    assert score({"validity": float("nan")}, ["validity"]) == -math.inf
    assert score({"validity": 0.5}, ["validity", "fidelity"]) == -math.inf
    with pytest.raises(TFGSearchError):
        score({"validity": 0.5}, [])


def test_check_objective_names_the_unknown_metric() -> None:
    with pytest.raises(TFGSearchError, match="psnr"):
        check_objective(get_task("gmm2d"), ["validity", "_psnr"])


def test_method_config_maps_methods_and_overrides() -> None:
    assert method_config("unguided") == TFGConfig()
    assert method_config("dps", 0.1) == TFGConfig.preset("dps", 0.1)
    assert method_config("dps", rho=0.2).rho == 0.2
    assert method_config("mpgd", mu=0.3) == TFGConfig.preset("mpgd", 0.3)
    cfg = method_config("tfg", rho=0.5, mu=1.0, gamma=0.1, n_recur=2, n_iter=3, n_mc=2)
    assert (cfg.rho, cfg.mu, cfg.gamma, cfg.n_recur, cfg.n_iter, cfg.n_mc) == (0.5, 1, 0.1, 2, 3, 2)
    assert method_config("tfg", 0.5, n_recur=None).n_recur == 1
    with pytest.raises(ValueError, match="unknown method"):
        method_config("magic", 1.0)
    with pytest.raises(ValueError, match="n_recur"):
        method_config("tfg", n_recur=0)
    with pytest.raises(ValueError, match="unguided"):
        method_config("unguided", 0.1)


def test_evaluate_is_deterministic_and_validates() -> None:
    task = get_task("gmm2d")
    cfg = method_config("dps", 0.01)
    a = evaluate(task, "1", cfg, 16, seed=7, num_inference_steps=5, return_samples=True)
    b = evaluate(task, "1", cfg, 16, seed=7, num_inference_steps=5, return_samples=True)
    c = evaluate(task, "1", cfg, 16, seed=8, num_inference_steps=5, return_samples=True)
    assert torch.equal(a.samples, b.samples) and a.metrics == b.metrics
    assert not torch.equal(a.samples, c.samples)
    assert a.device == "cpu" and a.wall_time_s > 0 and a.config.clip_x0 is False
    with pytest.raises(TFGSearchError, match="samples"):
        evaluate(task, "1", cfg, 0, seed=0)
    with pytest.raises(TFGSearchError, match="target"):
        evaluate(task, "8", cfg, 4, seed=0)


class _ExplodingTask(Task):
    """A task whose guiding gradient is infinite: sampling must fail loudly."""

    name = "exploding"
    sample_shape = (2,)
    clip_x0 = False

    @property
    def targets(self) -> list[str]:
        return ["x"]

    def diffusion(self, device=None):
        return (lambda x, t: 0.0 * x), DDIMScheduler()

    def log_f(self, target, device=None):
        return lambda x: (x * float("inf")).sum(1)

    def compute_metrics(self, samples, target):  # pragma: no cover - never reached
        return {"validity": 1.0}


def test_non_finite_samples_propagate() -> None:
    with pytest.raises(NonFiniteSampleError):
        evaluate(_ExplodingTask(), "x", TFGConfig(rho=1.0), 4, seed=0, num_inference_steps=3)


def test_images_grid_and_scatter(tmp_path) -> None:
    grid = image_grid(torch.zeros(5, 1, 8, 8), scale=2)
    assert grid.shape == (2 * (2 * 9 + 1), 2 * (3 * 9 + 1), 3) and grid.dtype.name == "uint8"
    assert save_samples(torch.rand(6, 1, 8, 8) * 2 - 1, tmp_path / "g.png").stat().st_size > 0
    out = save_samples(torch.randn(30, 2), tmp_path / "s.png", reference=torch.randn(50, 2))
    assert out.stat().st_size > 0
    with pytest.raises(TFGSearchError, match="does not exist"):
        save_samples(torch.randn(3, 2), tmp_path / "missing" / "s.png")

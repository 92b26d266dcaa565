"""The shapes task: its generator's labels, the analytic judges, the shipped weights, a guided run."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import DDIMScheduler, UNet2DModel

from tasks import get_task
from tasks.shapes_data import (
    COLOURS,
    PAIR_RATES,
    SHAPES,
    pair_rate,
    parse_pair,
    rare_pairs,
    render,
    render_batch,
)
from tasks.shapes_judge import FEATURE_NAMES, judge
from tasks.weights import weights_dir
from tfg_search.errors import TFGSearchError
from tfg_search.guidance.config import TFGConfig
from tfg_search.run.evaluation import evaluate


def test_pair_rates_are_a_skewed_distribution() -> None:
    assert math.isclose(sum(PAIR_RATES.values()), 1.0, abs_tol=1e-9)
    assert set(PAIR_RATES) == {(c, s) for c in COLOURS for s in SHAPES}
    assert min(PAIR_RATES.values()) == pytest.approx(0.005) and max(PAIR_RATES.values()) == pytest.approx(
        0.10
    )
    assert rare_pairs()[0] == "cyan-triangle" and all(pair_rate(*parse_pair(p)) < 0.05 for p in rare_pairs())


def test_generator_follows_its_labels_and_rates() -> None:
    x, c, s = render_batch(20000, seed=3)
    assert x.shape == (20000, 3, 32, 32) and x.min() >= -1 and x.max() <= 1
    for (colour, shape), rate in PAIR_RATES.items():
        share = float(((c == COLOURS.index(colour)) & (s == SHAPES.index(shape))).float().mean())
        assert abs(share - rate) < 4 * math.sqrt(rate * (1 - rate) / 20000) + 1e-3, (colour, shape)
    # conditioning on a target draws only that target
    _, c2, s2 = render_batch(200, seed=4, colour="cyan", shape="triangle")
    assert (c2 == COLOURS.index("cyan")).all() and (s2 == SHAPES.index("triangle")).all()
    # the same seed draws the same images; another seed others
    a, b = render_batch(8, seed=5)[0], render_batch(8, seed=5)[0]
    assert torch.equal(a, b) and not torch.equal(a, render_batch(8, seed=6)[0])


def test_generator_draws_the_colour_it_is_given() -> None:
    gen = torch.Generator().manual_seed(0)
    colour = torch.arange(6).repeat_interleave(3)
    shape = torch.arange(3).repeat(6)
    x = render(colour, shape, gen)
    img = (x + 1) / 2
    fg = img.amax(1) > 0.5
    for i in range(len(x)):
        mean = img[i][:, fg[i]].mean(1)
        want = torch.tensor([1.0 if v > 0 else 0.0 for v in _rgb(int(colour[i]))])
        assert torch.allclose((mean > 0.5).float(), want), (i, mean)


def _rgb(index: int) -> tuple[float, float, float]:
    from tasks.shapes_data import COLOUR_RGB

    return COLOUR_RGB[COLOURS[index]]


def test_judges_are_at_least_98_percent_accurate_on_fresh_images() -> None:
    x, c, s = render_batch(3000, seed=2024, rates="uniform")
    verdict = judge(x)
    assert float((verdict.colour == c).float().mean()) >= 0.98
    assert float((verdict.shape == s).float().mean()) >= 0.98
    assert float(verdict.clean.float().mean()) >= 0.98
    assert verdict.features.shape == (3000, len(FEATURE_NAMES)) and torch.isfinite(verdict.features).all()


def test_judges_cannot_be_fooled_by_noise_or_emptiness() -> None:
    gen = torch.Generator().manual_seed(1)
    dark = torch.full((4, 3, 32, 32), -0.9)
    noise = (torch.rand(4, 3, 32, 32, generator=gen) * 2 - 1) * 0.1 - 0.85
    for x in (dark, noise):
        v = judge(x)
        assert (v.colour == -1).all() and (v.shape == -1).all() and not v.clean.any()
    grey = render_batch(4, seed=9)[0].amax(1, keepdim=True).expand(-1, 3, -1, -1)  # colourless objects
    assert (judge(grey).colour == -1).all()


def test_targets_parse_and_bad_ones_are_refused() -> None:
    task = get_task("shapes")
    assert task.parse_target("cyan-triangle") == (5, 2)
    assert task.parse_target("red") == (0, None) and task.parse_target("square") == (None, 1)
    for bad in ("purple-circle", "red-hexagon", "", "cyan triangle"):
        with pytest.raises(TFGSearchError, match="target"):
            task.parse_target(bad)


def test_shipped_weights_load_with_from_pretrained() -> None:
    folder = weights_dir("shapes")
    unet = UNet2DModel.from_pretrained(folder / "unet", use_safetensors=True, low_cpu_mem_usage=False)
    sched = DDIMScheduler.from_pretrained(folder / "scheduler")
    assert unet.config.sample_size == 32 and unet.config.in_channels == 3
    assert any("Attn" in b for b in unet.config.down_block_types)
    assert sched.config.num_train_timesteps == 1000
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and "checkpoint" not in p.parts)
    assert size < 25e6


def test_guides_agree_with_the_judges_on_fresh_images() -> None:
    task = get_task("shapes")
    x, _, _ = render_batch(600, seed=77, rates="uniform")
    with torch.no_grad():
        colour = task.guide("colour")(x).argmax(1)
        shape = task.guide("shape")(x).argmax(1)
    v = judge(x)
    assert float((colour == v.colour).float().mean()) >= 0.97
    assert float((shape == v.shape).float().mean()) >= 0.97


def test_a_short_guided_run_on_the_real_weights() -> None:
    task = get_task("shapes")
    cfg = TFGConfig(rho=2.0, mu=0.5, gamma=0.001, n_iter=2)
    result = evaluate(
        task, "cyan-triangle", cfg, n_samples=4, seed=0, num_inference_steps=5, return_samples=True
    )
    assert result.samples.shape == (4, 3, 32, 32) and torch.isfinite(result.samples).all()
    assert set(result.metrics) == set(task.metrics)
    for name in ("validity", "colour_validity", "shape_validity", "clean_rate", "guide_accuracy", "fidelity"):
        assert 0.0 <= result.metrics[name] <= 1.0, name
    assert result.metrics["fd"] >= 0

"""The shapes-latent task: shipped VAE + conditional UNet, the judges' gate on reconstructions, the
conditioning and decoder hooks, a guided evaluation, the trainer's gate refusal."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DModel

from tasks import get_task
from tasks.nets import SHAPES_LATENT_NULL_CLASS
from tasks.registry import build_description, describe
from tasks.shapes_data import COLOURS, render_batch
from tasks.shapes_judge import judge
from tasks.shapes_latent import CONDITIONAL_RARE_PAIRS, shape_share
from tasks.shapes_latent_training import reconstruct, train_shapes_latent, vae_gate
from tasks.weights import weights_dir
from tfg_search.errors import TFGSearchError
from tfg_search.guidance import Conditioning, LatentDecoder, TFGConfig
from tfg_search.run.evaluation import evaluate


@pytest.fixture(scope="module")
def task():
    return get_task("shapes-latent")


def test_rare_pairs_are_rare_within_their_colour() -> None:
    assert CONDITIONAL_RARE_PAIRS == ("cyan-triangle", "yellow-triangle", "blue-square")
    assert [round(shape_share(*p.split("-")), 3) for p in CONDITIONAL_RARE_PAIRS] == [0.038, 0.067, 0.111]
    assert sum(shape_share("cyan", s) for s in ("circle", "square", "triangle")) == pytest.approx(1.0)


def test_targets_are_pairs_and_colours(task) -> None:
    assert task.parse_target("cyan-triangle") == (5, 2) and task.parse_target("red") == (0, None)
    assert len(task.targets) == 18 + 6 and "triangle" not in task.targets
    for bad in ("triangle", "purple-circle", "", "cyan triangle"):
        with pytest.raises(TFGSearchError, match="shapes-latent"):
            task.parse_target(bad)


def test_shipped_weights_load_as_a_pipeline_folder(task) -> None:
    folder = weights_dir("shapes-latent")
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "TFGPipeline"
    assert index["unet"] == ["diffusers", "UNet2DModel"] and index["vae"] == ["diffusers", "AutoencoderKL"]
    assert index["scheduler"] == ["diffusers", "DDIMScheduler"]
    unet, sched = task.diffusion()
    vae = task.vae()
    assert isinstance(unet, UNet2DModel) and isinstance(sched, DDIMScheduler)
    assert isinstance(vae, AutoencoderKL) and sched.config.prediction_type == "v_prediction"
    assert unet.config.num_class_embeds == SHAPES_LATENT_NULL_CLASS + 1 == len(COLOURS) + 1
    z = torch.randn(2, *task.sample_shape)
    with torch.no_grad():
        out = unet(
            z, torch.tensor([999, 10]), class_labels=torch.tensor([5, SHAPES_LATENT_NULL_CLASS])
        ).sample
        x = vae.decode(z / vae.config.scaling_factor).sample
    assert out.shape == z.shape and x.shape == (2, *task.image_shape)
    # latents scaled to about unit variance (the scaling factor is 1 / their std)
    real, _, _ = render_batch(64, seed=31)
    with torch.no_grad():
        lat = vae.encode(real).latent_dist.mode() * vae.config.scaling_factor
    assert 0.7 < float(lat.std()) < 1.4
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and "checkpoint" not in p.parts)
    assert size < 25e6


def test_the_judges_read_reconstructions_as_the_images(task) -> None:
    gate = vae_gate(task.vae(), n=128, seed=99, pair_images=32)
    assert gate["agreement"] >= 0.9
    for pair, figures in gate["pairs"].items():
        assert figures["agreement"] >= 0.9, pair
    # and the reconstructions are of the right colour and shape, not merely alike
    x, c, s = render_batch(32, seed=98, colour="cyan", shape="triangle")
    v = judge(reconstruct(task.vae(), x))
    assert float(((v.colour == c) & (v.shape == s)).float().mean()) >= 0.9


def test_conditioning_and_decoder_follow_the_contract(task) -> None:
    cond = task.conditioning("cyan-triangle", "cpu")
    assert isinstance(cond, Conditioning)
    assert cond.cond["class_labels"].tolist() == [COLOURS.index("cyan")]
    assert cond.uncond["class_labels"].tolist() == [SHAPES_LATENT_NULL_CLASS]
    assert task.conditioning("red", "cpu").cond["class_labels"].tolist() == [0]
    decoder = task.decoder("cpu")
    assert isinstance(decoder, LatentDecoder)
    vae = task.vae()
    z = torch.randn(3, *task.sample_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = vae.decode(z / vae.config.scaling_factor).sample
    assert torch.allclose(decoder(z), want)
    # log f on latents: the shape guide on decoded images, differentiable through the decoder
    z.requires_grad_(True)
    value = task.log_f("cyan-triangle")(z)
    (grad,) = torch.autograd.grad(value.sum(), z)
    assert value.shape == (3,) and (value <= 0).all() and torch.isfinite(grad).all() and grad.abs().sum() > 0
    # a colour alone: CFG alone, no TFG term
    assert torch.equal(task.log_f("cyan")(z), torch.zeros(3))


def test_batch_bytes_grows_with_samples_cfg_and_guidance(task) -> None:
    plain = TFGConfig()
    cfg = TFGConfig(guidance_scale=3.0)
    guided = TFGConfig(guidance_scale=3.0, rho=1.0, mu=1.0)
    assert task.batch_bytes(64, plain, 50) < task.batch_bytes(64, cfg, 50) < task.batch_bytes(64, guided, 50)
    assert task.batch_bytes(128, guided, 50) > task.batch_bytes(64, guided, 50)


def test_a_short_guided_evaluation_runs(task) -> None:
    cfg = TFGConfig(guidance_scale=3.0, rho=1.0, mu=0.5, gamma=0.01, n_iter=2)
    result = evaluate(
        task, "cyan-triangle", cfg, n_samples=4, seed=0, num_inference_steps=3, return_samples=True
    )
    assert set(result.metrics) == set(task.metrics)
    assert result.samples.shape[0] == 4 and torch.isfinite(result.samples).all()
    for name in ("validity", "colour_validity", "shape_validity", "clean_rate", "fidelity"):
        assert 0.0 <= result.metrics[name] <= 1.0, name


def test_the_catalog_describes_the_task() -> None:
    assert describe("shapes-latent") == build_description("shapes-latent")
    assert describe("shapes-latent")["sample_shape"] == [4, 8, 8]


def test_the_trainer_refuses_a_vae_below_the_gate(tmp_path) -> None:
    with pytest.raises(TFGSearchError, match="gate"):
        train_shapes_latent(
            tmp_path, steps=1, vae_steps=2, gate_min=1.01, quality=False, gate_images=8, scale_images=64
        )
    meta = json.loads((tmp_path / "vae.json").read_text())
    assert meta["steps"] == 2 and meta["gate"]["images"] == 8 and 0 <= meta["gate"]["agreement"] <= 1
    vae = AutoencoderKL.from_pretrained(tmp_path / "vae", use_safetensors=True, low_cpu_mem_usage=False)
    assert vae.config.scaling_factor == pytest.approx(meta["scaling_factor"])
    assert not (tmp_path / "unet").exists()  # no UNet trained on a VAE that fails its gate

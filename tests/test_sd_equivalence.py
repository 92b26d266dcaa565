"""Text-conditional CFG against diffusers' own StableDiffusionPipeline (docs/algorithm.md, section 7).

A tiny random Stable-Diffusion-shaped folder (UNet2DConditionModel, AutoencoderKL, CLIPTextModel and
a tokenizer whose vocabulary the helper writes; nothing downloaded), loaded by both pipelines, in
float64, on the same latents, DDIM with eta 0 and no clipping, TFG strengths 0: the latents agree to
1e-10. Then the text case with TFG on, through the VAE decoder.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers import DDIMScheduler, StableDiffusionPipeline

from tests.helpers.tiny_pipelines import sd_pipeline
from tfg_search import Conditioning, LatentDecoder, TFGConfig, TFGPipeline, guided_sample


@pytest.fixture(scope="module")
def sd_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sd_pipeline(tmp_path_factory.mktemp("sd") / "pipe")


def _float64_without_clipping(pipe):
    """The pipeline in float64 with a DDIM scheduler that does not clip; the scheduler's own
    coefficients in float64 too (diffusers keeps them in float32, which rounds its steps at 1e-7)."""
    scheduler = DDIMScheduler.from_config(pipe.scheduler.config, clip_sample=False)
    scheduler.alphas_cumprod = scheduler.alphas_cumprod.to(torch.float64)
    scheduler.final_alpha_cumprod = scheduler.final_alpha_cumprod.to(torch.float64)
    pipe.scheduler = scheduler
    return pipe.to(torch.float64)


@pytest.mark.parametrize("negative_prompt", [None, "a dog"])
def test_cfg_on_text_is_stable_diffusions(sd_dir: Path, negative_prompt: str | None) -> None:
    sd = _float64_without_clipping(StableDiffusionPipeline.from_pretrained(sd_dir, safety_checker=None))
    tfg = _float64_without_clipping(TFGPipeline.from_pretrained(sd_dir))
    assert tfg.vae is not None and tfg.text_encoder is not None and tfg.sample_shape == (4, 8, 8)
    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    common = {
        "prompt": "a cat",
        "negative_prompt": negative_prompt,
        "guidance_scale": 3.0,
        "num_inference_steps": 8,
        "num_images_per_prompt": 2,
        "latents": latents,
        "output_type": "latent",
    }
    want = sd(**common, eta=0.0).images
    got = tfg(tfg_config=TFGConfig(eta=0.0, clip_x0=False), **common).images
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    prompt_embeds, negative_embeds = sd.encode_prompt("a cat", "cpu", 1, True, negative_prompt)
    cond, uncond = tfg.encode_prompt("a cat", negative_prompt, torch.device("cpu"))
    assert torch.equal(cond, prompt_embeds) and torch.equal(uncond, negative_embeds)


def test_tfg_on_text_guides_through_the_decoder(sd_dir: Path) -> None:
    """With TFG on, the pipeline is the sampler on latents with log f through the VAE decoder,
    with or without the decoder's gradient checkpointing (float64: the same samples)."""
    tfg = _float64_without_clipping(TFGPipeline.from_pretrained(sd_dir))
    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    config = TFGConfig(rho=0.5, mu=0.5, n_iter=2, clip_x0=False, guidance_scale=2.0)

    def predictor(x: torch.Tensor) -> torch.Tensor:  # toward brighter images
        return x.flatten(1).mean(1)

    common = {"num_inference_steps": 5, "num_images_per_prompt": 2, "latents": latents}
    kept = {}
    for checkpointing in (False, True):
        kept[checkpointing] = tfg(
            predictor=predictor,
            tfg_config=config,
            prompt="a cat",
            generator=torch.Generator().manual_seed(3),
            output_type="latent",
            gradient_checkpointing=checkpointing,
            **common,
        ).images
    torch.testing.assert_close(kept[True], kept[False], rtol=1e-10, atol=1e-10)
    cond, uncond = tfg.encode_prompt("a cat", None, torch.device("cpu"))
    decoder = LatentDecoder(tfg.vae)
    want = guided_sample(
        tfg.unet,
        tfg.scheduler,
        decoder.log_f(predictor),
        config,
        (2, 4, 8, 8),
        5,
        generator=torch.Generator().manual_seed(3),
        latents=latents,
        conditioning=Conditioning({"encoder_hidden_states": cond}, {"encoder_hidden_states": uncond}),
    )
    assert torch.equal(kept[False], want)
    images = tfg(
        predictor=predictor,
        tfg_config=config,
        prompt="a cat",
        generator=torch.Generator().manual_seed(3),
        output_type="pt",
        **common,
    ).images
    with torch.no_grad():
        assert torch.equal(images, (decoder(want) / 2 + 0.5).clamp(0, 1))
    plain = tfg(tfg_config=config.replace(rho=0.0, mu=0.0), prompt="a cat", output_type="pt", **common).images
    assert images.mean() > plain.mean()  # TFG moved the decoded images toward its target

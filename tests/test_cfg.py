"""Conditional denoisers and classifier-free guidance in the sampler (docs/algorithm.md, section 7).

Float64 wherever two computation orders are compared: strong guidance amplifies float32 rounding.
"""

from __future__ import annotations

import pytest
import torch
from diffusers import UNet2DModel

from tests.helpers.models import ddim, tiny_unet
from tfg_search import TFGConfig, guided_sample, guided_sample_many
from tfg_search.guidance import Conditioning

NULL = 3
"""The null class of the class-conditional UNet below (the unconditional branch of CFG)."""


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def class_unet(seed: int = 0, dtype: torch.dtype = torch.float64) -> UNet2DModel:
    """A random class-conditional 1x8x8 UNet2DModel with 4 class embeddings (3 is the null class),
    frozen as tasks freeze their models (a closure around it is then computed as the sampler
    computes the model itself: a parameter that requires grad changes the backward's kernels)."""
    return tiny_unet(seed, dtype, num_class_embeds=4).requires_grad_(False)


def labels(c: int) -> Conditioning:
    return Conditioning({"class_labels": torch.tensor([c])}, {"class_labels": torch.tensor([NULL])})


def log_f(x: torch.Tensor) -> torch.Tensor:
    return -((x - 0.3) ** 2).sum((1, 2, 3))


SHAPE = (3, 1, 8, 8)


def test_scale_one_without_condition_is_the_unconditional_sampler() -> None:
    """A Conditioning of no tensors calls model(x, t) exactly as no conditioning does (today's
    sampler, bit for bit), and an unconditional branch is never run at guidance_scale 1."""
    unet = tiny_unet(seed=4, dtype=torch.float64)
    cfg = TFGConfig(rho=0.2, mu=0.3, gamma=0.05, n_iter=2)
    plain = guided_sample(unet, ddim(), log_f, cfg, SHAPE, 6, generator=_gen(1))
    empty = guided_sample(unet, ddim(), log_f, cfg, SHAPE, 6, generator=_gen(1), conditioning=Conditioning())
    assert torch.equal(plain, empty)


def test_scale_one_runs_the_conditional_model_alone() -> None:
    unet = class_unet()
    cfg = TFGConfig(rho=0.2, mu=0.3, n_iter=2)

    def conditional(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return unet(x, t, class_labels=torch.tensor([1]).expand(x.shape[0])).sample

    x_t = torch.randn(SHAPE, generator=_gen(12), dtype=torch.float64)  # a callable has no dtype
    want = guided_sample(conditional, ddim(), log_f, cfg, SHAPE, 6, generator=_gen(2), latents=x_t)
    got = guided_sample(
        unet, ddim(), log_f, cfg, SHAPE, 6, generator=_gen(2), latents=x_t, conditioning=labels(1)
    )
    assert torch.equal(got, want)


def _diffusers_cfg_loop(unet: UNet2DModel, c: int, w: float, latents: torch.Tensor, steps: int):
    """CFG as diffusers pipelines write it: [uncond, cond] in one batch, then scheduler.step."""
    scheduler = ddim(clip_sample=False)
    scheduler.set_timesteps(steps)
    scheduler.alphas_cumprod = scheduler.alphas_cumprod.to(torch.float64)
    scheduler.final_alpha_cumprod = scheduler.final_alpha_cumprod.to(torch.float64)
    x = latents
    n = latents.shape[0]
    class_labels = torch.tensor([NULL] * n + [c] * n)
    with torch.no_grad():
        for t in scheduler.timesteps:
            out = unet(torch.cat([x, x]), t, class_labels=class_labels).sample
            out_u, out_c = out.chunk(2)
            eps = out_u + w * (out_c - out_u)
            x = scheduler.step(eps, t, x, eta=0.0).prev_sample
    return x


@pytest.mark.parametrize("w", [0.0, 3.0])
def test_class_label_cfg_is_diffusers_cfg(w: float) -> None:
    unet = class_unet(seed=5)
    latents = torch.randn(SHAPE, generator=_gen(6), dtype=torch.float64)
    want = _diffusers_cfg_loop(unet, 2, w, latents, 10)
    cfg = TFGConfig(eta=0.0, clip_x0=False, guidance_scale=w)
    got = guided_sample(unet, ddim(), log_f, cfg, SHAPE, 10, latents=latents, conditioning=labels(2))
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_tfg_acts_on_the_cfg_combined_prediction() -> None:
    """Variance guidance back-propagates through both branches: the sampler with CFG gives the
    samples of a plain (x, t) model that is the CFG combination."""
    unet = class_unet(seed=7)
    w = 2.5

    def combined(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        out = unet(torch.cat([x, x]), t.repeat(2), class_labels=torch.tensor([NULL] * n + [1] * n)).sample
        out_u, out_c = out.chunk(2)
        return out_u + w * (out_c - out_u)

    cfg = TFGConfig(rho=0.3, mu=0.2, gamma=0.05, n_iter=2, clip_x0=False)
    x_t = torch.randn(SHAPE, generator=_gen(13), dtype=torch.float64)
    want = guided_sample(combined, ddim(), log_f, cfg, SHAPE, 6, generator=_gen(3), latents=x_t)
    cfg_w = cfg.replace(guidance_scale=w)
    got = guided_sample(
        unet, ddim(), log_f, cfg_w, SHAPE, 6, generator=_gen(3), latents=x_t, conditioning=labels(1)
    )
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    plain = TFGConfig(clip_x0=False)
    unguided = guided_sample(combined, ddim(), log_f, plain, SHAPE, 6, generator=_gen(3), latents=x_t)
    assert not torch.allclose(got, unguided)  # TFG did act


def test_configurations_of_different_scales_batch_and_each_gets_its_own_samples() -> None:
    unet = class_unet(seed=8)
    configs = [
        TFGConfig(rho=0.1, mu=0.2, n_iter=2, guidance_scale=1.0),
        TFGConfig(rho=0.4, n_iter=2, guidance_scale=3.0, rho_schedule="decrease"),
        TFGConfig(mu=0.8, n_iter=2, guidance_scale=0.0),
        TFGConfig(rho=0.2, mu=0.1, n_iter=2, guidance_scale=7.5),
    ]
    per_sample = Conditioning(
        {"class_labels": torch.tensor([0, 1, 2])}, {"class_labels": torch.tensor([NULL])}
    )  # one class per sample of a configuration, one null class for all
    for conditioning in (labels(2), per_sample):
        seeds = (1, 2, 3, 4)
        many, errors = guided_sample_many(
            unet, ddim(), log_f, configs, SHAPE, [_gen(s) for s in seeds], 6, conditioning=conditioning
        )
        assert errors == [None] * 4
        for cfg, seed, got in zip(configs, seeds, many, strict=True):
            gen, cond = _gen(seed), conditioning
            alone = guided_sample(unet, ddim(), log_f, cfg, SHAPE, 6, generator=gen, conditioning=cond)
            # Batched and alone round differently (1e-16); strong CFG and guidance amplify it.
            torch.testing.assert_close(got, alone, rtol=1e-9, atol=1e-9)


def test_a_bfloat16_model_runs_in_its_dtype_and_the_guidance_in_float32() -> None:
    unet = class_unet(seed=9, dtype=torch.bfloat16)
    seen: list[torch.dtype] = []

    def by_hand(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        labels_ = torch.tensor([NULL] * n + [2] * n)
        out = unet(torch.cat([x, x]).to(torch.bfloat16), t.repeat(2), class_labels=labels_).sample.float()
        out_u, out_c = out.chunk(2)
        return out_u + 2.0 * (out_c - out_u)

    hook = unet.register_forward_pre_hook(lambda _m, args: seen.append(args[0].dtype))
    cfg = TFGConfig(rho=0.2, mu=0.2, n_iter=2, guidance_scale=2.0)
    got = guided_sample(unet, ddim(), log_f, cfg, SHAPE, 4, generator=_gen(4), conditioning=labels(2))
    hook.remove()
    assert got.dtype == torch.float32 and set(seen) == {torch.bfloat16}
    want = guided_sample(by_hand, ddim(), log_f, cfg.replace(guidance_scale=1.0), SHAPE, 4, generator=_gen(4))
    assert torch.equal(got, want)


def test_bad_conditioning_is_refused_with_what_to_do() -> None:
    unet = class_unet()
    cfg = TFGConfig(guidance_scale=3.0)
    only_cond = Conditioning({"class_labels": torch.tensor([1])})
    with pytest.raises(ValueError, match=r"guidance_scale 3.0 needs an unconditional branch"):
        guided_sample(unet, ddim(), log_f, cfg, SHAPE, 2, conditioning=only_cond)
    with pytest.raises(ValueError, match="needs an unconditional branch"):
        guided_sample(unet, ddim(), log_f, cfg, SHAPE, 2)
    bad_rows = Conditioning({"class_labels": torch.tensor([1, 2])}, {"class_labels": torch.tensor([NULL])})
    with pytest.raises(ValueError, match=r"'class_labels' has batch dimension 2; give 1 .* or 3"):
        guided_sample(unet, ddim(), log_f, cfg, SHAPE, 2, conditioning=bad_rows)
    with pytest.raises(ValueError, match="must name the same keywords"):
        Conditioning({"class_labels": torch.tensor([1])}, {"encoder_hidden_states": torch.zeros(1, 2, 4)})
    with pytest.raises(ValueError, match="guidance_scale must be a finite number >= 0"):
        TFGConfig(guidance_scale=-1.0)


def test_guidance_scale_round_trips_and_old_dicts_read_as_one() -> None:
    cfg = TFGConfig(rho=0.5, guidance_scale=4.0)
    assert TFGConfig.from_dict(cfg.to_dict()) == cfg and cfg.to_dict()["guidance_scale"] == 4.0
    old = {k: v for k, v in cfg.to_dict().items() if k != "guidance_scale"}  # stored before CFG existed
    assert TFGConfig.from_dict(old).guidance_scale == 1.0
    assert TFGConfig.preset("dps", 0.1).guidance_scale == 1.0

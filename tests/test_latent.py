"""Latent models (docs/algorithm.md, section 7): the decoder between the chain and log f, its
checkpointing, a latent conditional task through the service's evaluation, passes and memory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from diffusers import AutoencoderKL

from tasks.base import Task
from tests.helpers.models import ddim, tiny_unet
from tfg_search import TFGConfig
from tfg_search.guidance import Conditioning, LatentDecoder, sample_passes
from tfg_search.guidance.memory import saved_bytes
from tfg_search.run.evaluation import evaluate, evaluate_batch


def tiny_vae(seed: int = 0, dtype: torch.dtype = torch.float32) -> AutoencoderKL:
    """A random AutoencoderKL: 3x16x16 images <-> 1x8x8 latents, frozen."""
    torch.manual_seed(seed)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16),
        latent_channels=1,
        norm_num_groups=4,
        sample_size=16,
        scaling_factor=0.5,
    )
    return vae.to(dtype).eval().requires_grad_(False)


def pixel_log_f(x: torch.Tensor) -> torch.Tensor:
    return -((x - 0.2) ** 2).flatten(1).sum(1)


def test_the_decoder_is_the_vae_decode_of_scaled_latents() -> None:
    vae = tiny_vae(dtype=torch.float64)
    z = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    images = LatentDecoder(vae)(z)
    assert torch.equal(images, vae.decode(z / 0.5).sample) and images.shape == (2, 3, 16, 16)


def test_checkpointing_gives_the_same_values_and_gradients_and_keeps_less() -> None:
    vae = tiny_vae(dtype=torch.float64)
    z = torch.randn(3, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    results = {}
    for checkpointing in (False, True):
        log_f = LatentDecoder(vae, checkpointing=checkpointing).log_f(pixel_log_f)
        z_in = z.clone().requires_grad_(True)
        value = log_f(z_in)
        (grad,) = torch.autograd.grad(value.sum(), z_in)
        kept = saved_bytes(log_f, z.clone().requires_grad_(True))
        results[checkpointing] = (value.detach(), grad, kept)
    assert torch.equal(results[True][0], results[False][0])
    assert torch.equal(results[True][1], results[False][1])
    # Between the forward and the backward, the checkpointed decode keeps its input, not its
    # activations (here over 50x less; the GPU benchmark measures the peak).
    assert results[True][2] * 50 < results[False][2]
    assert not vae.is_gradient_checkpointing  # the VAE's own block checkpointing was restored


def test_a_bfloat16_vae_decodes_to_float32() -> None:
    vae = tiny_vae(dtype=torch.bfloat16)
    z = torch.randn(2, 1, 8, 8)
    images = LatentDecoder(vae)(z)
    assert images.dtype == torch.float32
    assert torch.equal(images, vae.decode((z / 0.5).to(torch.bfloat16)).sample.float())


NULL = 3


class TinyLatentTask(Task):
    """A class-conditional latent task: a 1x8x8-latent UNet with 4 class embeddings (3 = null),
    a tiny VAE to 3x16x16 images; target "k" conditions on class k and guides toward grey 0.2."""

    name = "tiny-latent"
    sample_shape = (1, 8, 8)
    image_shape = (3, 16, 16)
    clip_x0 = False
    num_inference_steps = 4

    def __init__(self, checkpointing: bool = False) -> None:
        self.unet = tiny_unet(seed=2, num_class_embeds=4).requires_grad_(False)
        self.vae = tiny_vae(seed=3)
        self.latent_decoder = LatentDecoder(self.vae, checkpointing=checkpointing)
        self.seen: list[torch.Tensor] = []

    @property
    def targets(self) -> list[str]:
        return ["0", "1", "2"]

    def diffusion(self, device: Any = None) -> tuple[Any, Any]:
        return self.unet, ddim()

    def conditioning(self, target: str, device: Any = None) -> Conditioning:
        c = int(self.parse_target(target))
        return Conditioning({"class_labels": torch.tensor([c])}, {"class_labels": torch.tensor([NULL])})

    def decoder(self, device: Any = None) -> LatentDecoder:
        return self.latent_decoder

    def log_f(self, target: str, device: Any = None) -> Any:
        return self.latent_decoder.log_f(pixel_log_f)

    def compute_metrics(self, samples: torch.Tensor, target: str) -> dict[str, float]:
        self.seen.append(samples)
        return {"validity": float((samples.mean((1, 2, 3)) > 0).double().mean())}


def test_a_latent_task_is_sampled_on_latents_and_judged_on_decoded_images() -> None:
    task = TinyLatentTask()
    cfg = TFGConfig(rho=0.5, mu=0.5, n_iter=2, guidance_scale=3.0)
    result = evaluate(task, "1", cfg, n_samples=3, seed=7, return_samples=True)
    assert task.seen[0].shape == (3, 3, 16, 16) and result.samples.shape == (3, 3, 16, 16)
    # the images are the decoded latents of the guided chain (run here by hand)
    from tfg_search.guidance import guided_sample

    latents = guided_sample(
        task.unet,
        ddim(),
        task.log_f("1"),
        cfg.replace(clip_x0=False),
        (3, 1, 8, 8),
        4,
        generator=torch.Generator().manual_seed(7),
        conditioning=task.conditioning("1"),
    )
    with torch.no_grad():
        assert torch.equal(result.samples, task.latent_decoder(latents))


def test_the_passes_of_a_latent_cfg_run_are_what_the_model_calls_spend() -> None:
    """Counts the samples through the denoiser (both branches) and the decoder, forward and with
    a backward, against sample_passes(decoder=True), for a batch of two configurations."""
    task = TinyLatentTask()
    counts = {"denoiser": 0, "denoiser_backward": 0, "decoder": 0, "decoder_backward": 0}

    def on_unet(_module: Any, args: tuple[Any, ...], _out: Any) -> None:
        counts["denoiser"] += args[0].shape[0]
        counts["denoiser_backward"] += args[0].shape[0] if args[0].requires_grad else 0

    def on_decoder(_module: Any, args: tuple[Any, ...], _out: Any) -> None:
        counts["decoder"] += args[0].shape[0]
        counts["decoder_backward"] += args[0].shape[0] if args[0].requires_grad else 0

    hooks = [task.unet.register_forward_hook(on_unet), task.latent_decoder.register_forward_hook(on_decoder)]
    configs = [
        TFGConfig(rho=0.5, mu=0.5, n_iter=3, n_recur=2, guidance_scale=3.0),
        TFGConfig(rho=0.2, mu=0.1, n_iter=3, n_recur=2, guidance_scale=1.0),
    ]
    evaluate_batch(task, "2", configs, n_samples=2, seeds=[1, 2])
    for h in hooks:
        h.remove()
    want = [sample_passes(c.replace(clip_x0=False), 4, 2, decoder=True) for c in configs]
    # one batched call runs the unconditional branch only for the configuration with scale != 1
    assert counts == {k: sum(w[k] for w in want) for k in counts}


def test_memory_estimate_grows_with_the_batch_and_counts_cfg_branches() -> None:
    task = TinyLatentTask()
    plain = TFGConfig(rho=1.0)
    cfg = plain.replace(guidance_scale=3.0)
    one, many = task.batch_bytes(1, cfg, 50), task.batch_bytes(65, cfg, 50)
    per_sample = (many - one) // 64
    assert per_sample > 0 and task.batch_bytes(129, cfg, 50) - many == 64 * per_sample  # linear in n
    plain_per_sample = (task.batch_bytes(65, plain, 50) - task.batch_bytes(1, plain, 50)) // 64
    assert plain_per_sample < per_sample  # the unconditional branch's activations
    weights = sum(p.numel() * 4 for m in (task.unet, task.vae) for p in m.parameters())
    assert one > weights
    ckpt = TinyLatentTask(checkpointing=True)  # its decoder's recomputation is counted as well
    assert abs(ckpt.batch_bytes(65, cfg, 50) - many) < many // 5


def test_model_identity_follows_configs_and_weights(tmp_path: Path) -> None:
    a, b = TinyLatentTask(), TinyLatentTask()
    assert a.model_identity() == b.model_identity()
    b.vae.decoder.conv_out.bias.data += 1e-6
    assert a.model_identity() != b.model_identity()
    a.unet.save_pretrained(tmp_path / "unet")  # the same weights loaded back: the same identity
    c = TinyLatentTask()
    c.unet = type(a.unet).from_pretrained(tmp_path / "unet")
    assert c.model_identity() == a.model_identity()


@pytest.mark.parametrize("name", ["gmm2d", "digits"])
def test_pixel_tasks_keep_their_defaults(name: str) -> None:
    from tasks import get_task

    task = get_task(name)
    assert task.conditioning(task.targets[0]) is None and task.decoder() is None
    assert task.image_shape == task.sample_shape

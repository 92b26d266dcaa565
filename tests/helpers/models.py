"""Small shared fixtures for tests: tiny random diffusers models and exact Gaussian problems."""

from __future__ import annotations

import torch
from diffusers import DDIMScheduler, UNet2DModel


def tiny_unet(
    seed: int = 0, dtype: torch.dtype = torch.float32, size: int = 8, num_class_embeds: int | None = None
) -> UNet2DModel:
    """A random 1-channel UNet2DModel of a few thousand parameters (CPU, milliseconds per call);
    class-conditional (``class_labels``) with ``num_class_embeds``."""
    torch.manual_seed(seed)
    unet = UNet2DModel(
        sample_size=size,
        in_channels=1,
        out_channels=1,
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=4,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        num_class_embeds=num_class_embeds,
    )
    return unet.to(dtype).eval()


def ddim(**kwargs: object) -> DDIMScheduler:
    """A DDIM scheduler with 1,000 training steps and the default linear betas."""
    return DDIMScheduler(num_train_timesteps=1000, **kwargs)


class GaussianDenoiser:
    """The exact epsilon of data x0 ~ N(m0, s0^2 I) under the scheduler's forward process.

    E[x0 | x_t] = m0 + sqrt(a) s0^2 / (a s0^2 + 1 - a) (x_t - sqrt(a) m0), and
    eps = (x_t - sqrt(a) E[x0 | x_t]) / sqrt(1 - a).
    """

    def __init__(self, scheduler: DDIMScheduler, m0: torch.Tensor, s0: float) -> None:
        self.acp = scheduler.alphas_cumprod.to(torch.float64)
        self.m0 = m0.to(torch.float64)
        self.s0 = s0

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = self.acp[t].to(x.dtype).reshape(-1, *([1] * (x.dim() - 1)))
        m0 = self.m0.to(x.dtype)
        x0 = m0 + a.sqrt() * self.s0**2 / (a * self.s0**2 + 1 - a) * (x - a.sqrt() * m0)
        return (x - a.sqrt() * x0) / (1 - a).sqrt()

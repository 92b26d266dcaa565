"""Small networks of the bundled tasks: the digits UNet and CNNs, the 2-D epsilon MLP, schedulers, and
the configs of the shapes UNets and of the shapes-latent VAE."""

from __future__ import annotations

import math

import torch
from diffusers import DDIMScheduler, UNet2DModel
from torch import nn

DIGITS_UNET_CONFIG: dict = {
    "sample_size": 8,
    "in_channels": 1,
    "out_channels": 1,
    "block_out_channels": (32, 64),
    "layers_per_block": 1,
    "down_block_types": ("DownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "UpBlock2D"),
    "norm_num_groups": 8,
}
SHAPES_UNET_CONFIG: dict = {
    "sample_size": 32,
    "in_channels": 3,
    "out_channels": 3,
    "block_out_channels": (16, 32, 64),
    "layers_per_block": 1,
    "down_block_types": ("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
    "up_block_types": ("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
    "attention_head_dim": 8,
    "norm_num_groups": 8,
}
"""The shapes UNet: 32x32 -> 16x16 -> 8x8, self-attention at 8x8 (and in the mid block), 0.69M
parameters. Sized for CPU: a forward + backward at batch 64 takes about 0.36 s on 2 cores, so a
guided 50-step trial of 64 samples is seconds, not milliseconds (docs/tasks.md)."""
SHAPES_VAE_CONFIG: dict = {
    "sample_size": 32,
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "block_out_channels": (16, 32, 64),
    "down_block_types": ("DownEncoderBlock2D",) * 3,
    "up_block_types": ("UpDecoderBlock2D",) * 3,
    "layers_per_block": 1,
    "norm_num_groups": 8,
    "mid_block_add_attention": False,
}
"""The ``shapes-latent`` VAE: a diffusers ``AutoencoderKL``, 32x32x3 -> 8x8x4 latents (two 2x
downsamplings), no attention, 0.65M parameters. Its ``scaling_factor`` is set after training to
1 / std of the latents (as Stable Diffusion's 0.18215). Sized for CPU: guidance back-propagates
through the decoder at every step (a decoder forward + backward at batch 64: about 0.18 s on 2
cores)."""
SHAPES_LATENT_UNET_CONFIG: dict = {
    "sample_size": 8,
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": (32, 64, 64),
    "layers_per_block": 1,
    "down_block_types": ("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
    "up_block_types": ("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    "attention_head_dim": 16,
    "norm_num_groups": 16,
    "num_class_embeds": 7,
}
"""The ``shapes-latent`` denoiser: a class-conditional ``UNet2DModel`` on 8x8x4 latents (8 -> 4 ->
2, self-attention at 4x4, 2x2 and in the mid block), 1.17M parameters; classes 0..5 are the six
colours of :data:`tasks.shapes_data.COLOURS`, class 6 the null class of classifier-free guidance."""
SHAPES_LATENT_NULL_CLASS = SHAPES_LATENT_UNET_CONFIG["num_class_embeds"] - 1
"""The class label of the unconditional branch (classifier-free guidance's null label)."""
SCHEDULER_CONFIG: dict = {
    "num_train_timesteps": 1000,
    "beta_schedule": "squaredcos_cap_v2",
    "clip_sample": False,
    "prediction_type": "epsilon",
    "set_alpha_to_one": True,
}


def make_scheduler() -> DDIMScheduler:
    """The DDIM scheduler shared by the bundled tasks (cosine noise schedule, 1,000 train steps)."""
    return DDIMScheduler(**SCHEDULER_CONFIG)


def build_digits_unet() -> UNet2DModel:
    """The 651k-parameter UNet2DModel for 8x8 digits (randomly initialised)."""
    return UNet2DModel(**DIGITS_UNET_CONFIG)


class DigitsCNN(nn.Module):
    """A small CNN on 8x8 images in [-1, 1] -> ``n_out`` logits (the guiding predictors)."""

    def __init__(self, n_out: int = 10, width: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.SiLU(),
            nn.AvgPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.SiLU(),
            nn.AvgPool2d(2),
            nn.Flatten(),
            nn.Linear(2 * width * 4, 128),
            nn.SiLU(),
            nn.Linear(128, n_out),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, n_out]`` of images ``[B, 1, 8, 8]``."""
        return self.net(x)


class ShapesCNN(nn.Module):
    """A small CNN on 32x32 RGB images in [-1, 1] -> ``n_out`` logits (a shapes guiding predictor).

    Width 16 keeps a forward + backward at batch 64 near 25 ms on 2 CPU cores (the guides run
    n_iter times per step, so they must stay cheaper than the UNet)."""

    def __init__(self, n_out: int, width: int = 16) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(width, width, 3, stride=2, padding=1),
            nn.SiLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
            nn.SiLU(),
            nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1),
            nn.SiLU(),
            nn.Flatten(),
            nn.Linear(2 * width * 16, 128),
            nn.SiLU(),
            nn.Linear(128, n_out),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, n_out]`` of images ``[B, 3, 32, 32]``."""
        return self.net(x)


class TimeMLP(nn.Module):
    """Epsilon model for 2-D points: an MLP on (x, sinusoidal embedding of t)."""

    def __init__(self, dim: int = 2, hidden: int = 128, emb: int = 32) -> None:
        super().__init__()
        self.emb = emb
        self.net = nn.Sequential(
            nn.Linear(dim + emb, hidden),
            nn.SiLU(),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
            nn.Linear(hidden, dim),
        )

    def forward(self, x: torch.Tensor, t: torch.Tensor | int | float) -> torch.Tensor:
        """Predicted noise for points ``x`` ``[B, 2]`` at integer timesteps ``t`` (scalar or ``[B]``)."""
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device).reshape(-1).expand(x.shape[0])
        half = self.emb // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=x.dtype, device=x.device) / half)
        ang = t[:, None] * freqs[None]
        return self.net(torch.cat([x, torch.sin(ang), torch.cos(ang)], dim=1))

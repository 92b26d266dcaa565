"""Small networks of the bundled tasks: the digits UNet and CNNs, the 2-D epsilon MLP, schedulers."""

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

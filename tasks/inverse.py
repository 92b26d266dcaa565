"""Inverse problems on held-out digits: ``digits-inpaint``, ``digits-superres``, ``digits-deblur``.

A target is an index ``i`` into the ``heldout`` split (297 images no model was trained on). The
measurement is y = A(x_i) + sigma_y * z (z drawn from a generator seeded with the index, so a target
always means the same y), and the guiding log-likelihood is the unsquared residual norm
log f(x) = -||y - A(x)||_2 per sample (docs/algorithm.md, section 1). The digits UNet is reused.

Operators A: inpaint keeps all pixels but the central 4x4 block; superres averages 2x2 blocks
(8x8 -> 4x4); deblur convolves with a normalised 3x3 Gaussian (std 1 pixel, replicate padding).

Metrics (against the ground-truth image x_i, on [-1, 1] so data_range = 2):
    validity: class consistency: fraction of samples the held-out PCA + SVC evaluator puts in the
        same class as it puts x_i.
    psnr: mean per-sample PSNR in dB (torchmetrics).
    ssim: mean per-sample SSIM (torchmetrics; Gaussian window std 0.5 for 8x8 images).
    residual: mean ||y - A(x)||_2 (the guiding loss; lower is better).
Default objective: mean of validity and ssim (both in [0, 1]).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from searchers.lattice import Lattice
from tasks.base import LogF, Task
from tasks.digits import DigitsModels, check_images
from tasks.digits_data import N_HELDOUT, split
from tasks.digits_eval import digits_evaluator
from tasks.nets import make_scheduler
from tfg_search.errors import TFGSearchError

NOISE_STD = 0.05


def inpaint_mask() -> torch.Tensor:
    """1 where a pixel is observed, 0 on the central 4x4 block; shape ``[1, 1, 8, 8]``."""
    mask = torch.ones(1, 1, 8, 8)
    mask[..., 2:6, 2:6] = 0.0
    return mask


def blur_kernel(std: float = 1.0) -> torch.Tensor:
    """Normalised 3x3 Gaussian kernel ``[1, 1, 3, 3]``."""
    r = torch.tensor([-1.0, 0.0, 1.0])
    g = torch.exp(-(r**2) / (2 * std**2))
    k = g[:, None] * g[None, :]
    return (k / k.sum())[None, None]


def op_inpaint(x: torch.Tensor) -> torch.Tensor:
    """Inpainting measurement: the observed pixels (masked image)."""
    return x * inpaint_mask().to(x.device, x.dtype)


def op_superres(x: torch.Tensor) -> torch.Tensor:
    """Super-resolution measurement: 2x2 average pooling."""
    return F.avg_pool2d(x, 2)


def op_deblur(x: torch.Tensor) -> torch.Tensor:
    """Deblurring measurement: 3x3 Gaussian blur with replicate padding."""
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), blur_kernel().to(x.device, x.dtype))


class _DigitsInverseTask(Task):
    """Shared machinery of the three digits inverse problems."""

    operator: ClassVar[str] = ""
    sample_shape = (1, 8, 8)
    num_inference_steps = 50
    clip_x0 = True
    metrics = ("validity", "psnr", "ssim", "residual")
    objective = ("validity", "ssim")
    # log f = -||r||_2 has a unit-norm gradient in measurement space: the reference scale fits.
    default_space: dict[str, Lattice] = {  # noqa: RUF012
        "rho": Lattice(0.25, 2.0, 8.0),
        "mu": Lattice(0.25, 2.0, 8.0),
        "gamma": Lattice(0.01, 10.0, 1.0),
    }
    default_strength_space: Lattice = Lattice(0.25, 2.0, 16.0)
    trained_by = "digits"

    def __init__(self, weights: str | Path | None = None) -> None:
        self.models = DigitsModels(weights)

    @staticmethod
    def apply(x: torch.Tensor) -> torch.Tensor:
        """The forward operator A."""
        raise NotImplementedError

    @property
    def targets(self) -> list[str]:
        return [str(i) for i in range(N_HELDOUT)]

    @property
    def targets_help(self) -> str:
        return f"0..{N_HELDOUT - 1} (index of a held-out image)"

    def parse_target(self, target: str) -> int:
        text = str(target).strip()
        try:
            index = int(text)
        except ValueError:
            raise TFGSearchError(
                f"target {target!r} of task {self.name!r} must be an integer in {self.targets_help}"
            ) from None
        if not 0 <= index < N_HELDOUT:
            raise TFGSearchError(
                f"target {index} of task {self.name!r} is out of range; valid: {self.targets_help}"
            )
        return index

    def ground_truth(self, target: str) -> torch.Tensor:
        """The held-out image ``[1, 1, 8, 8]`` of a target."""
        x, _ = split("heldout")
        return x[self.parse_target(target)][None]

    def measurement(self, target: str) -> torch.Tensor:
        """The noisy measurement y of a target (deterministic)."""
        return _measurement(type(self), self.parse_target(target))

    def model_folder(self) -> Path:
        """The diffusers folder of the model (its identity: :meth:`tasks.base.Task.model_identity`)."""
        return self.models.weights

    def diffusion(self, device: torch.device | str | None = None) -> tuple[Any, Any]:
        return self.models.unet(device), make_scheduler()

    def log_f(self, target: str, device: torch.device | str | None = None) -> LogF:
        y = self.measurement(target).to(torch.device(device or "cpu"))
        apply = self.apply

        def log_f(x: torch.Tensor) -> torch.Tensor:
            return -(y.to(x.dtype) - apply(x)).flatten(1).norm(dim=1)

        return log_f

    def reference(self, target: str) -> torch.Tensor:
        return self.ground_truth(target)

    def compute_metrics(self, samples: torch.Tensor, target: str) -> dict[str, float]:
        from torchmetrics.functional.image import (
            peak_signal_noise_ratio,
            structural_similarity_index_measure,
        )

        x = check_images(samples)
        gt = self.ground_truth(target).expand_as(x)
        ev = digits_evaluator()
        gt_class = int(ev.predict_proba(gt[:1]).argmax(1)[0])
        psnr = peak_signal_noise_ratio(x, gt, data_range=2.0, reduction="none", dim=(1, 2, 3))
        ssim = structural_similarity_index_measure(x, gt, data_range=2.0, sigma=0.5, reduction="none")
        residual = (self.measurement(target) - self.apply(x)).flatten(1).norm(dim=1)
        return {
            "validity": float((ev.predict_proba(x).argmax(1) == gt_class).double().mean()),
            "psnr": float(psnr.clamp(max=100.0).mean()),
            "ssim": float(ssim.mean()),
            "residual": float(residual.mean()),
        }


@lru_cache(maxsize=64)
def _measurement(cls: type[_DigitsInverseTask], index: int) -> torch.Tensor:
    x, _ = split("heldout")
    clean = cls.apply(x[index][None])
    gen = torch.Generator().manual_seed(10_000 + index)
    return clean + NOISE_STD * torch.randn(clean.shape, generator=gen)


class DigitsInpaintTask(_DigitsInverseTask):
    """Fill in the central 4x4 block of a held-out digit."""

    name = "digits-inpaint"
    description = "inpaint the central 4x4 block of a held-out digit; log f = -||y - A(x)||"
    apply = staticmethod(op_inpaint)


class DigitsSuperresTask(_DigitsInverseTask):
    """Recover a held-out 8x8 digit from its 4x4 average-pooled version."""

    name = "digits-superres"
    description = "2x super-resolution (4x4 -> 8x8) of a held-out digit; log f = -||y - A(x)||"
    apply = staticmethod(op_superres)


class DigitsDeblurTask(_DigitsInverseTask):
    """Recover a held-out digit from a 3x3 Gaussian blur."""

    name = "digits-deblur"
    description = "deblur (3x3 Gaussian, std 1) a held-out digit; log f = -||y - A(x)||"
    apply = staticmethod(op_deblur)

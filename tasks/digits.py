"""``digits``: label guidance of an 8x8 digits UNet (scikit-learn's bundled digits), targets 0..9.

Models (weights in ``tasks/weights/digits/``, trained by ``tfg-search train digits``):

* a diffusers ``UNet2DModel`` (block_out_channels (32, 64), one layer per block, 651k parameters)
  trained on the ``train`` split, with a ``DDIMScheduler`` (cosine schedule, 1,000 steps): a
  diffusers pipeline folder (``unet/``, ``scheduler/``, ``model_index.json``) that
  ``TFGPipeline.from_pretrained`` loads; ``unet.json`` is its training record;
* the guiding predictor: a small CNN trained on the ``guide`` split; log f = log_softmax(cnn(x))[y];
* the held-out evaluator: PCA + RBF SVC trained on the disjoint ``eval`` split
  (:mod:`tasks.digits_eval`), another model family, so adversarial gradients of the CNN do not pay.

Metrics:
    validity: fraction of samples the SVC classifies as the target.
    target_prob: mean SVC probability of the target.
    guide_accuracy: fraction the guiding CNN classifies as the target (for diagnosis only: strong
        guidance drives it to 1 with adversarial images while validity falls).
    fd: Frechet distance (torchmetrics ``FrechetInceptionDistance`` with the evaluator's whitened PCA
        features) to all real images of the target class; lower is better.
    fidelity: exp(-fd / fd_ref) in (0, 1]; fd_ref = fd of the real images of *all* classes, i.e. of a
        perfect unconditional sampler. ~0.37 for unguided sampling, -> 1 for a perfect conditional.
    diversity: mean pairwise feature distance of the samples / that of the real target class.

Default objective: mean of validity and fidelity (both in [0, 1]); it peaks at a middle strength.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from diffusers import DDIMScheduler, UNet2DModel

from searchers.lattice import Lattice
from tasks.base import LogF, Task, cached, exp_fidelity, frozen
from tasks.base import check_images as base_check_images
from tasks.digits_data import digits_tensors
from tasks.digits_eval import digits_evaluator
from tasks.nets import DigitsCNN
from tasks.weights import load_pipeline_unet, load_weights, weights_dir

DIGITS_SPACE: dict[str, Lattice] = {
    "rho": Lattice(0.02, 2.0, 0.64),
    "mu": Lattice(0.02, 2.0, 0.64),
    "gamma": Lattice(0.01, 10.0, 1.0),
}
"""Lattice for log f of a CNN's log-softmax on [-1, 1] pixels (the reference one starts saturated).

Six values per strength, so that the default six rounds of the beam (each round moves one lattice
step) can reach every value of an axis; an earlier 0.005..0.64 lattice left the grid's best digits
configurations out of the beam's reach (benchmarks/search_efficiency.py)."""


def frechet_distance(fake: torch.Tensor, real: torch.Tensor) -> float:
    """Frechet distance between two image sets on the held-out evaluator's PCA features.

    Uses torchmetrics' ``FrechetInceptionDistance`` with a custom feature extractor.
    """
    from torchmetrics.image.fid import FrechetInceptionDistance

    fid = FrechetInceptionDistance(
        feature=digits_evaluator().features, normalize=True, input_img_size=(1, 8, 8)
    )
    fid.update(real.detach().cpu().float(), real=True)
    fid.update(fake.detach().cpu().float(), real=False)
    return float(fid.compute())


def feature_spread(x: torch.Tensor) -> float:
    """Mean pairwise Euclidean distance of images on the evaluator's features."""
    f = digits_evaluator().features(x)
    if len(f) < 2:
        return 0.0
    d = torch.cdist(f, f)
    return float(d.sum() / (len(f) * (len(f) - 1)))


@lru_cache(maxsize=10)
def class_images(y: int) -> torch.Tensor:
    """All real images of class ``y`` (every split; the reference for fidelity)."""
    x, labels = digits_tensors()
    return x[labels == y]


@lru_cache(maxsize=10)
def fd_scale(y: int) -> float:
    """The Frechet distance of a perfect unconditional sampler (all real images) to class ``y``."""
    x, _ = digits_tensors()
    return frechet_distance(x, class_images(y))


@lru_cache(maxsize=10)
def _spread_real(y: int) -> float:
    return feature_spread(class_images(y))


class DigitsModels:
    """Loads (once per process and device) the shared digits UNet and guiding CNNs."""

    task_name = "digits"

    def __init__(self, weights: str | Path | None = None) -> None:
        self.weights = Path(weights) if weights else weights_dir("digits")

    def unet(self, device: torch.device | str | None = None) -> UNet2DModel:
        """The digits UNet on ``device`` (frozen), from the folder's ``unet/``."""
        dev = str(torch.device(device or "cpu"))

        def build() -> UNet2DModel:
            return frozen(load_pipeline_unet(self.weights, self.task_name), dev)

        return cached(("digits-unet", str(self.weights), dev), build)

    def scheduler(self) -> DDIMScheduler:
        """A fresh DDIM scheduler from the folder's ``scheduler/``."""
        return DDIMScheduler.from_pretrained(self.weights / "scheduler")

    def cnn(self, name: str, n_out: int, device: torch.device | str | None = None) -> DigitsCNN:
        """A guiding CNN (``classifier`` or ``thickness``) on ``device`` (frozen)."""
        dev = str(torch.device(device or "cpu"))

        def build() -> DigitsCNN:
            state, _ = load_weights(self.weights, name, self.task_name)
            net = DigitsCNN(n_out)
            net.load_state_dict(state)
            return frozen(net, dev)

        return cached((f"digits-{name}", str(self.weights), dev), build)


class DigitsTask(Task):
    """Class-label guidance on 8x8 digits, judged by a PCA + SVC evaluator."""

    name = "digits"
    description = "8x8 digits UNet; a CNN guides the class, a PCA+SVC (other split) judges"
    sample_shape = (1, 8, 8)
    num_inference_steps = 50
    clip_x0 = True
    metrics = ("validity", "target_prob", "guide_accuracy", "fd", "fidelity", "diversity")
    objective = ("validity", "fidelity")
    default_space = DIGITS_SPACE
    default_strength_space: Lattice = Lattice(0.02, 2.0, 1.28)

    trainer = "tasks.training:train_digits"

    def __init__(self, weights: str | Path | None = None) -> None:
        self.models = DigitsModels(weights)

    @property
    def targets(self) -> list[str]:
        return [str(k) for k in range(10)]

    @property
    def targets_help(self) -> str:
        return "0..9 (digit class)"

    def parse_target(self, target: str) -> int:
        return int(super().parse_target(target))

    def model_folder(self) -> Path:
        """The diffusers folder of the model (its identity: :meth:`tasks.base.Task.model_identity`)."""
        return self.models.weights

    def diffusion(self, device: torch.device | str | None = None) -> tuple[Any, Any]:
        return self.models.unet(device), self.models.scheduler()

    def log_f(self, target: str, device: torch.device | str | None = None) -> LogF:
        y = self.parse_target(target)
        cnn = self.models.cnn("classifier", 10, device)

        def log_f(x: torch.Tensor) -> torch.Tensor:
            return torch.log_softmax(cnn(x), dim=1)[:, y]

        return log_f

    def reference(self, target: str) -> torch.Tensor:
        return class_images(self.parse_target(target))

    def compute_metrics(self, samples: torch.Tensor, target: str) -> dict[str, float]:
        y = self.parse_target(target)
        x = check_images(samples)
        probs = digits_evaluator().predict_proba(x)
        cnn = self.models.cnn("classifier", 10, "cpu")
        with torch.no_grad():
            guide_pred = cnn(x).argmax(1)
        fd = frechet_distance(x, class_images(y))
        return {
            "validity": float((probs.argmax(1) == y).double().mean()),
            "target_prob": float(probs[:, y].mean()),
            "guide_accuracy": float((guide_pred == y).double().mean()),
            "fd": fd,
            "fidelity": exp_fidelity(fd, fd_scale(y)),
            "diversity": feature_spread(x) / _spread_real(y),
        }


def check_images(samples: torch.Tensor) -> torch.Tensor:
    """Digits samples ``[B, 1, 8, 8]`` as float32 CPU images in [-1, 1] (:func:`tasks.base.check_images`)."""
    return base_check_images(samples, (1, 8, 8), "digits")

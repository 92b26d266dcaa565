"""``shapes``: attribute guidance of a 32x32 RGB UNet toward rare colour-shape pairs.

A CIFAR-sized problem with CelebA-like rare attribute pairs, trained here on procedural data
(:mod:`tasks.shapes_data`): one circle, square or triangle in one of six colours on a dark
background, with the pairs skewed on purpose (``cyan-triangle`` is 0.5% of the training data,
``yellow-triangle`` 1%, ``red-circle`` 10%; :data:`tasks.shapes_data.PAIR_RATES`).

Models (in ``tasks/weights/shapes/``, trained by ``tfg-search train shapes``):

* a diffusers ``UNet2DModel`` (32x32 -> 16x16 -> 8x8, attention at 8x8, 0.69M parameters) in
  ``unet/`` and its ``DDIMScheduler`` in ``scheduler/``, both loaded with ``from_pretrained`` like a
  user's model;
* guiding predictors: two small CNNs (colour, shape) trained on balanced clean images;
  log f = :data:`LOG_F_SCALE` x (log p_colour(c | x) + log p_shape(s | x)) for a pair, one term for a
  single attribute (``red``, ``triangle``);
* held-out judges of another family: analytic readouts of the foreground mask, its mean hue and its
  geometry (:mod:`tasks.shapes_judge`), which no gradient can fool.

Metrics:
    validity: the judges read the target colour and shape (both, for a pair).
    colour_validity, shape_validity: each attribute alone (1.0 where the target does not fix it).
    clean_rate: share of samples that are one connected blob.
    guide_accuracy: share the guiding CNNs classify as the target (diagnosis only).
    fd: Frechet distance (torchmetrics) on the judges' features to real images of the target.
    fidelity: exp(-fd / fd_ref) in (0, 1]; fd_ref = fd of real images of the *whole* (skewed) data,
        i.e. of a perfect unconditional sampler: ~0.37 unguided, -> 1 for a perfect conditional.

Default objective: the mean of validity and fidelity.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from searchers.lattice import Lattice
from tasks.base import LogF, Task, cached, check_images, exp_fidelity, frozen
from tasks.nets import ShapesCNN
from tasks.shapes_data import (
    COLOURS,
    SHAPES,
    all_targets,
    indices,
    labels_match,
    parse_pair,
    render_batch,
)
from tasks.shapes_judge import FEATURE_NAMES, judge
from tasks.weights import load_weights, weights_dir
from tfg_search.errors import TFGSearchError

LOG_F_SCALE = 1.0
"""Multiplies the guides' log-probabilities, so that the ordinary (rho, mu) ladder
(0.25, 0.06) .. (16, 4) spans weak to strong guidance on this task (docs/tasks.md)."""

SHAPES_SPACE: dict[str, Lattice] = {
    "rho": Lattice(0.25, 2.0, 16.0, zero=True),
    "mu": Lattice(0.06, 2.0, 16.0, zero=True),
    "gamma": Lattice(0.01, 10.0, 1.0, zero=True),
}
"""Default lattice: 0 ("off") and the acceptance ladder's range (0.25, 0.06) .. (16, 4) of rho and
mu, mu on to 15.36, gamma 0, 0.01, 0.1, 1: 8 x 10 x 4 = 320 points. The rare pairs' best points
sit at mu 0.48-3.84 with rho at most 0.25 (the tabular benchmark of benchmarks/_table.py judges
every point: docs/benchmarks-search.md)."""

FEATURE_STD_FLOOR = 0.1
FEATURE_CLIP = 4.0
"""Standardised features are clipped to +-4: an image with no object reads 0 for its geometry,
10-17 standard deviations from any real image, and a few of them (measured: 6 empty images of 48
guided yellow triangles) drove the Frechet distance to 4.4 x its reference (fidelity 0.01) while
the other 42 were good triangles. Clipped, such an image still counts as far off, but as one
image, not as the whole set."""
N_REFERENCE = 1024
REFERENCE_SEED = 424_242
FEATURE_STATS_SEED = 515_151


@lru_cache(maxsize=1)
def feature_stats() -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std of the judges' features over 4,096 real (skewed) images: the FD's whitening.

    The std has a floor of :data:`FEATURE_STD_FLOOR`: some features hardly vary on real images
    (one blob, a flat background), and a tiny std would turn any generated deviation into an
    astronomical distance."""
    x, _, _ = render_batch(4096, FEATURE_STATS_SEED)
    f = judge(x).features
    return f.mean(0), f.std(0).clamp(min=FEATURE_STD_FLOOR)


class JudgeFeatures(torch.nn.Module):
    """Standardised, clipped (:data:`FEATURE_CLIP`) judge features of images ``[B, 3, 32, 32]``
    -> ``[B, 17]`` (float64, for torchmetrics)."""

    num_features = len(FEATURE_NAMES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Features of a batch (no gradient: the judges are analytic)."""
        mean, std = feature_stats()
        return ((judge(x).features - mean) / std).clamp(-FEATURE_CLIP, FEATURE_CLIP)


@lru_cache(maxsize=64)
def reference_images(target: str) -> torch.Tensor:
    """1,024 real images of ``target`` (a fixed seed; pair, colour, shape, or ``"*"`` for all data)."""
    colour, shape = (None, None) if target == "*" else parse_pair(target)
    x, _, _ = render_batch(N_REFERENCE, REFERENCE_SEED, colour=colour, shape=shape)
    return x


@lru_cache(maxsize=64)
def _fid(target: str) -> Any:
    """A torchmetrics FID on judge features whose real side (the target's images) is computed once."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    fid = FrechetInceptionDistance(
        feature=JudgeFeatures(), normalize=True, input_img_size=(3, 32, 32), reset_real_features=False
    )
    fid.update(reference_images(target), real=True)
    return fid


def frechet_distance(samples: torch.Tensor, target: str) -> float:
    """Frechet distance between ``samples`` and the real images of ``target`` on judge features."""
    fid = _fid(target)
    fid.reset()  # keeps the real features
    fid.update(samples.detach().cpu().float(), real=False)
    return float(fid.compute())


@lru_cache(maxsize=64)
def fd_scale(target: str) -> float:
    """The Frechet distance of a perfect unconditional sampler (the whole skewed data) to ``target``."""
    return frechet_distance(reference_images("*"), target)


class ShapesTask(Task):
    """Colour / shape guidance on 32x32 RGB images, judged analytically."""

    name = "shapes"
    description = "32x32 RGB UNet, rare colour-shape pairs (e.g. cyan-triangle: 0.5%); analytic judges"
    sample_shape = (3, 32, 32)
    num_inference_steps = 50
    clip_x0 = True
    metrics = (
        "validity",
        "colour_validity",
        "shape_validity",
        "clean_rate",
        "guide_accuracy",
        "fd",
        "fidelity",
    )
    objective = ("validity", "fidelity")
    default_space = SHAPES_SPACE
    default_strength_space: Lattice = Lattice(0.25, 2.0, 16.0)
    search_samples = 32
    final_samples = 128

    trainer = "tasks.shapes_training:train_shapes"

    def __init__(self, weights: str | Path | None = None) -> None:
        self.weights = Path(weights) if weights else weights_dir("shapes")

    @property
    def targets(self) -> list[str]:
        return all_targets()

    @property
    def targets_help(self) -> str:
        return (
            f"COLOUR-SHAPE (e.g. cyan-triangle, rare: 0.5%), a colour ({', '.join(COLOURS)}) "
            f"or a shape ({', '.join(SHAPES)})"
        )

    def parse_target(self, target: str) -> tuple[int | None, int | None]:
        try:
            return indices(*parse_pair(target))
        except ValueError as err:
            raise TFGSearchError(f"task {self.name!r}: {err}") from None

    # -- models ------------------------------------------------------------------------------
    def model_folder(self) -> Path:
        """The diffusers folder of the model (its identity: :meth:`tasks.base.Task.model_identity`)."""
        return self.weights

    def diffusion(self, device: torch.device | str | None = None) -> tuple[Any, Any]:
        from diffusers import DDIMScheduler, UNet2DModel

        dev = str(torch.device(device or "cpu"))
        folder = self.weights

        def build() -> UNet2DModel:
            if not (folder / "unet" / "config.json").is_file():
                raise TFGSearchError(
                    f"task 'shapes': no UNet in {folder / 'unet'}; train it with "
                    f"`tfg-search train shapes --out {folder}`"
                )
            unet = UNet2DModel.from_pretrained(folder / "unet", use_safetensors=True, low_cpu_mem_usage=False)
            return frozen(unet, dev)

        unet = cached(("shapes-unet", str(folder), dev), build)
        return unet, DDIMScheduler.from_pretrained(folder / "scheduler")

    def guide(self, name: str, device: torch.device | str | None = None) -> ShapesCNN:
        """The ``colour`` or ``shape`` guiding CNN on ``device`` (frozen)."""
        dev = str(torch.device(device or "cpu"))
        n_out = len(COLOURS) if name == "colour" else len(SHAPES)

        def build() -> ShapesCNN:
            state, _ = load_weights(self.weights, name, self.name)
            net = ShapesCNN(n_out)
            net.load_state_dict(state)
            return frozen(net, dev)

        return cached((f"shapes-{name}", str(self.weights), dev), build)

    def log_f(self, target: str, device: torch.device | str | None = None) -> LogF:
        colour, shape = self.parse_target(target)
        colour_net = self.guide("colour", device) if colour is not None else None
        shape_net = self.guide("shape", device) if shape is not None else None

        def log_f(x: torch.Tensor) -> torch.Tensor:
            total = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
            if colour_net is not None:
                total = total + torch.log_softmax(colour_net(x), dim=1)[:, colour]
            if shape_net is not None:
                total = total + torch.log_softmax(shape_net(x), dim=1)[:, shape]
            return LOG_F_SCALE * total

        return log_f

    def reference(self, target: str) -> torch.Tensor:
        self.parse_target(target)
        return reference_images(str(target).strip().lower())

    # -- judging -----------------------------------------------------------------------------
    def compute_metrics(self, samples: torch.Tensor, target: str) -> dict[str, float]:
        colour, shape = self.parse_target(target)
        key = str(target).strip().lower()
        x = check_images(samples, self.sample_shape, self.name)
        verdict = judge(x)
        with torch.no_grad():
            guide_c = self.guide("colour", "cpu")(x).argmax(1) if colour is not None else verdict.colour
            guide_s = self.guide("shape", "cpu")(x).argmax(1) if shape is not None else verdict.shape
        colour_ok = verdict.colour == colour if colour is not None else torch.ones(len(x), dtype=torch.bool)
        shape_ok = verdict.shape == shape if shape is not None else torch.ones(len(x), dtype=torch.bool)
        fd = frechet_distance(x, key)
        return {
            "validity": float((colour_ok & shape_ok).double().mean()),
            "colour_validity": float(colour_ok.double().mean()),
            "shape_validity": float(shape_ok.double().mean()),
            "clean_rate": float(verdict.clean.double().mean()),
            "guide_accuracy": float(labels_match(guide_c, guide_s, (colour, shape)).double().mean()),
            "fd": fd,
            "fidelity": exp_fidelity(fd, fd_scale(key)),
        }

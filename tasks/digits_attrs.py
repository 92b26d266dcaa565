"""``digits-attrs``: two attributes guided at once, the digit class and the stroke thickness.

Thickness is derived from ink mass (the sum of the 0..16 pixel intensities): ``thin`` below the
data set's 25th percentile, ``thick`` above its 75th (``tasks.digits_data.thickness_label``).
Targets are pairs ``"<class>+<thin|thick>"``; several are rare in the data, e.g. ``7+thick`` (1.4%
of all images), ``4+thick`` (1.6%) and ``8+thin`` (1.1%); :func:`target_share` gives each share.

Each attribute has its own guiding and held-out predictor:

* class: guiding CNN (``guide`` split) / PCA + SVC (``eval`` split), as in ``digits``;
* thickness: guiding CNN trained on thin/medium/thick labels (``guide`` split) / the exact
  ink-mass rule applied to the sample (a different family: no learned parameters).

log f = log p_cnn(class | x) + log p_thick_cnn(thickness | x) (a product of likelihoods).

Metrics:
    validity: joint success: the SVC says the class AND the ink rule says the thickness.
    class_validity, thickness_validity: each attribute's held-out success rate.
    fd, fidelity: as in ``digits``, against all real images of the target class.
Default objective: mean of validity and fidelity.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from searchers.lattice import Lattice
from tasks.base import LogF, Task, exp_fidelity
from tasks.digits import (
    DIGITS_SPACE,
    DigitsModels,
    check_images,
    class_images,
    fd_scale,
    frechet_distance,
)
from tasks.digits_data import THICKNESS_NAMES, digits_tensors, thickness_label
from tasks.digits_eval import digits_evaluator
from tasks.nets import make_scheduler
from tfg_search.errors import TFGSearchError

GUIDED_THICKNESS = ("thin", "thick")


@lru_cache(maxsize=32)
def target_share(digit: int, thickness: str) -> float:
    """Share of the whole data set that has this class and thickness."""
    x, y = digits_tensors()
    t = thickness_label(x)
    return float(((y == digit) & (t == THICKNESS_NAMES.index(thickness))).double().mean())


class DigitsAttrsTask(Task):
    """Joint guidance of digit class and stroke thickness."""

    name = "digits-attrs"
    description = "class + stroke thickness at once (e.g. rare 7+thick); two guides, two judges"
    sample_shape = (1, 8, 8)
    num_inference_steps = 50
    clip_x0 = True
    metrics = ("validity", "class_validity", "thickness_validity", "fd", "fidelity")
    objective = ("validity", "fidelity")
    default_space = DIGITS_SPACE
    default_strength_space: Lattice = Lattice(0.02, 2.0, 1.28)

    trained_by = "digits"

    def __init__(self, weights: str | Path | None = None) -> None:
        self.models = DigitsModels(weights)

    @property
    def targets(self) -> list[str]:
        return [f"{d}+{t}" for d in range(10) for t in GUIDED_THICKNESS]

    @property
    def targets_help(self) -> str:
        return "<digit 0..9>+<thin|thick>, e.g. 7+thick (rare: 1.4% of the data)"

    def parse_target(self, target: str) -> tuple[int, int]:
        text = str(target).strip().lower()
        if text not in self.targets:
            raise TFGSearchError(
                f"unknown target {target!r} for task {self.name!r}; valid: {self.targets_help}"
            )
        digit, thickness = text.split("+")
        return int(digit), THICKNESS_NAMES.index(thickness)

    def model_folder(self) -> Path:
        """The diffusers folder of the model (its identity: :meth:`tasks.base.Task.model_identity`)."""
        return self.models.weights

    def diffusion(self, device: torch.device | str | None = None) -> tuple[Any, Any]:
        return self.models.unet(device), make_scheduler()

    def log_f(self, target: str, device: torch.device | str | None = None) -> LogF:
        digit, thick = self.parse_target(target)
        cls_cnn = self.models.cnn("classifier", 10, device)
        thick_cnn = self.models.cnn("thickness", len(THICKNESS_NAMES), device)

        def log_f(x: torch.Tensor) -> torch.Tensor:
            return (
                torch.log_softmax(cls_cnn(x), dim=1)[:, digit]
                + torch.log_softmax(thick_cnn(x), dim=1)[:, thick]
            )

        return log_f

    def reference(self, target: str) -> torch.Tensor:
        digit, thick = self.parse_target(target)
        real = class_images(digit)
        return real[thickness_label(real) == thick]

    def compute_metrics(self, samples: torch.Tensor, target: str) -> dict[str, float]:
        digit, thick = self.parse_target(target)
        x = check_images(samples)
        cls_ok = digits_evaluator().predict_proba(x).argmax(1) == digit
        thick_ok = thickness_label(x) == thick
        fd = frechet_distance(x, class_images(digit))
        return {
            "validity": float((cls_ok & thick_ok).double().mean()),
            "class_validity": float(cls_ok.double().mean()),
            "thickness_validity": float(thick_ok.double().mean()),
            "fd": fd,
            "fidelity": exp_fidelity(fd, fd_scale(digit)),
        }

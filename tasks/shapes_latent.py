"""``shapes-latent``: a colour-conditional latent diffusion model (VAE + UNet, CFG) guided toward a shape.

The ``shapes`` data (:mod:`tasks.shapes_data`: one coloured circle, square or triangle, 32x32 RGB,
the pairs skewed on purpose) learnt the way practitioners' models are built today: a diffusers
``AutoencoderKL`` (32x32x3 images <-> 8x8x4 latents) around a ``UNet2DModel`` conditioned on the
colour (class labels 0..5, the null class 6 for classifier-free guidance). A target
``COLOUR-SHAPE`` means: condition on the colour (CFG), guide the shape with TFG, judged on decoded
images by the analytic judges of :mod:`tasks.shapes_judge`. The condition cannot give a shape that
is rare *within its colour* (:data:`CONDITIONAL_RARE_PAIRS`: ``cyan-triangle`` is 3.8% of the cyan
images): that is TFG's part.

Models (in ``tasks/weights/shapes-latent/``, trained by ``tfg-search train shapes-latent``;
:mod:`tasks.shapes_latent_training`): ``vae/``, ``unet/``, ``scheduler/`` and a
``model_index.json``. The guide is the ``shapes`` task's shape CNN (``tasks/weights/shapes/``,
trained on clean pixels): log f(z) = log p_shape(shape | D(z)), the gradient flowing through the
VAE decoder D (the TFG paper's Stable Diffusion tasks do the same); a colour-only target has no TFG
term (log f = 0: CFG alone).

Metrics: those of the ``shapes`` task (:meth:`tasks.shapes.ShapesTask.compute_metrics`) on the
decoded images.

Example:
    >>> task = ShapesLatentTask()
    >>> task.parse_target("cyan-triangle"), task.sample_shape, task.image_shape
    ((5, 2), (4, 8, 8), (3, 32, 32))
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from searchers.lattice import Lattice
from tasks.base import LogF, Task, cached, frozen
from tasks.nets import SHAPES_LATENT_NULL_CLASS
from tasks.shapes import ShapesTask
from tasks.shapes_data import COLOURS, PAIR_RATES, SHAPES, indices, pair_rate, parse_pair
from tasks.weights import weights_dir
from tfg_search.errors import TFGSearchError
from tfg_search.guidance.conditioning import Conditioning
from tfg_search.guidance.latent import LatentDecoder

LATENT_SHAPE = (4, 8, 8)
"""One latent of the VAE (:data:`tasks.nets.SHAPES_VAE_CONFIG`): 32x32x3 images -> 8x8x4."""
IMAGE_SHAPE = (3, 32, 32)


def shape_share(colour: str, shape: str) -> float:
    """Share of ``shape`` among the training images of ``colour``: what a colour-conditioned model
    draws when it follows its data.

    Example:
        >>> round(shape_share("cyan", "triangle"), 3)
        0.038
    """
    return PAIR_RATES[(colour, shape)] / pair_rate(colour, None)


CONDITIONAL_RARE_PAIRS: tuple[str, ...] = tuple(
    f"{c}-{s}" for _, c, s in sorted((shape_share(c, s), c, s) for c in COLOURS for s in SHAPES)[:3]
)
"""The three pairs whose shape is rarest within their colour (rarest first): ``cyan-triangle``
3.8%, ``yellow-triangle`` 6.7%, ``blue-square`` 11%."""

SHAPES_LATENT_SPACE: dict[str, Lattice] = {
    "rho": Lattice(0.25, 2.0, 16.0, zero=True),
    "mu": Lattice(0.06, 2.0, 16.0, zero=True),
    "gamma": Lattice(0.01, 10.0, 1.0, zero=True),
}
"""Default lattice (docs/tasks.md): the ``shapes`` task's, as the guide and its log f scale are
the same (the gradient reaches the latents through the decoder)."""
SHAPES_LATENT_GUIDANCE_SPACE = Lattice(1.0, 2.0, 8.0)
"""The CFG weights a search varies (1 = the colour-conditional model alone, 2, 4, 8): the range of
diffusers' usual weights that a 7-way class embedding needs (docs/tasks.md)."""


class ShapesLatentTask(Task):
    """Colour by CFG, shape by TFG, on a latent diffusion model of the shapes data."""

    name = "shapes-latent"
    description = (
        "latent (VAE 8x8x4) UNet conditioned on colour with CFG; TFG guides the shape "
        "(rare within its colour: cyan-triangle 3.8%); analytic judges on decoded images"
    )
    sample_shape = LATENT_SHAPE
    image_shape = IMAGE_SHAPE
    num_inference_steps = 50
    clip_x0 = False
    metrics = ShapesTask.metrics
    objective = ShapesTask.objective
    default_space = SHAPES_LATENT_SPACE
    default_strength_space: Lattice = Lattice(0.25, 2.0, 16.0)
    search_samples = 32
    final_samples = 128
    guidance_scale = 2.0
    default_guidance_space = SHAPES_LATENT_GUIDANCE_SPACE

    trainer = "tasks.shapes_latent_training:train_shapes_latent"

    def __init__(
        self,
        weights: str | Path | None = None,
        guides: str | Path | None = None,
        checkpointing: str = "false",
    ) -> None:
        self.weights = Path(weights) if weights else weights_dir("shapes-latent")
        self.shapes = ShapesTask(guides)
        flag = str(checkpointing).strip().lower()
        if flag not in ("true", "false"):
            raise TFGSearchError(
                f"task {self.name!r}: checkpointing must be true or false, got {checkpointing!r}"
            )
        self.checkpointing = flag == "true"

    @property
    def targets(self) -> list[str]:
        return [f"{c}-{s}" for c in COLOURS for s in SHAPES] + list(COLOURS)

    @property
    def targets_help(self) -> str:
        return (
            f"COLOUR-SHAPE (e.g. cyan-triangle: 3.8% of cyan) or a colour ({', '.join(COLOURS)}); "
            "the colour is the condition, TFG guides the shape"
        )

    def parse_target(self, target: str) -> tuple[int, int | None]:
        try:
            colour, shape = parse_pair(target)
        except ValueError as err:
            raise TFGSearchError(f"task {self.name!r}: {err}") from None
        if colour is None:
            raise TFGSearchError(
                f"task {self.name!r} conditions on a colour: give COLOUR-{shape} (e.g. cyan-{shape}) or a "
                "colour, not a shape alone"
            )
        c, s = indices(colour, shape)
        assert c is not None
        return c, s

    # -- models ------------------------------------------------------------------------------
    def _pretrained(self, kind: str, cls: Any, device: torch.device | str | None) -> Any:
        dev = str(torch.device(device or "cpu"))
        folder = self.weights / kind

        def build() -> Any:
            if not (folder / "config.json").is_file():
                raise TFGSearchError(
                    f"task {self.name!r}: no {kind} in {folder}; train it with "
                    f"`tfg-search train {self.name} --out {self.weights}`"
                )
            model = cls.from_pretrained(folder, use_safetensors=True, low_cpu_mem_usage=False)
            return frozen(model, dev)

        return cached((f"shapes-latent-{kind}", str(self.weights), dev), build)

    def model_folder(self) -> Path:
        """The diffusers folder of the model (its identity: :meth:`tasks.base.Task.model_identity`)."""
        return self.weights

    def diffusion(self, device: torch.device | str | None = None) -> tuple[Any, Any]:
        from diffusers import DDIMScheduler, UNet2DModel

        unet = self._pretrained("unet", UNet2DModel, device)
        return unet, DDIMScheduler.from_pretrained(self.weights / "scheduler")

    def vae(self, device: torch.device | str | None = None) -> Any:
        """The ``AutoencoderKL`` on ``device`` (frozen, cached)."""
        from diffusers import AutoencoderKL

        return self._pretrained("vae", AutoencoderKL, device)

    def decoder(self, device: torch.device | str | None = None) -> LatentDecoder:
        """The VAE's :class:`~tfg_search.guidance.LatentDecoder` (latents -> float32 images), with
        gradient checkpointing when the task option ``checkpointing=true`` is given."""
        dev = str(torch.device(device or "cpu"))
        key = ("shapes-latent-decoder", str(self.weights), dev, self.checkpointing)
        return cached(key, lambda: LatentDecoder(self.vae(dev), checkpointing=self.checkpointing))

    def conditioning(self, target: str, device: torch.device | str | None = None) -> Conditioning:
        """The target's colour as the class label; the null class for CFG's unconditional branch."""
        colour, _ = self.parse_target(target)
        dev = torch.device(device or "cpu")
        return Conditioning(
            {"class_labels": torch.tensor([colour], device=dev)},
            {"class_labels": torch.tensor([SHAPES_LATENT_NULL_CLASS], device=dev)},
        )

    def log_f(self, target: str, device: torch.device | str | None = None) -> LogF:
        """log p_shape(shape | D(z)) on latents z (the ``shapes`` shape guide on decoded images);
        0 for a colour alone (CFG alone, no TFG term)."""
        _, shape = self.parse_target(target)
        if shape is None:
            return lambda z: z.flatten(1).sum(1) * 0.0
        return self.decoder(device).log_f(self.shapes.log_f(SHAPES[shape], device))

    def reference(self, target: str) -> torch.Tensor:
        self.parse_target(target)
        return self.shapes.reference(target)

    # -- judging -----------------------------------------------------------------------------
    def compute_metrics(self, samples: torch.Tensor, target: str) -> dict[str, float]:
        """The ``shapes`` task's metrics of decoded images ``[B, 3, 32, 32]`` (colour and shape
        both judged for a pair: the condition must hold too)."""
        self.parse_target(target)
        return self.shapes.compute_metrics(samples, target)

"""Analytic judges of the ``shapes`` task: readouts with no learned parameters, so no gradient can fool them.

For each image (pixels in [-1, 1]):

1. brightness = the largest of the three channels (HSV value); the background level is the median
   brightness of the border pixels, the object level a high percentile; the foreground mask is the
   set of pixels brighter than half-way between the two (an image whose contrast is below
   :data:`MIN_CONTRAST` has no object);
2. the object is the largest 4-connected component of the mask; the image is a *clean object* when
   it is the only component of :data:`MIN_BLOB` pixels or more;
3. colour = the hue of the object's mean pixel, the nearest of the six colours' hues (an object
   with saturation below :data:`MIN_SATURATION` is grey: no colour);
4. shape from the object's fill ratio of its bounding box (circle pi/4 = 0.785, square 1, triangle
   <= 0.5) and its normalised polar moment (mu20 + mu02) / area^2 (disc 1/(2 pi) = 0.159, square
   1/6 = 0.167, equilateral triangle sqrt(3)/9 = 0.192): the nearest prototype in those two
   coordinates, each scaled by its spread.

:func:`features` also gives a per-image feature vector (colour, contrast, geometry, background and
cleanliness readouts) on which the task's Frechet distance is computed: a feature space the guiding
CNNs never saw.

Example:
    >>> from tasks.shapes_data import render_batch
    >>> x, colour, shape = render_batch(32, seed=5)
    >>> verdict = judge(x)
    >>> bool((verdict.colour == colour).float().mean() > 0.9)
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from tasks.shapes_data import COLOUR_HUE, COLOURS, SHAPES

MIN_CONTRAST = 0.25
"""Object minus background brightness (on [0, 1]) below which an image has no object."""
MIN_SATURATION = 0.35
MIN_BLOB = 3
"""Components smaller than this (pixels) are specks, not objects, when judging cleanliness."""
SHAPE_PROTOTYPES: dict[str, tuple[float, float]] = {
    "circle": (math.pi / 4, 1 / (2 * math.pi)),
    "square": (1.0, 1 / 6),
    "triangle": (0.52, math.sqrt(3) / 9),
}
"""(fill ratio, normalised polar moment) of each shape as the judge measures it on pixel masks."""
SHAPE_SCALES = (0.08, 0.012)
"""Spread of the two shape coordinates (what one unit of distance to a prototype means)."""

FEATURE_NAMES: tuple[str, ...] = (
    "mean_r",
    "mean_g",
    "mean_b",
    "hue_cos",
    "hue_sin",
    "saturation",
    "object_value_std",
    "contrast",
    "background",
    "background_std",
    "fill",
    "moment",
    "sqrt_area",
    "centre_x",
    "centre_y",
    "aspect",
    "components",
)


@dataclass(frozen=True)
class Verdict:
    """What the judges read off a batch of ``n`` images.

    Attributes:
        colour: colour index [n] (into :data:`tasks.shapes_data.COLOURS`), -1 for none.
        shape: shape index [n] (into :data:`tasks.shapes_data.SHAPES`), -1 for none.
        clean: [n] bool, exactly one blob.
        features: [n, len(FEATURE_NAMES)] float64.
    """

    colour: torch.Tensor
    shape: torch.Tensor
    clean: torch.Tensor
    features: torch.Tensor


def _hue(rgb: np.ndarray) -> tuple[float, float]:
    """(hue in degrees, saturation) of one RGB triple in [0, 1]."""
    r, g, b = (float(v) for v in rgb)
    hi, lo = max(r, g, b), min(r, g, b)
    if hi <= 0 or hi - lo <= 1e-9:
        return 0.0, 0.0
    d = hi - lo
    if hi == r:
        h = ((g - b) / d) % 6
    elif hi == g:
        h = (b - r) / d + 2
    else:
        h = (r - g) / d + 4
    return 60.0 * h, d / hi


_HUES = np.array([COLOUR_HUE[c] for c in COLOURS])
_PROTOS = np.array([SHAPE_PROTOTYPES[s] for s in SHAPES])
_BORDER = np.zeros((32, 32), dtype=bool)
_BORDER[0, :] = _BORDER[-1, :] = _BORDER[:, 0] = _BORDER[:, -1] = True


def _judge_one(img: np.ndarray) -> tuple[int, int, bool, np.ndarray]:
    """(colour, shape, clean, features) of one image [3, H, W] in [0, 1]."""
    value = img.max(axis=0)
    border = _BORDER if value.shape == (32, 32) else _border(value.shape)
    bg = float(np.median(value[border]))
    bg_std = float(value[border].std())
    peak = float(np.percentile(value, 99))
    contrast = peak - bg
    feats = np.zeros(len(FEATURE_NAMES))
    feats[7], feats[8], feats[9] = contrast, bg, bg_std
    if contrast < MIN_CONTRAST:
        return -1, -1, False, feats
    mask = value > bg + contrast / 2
    labels, _ = ndimage.label(mask)
    sizes = np.bincount(labels.ravel())[1:]
    main = labels == (int(np.argmax(sizes)) + 1)
    n_blobs = int((sizes >= MIN_BLOB).sum())
    area = int(main.sum())
    ys, xs = np.nonzero(main)
    mean_rgb = img[:, main].mean(axis=1)
    hue, sat = _hue(mean_rgb)
    width, height = xs.max() - xs.min() + 1, ys.max() - ys.min() + 1
    fill = area / float(width * height)
    cx, cy = xs.mean(), ys.mean()
    # Polar moment of the pixel squares (each adds 1/12 per axis about its own centre).
    moment = (((xs - cx) ** 2).sum() + ((ys - cy) ** 2).sum() + area / 6.0) / float(area) ** 2
    colour = -1
    if sat >= MIN_SATURATION:
        dist = np.abs((hue - _HUES + 180.0) % 360.0 - 180.0)
        colour = int(np.argmin(dist))
    coords = (np.array([fill, moment]) - _PROTOS) / np.array(SHAPE_SCALES)
    shape = int(np.argmin((coords**2).sum(axis=1)))
    feats[:] = (
        *mean_rgb,
        math.cos(math.radians(hue)) * sat,
        math.sin(math.radians(hue)) * sat,
        sat,
        float(value[main].std()),
        contrast,
        bg,
        bg_std,
        fill,
        moment * 10.0,
        math.sqrt(area) / 10.0,
        cx / value.shape[1],
        cy / value.shape[0],
        width / float(height),
        float(n_blobs),
    )
    return colour, shape, n_blobs == 1, feats


def _border(shape: tuple[int, ...]) -> np.ndarray:
    border = np.zeros(shape, dtype=bool)
    border[0, :] = border[-1, :] = border[:, 0] = border[:, -1] = True
    return border


def judge(x: torch.Tensor) -> Verdict:
    """Judge a batch of images ``[n, 3, H, W]`` in [-1, 1] (values outside are clamped)."""
    imgs = ((x.detach().double().cpu().clamp(-1, 1) + 1) / 2).numpy()
    results = [_judge_one(img) for img in imgs]
    return Verdict(
        colour=torch.tensor([r[0] for r in results], dtype=torch.long),
        shape=torch.tensor([r[1] for r in results], dtype=torch.long),
        clean=torch.tensor([r[2] for r in results], dtype=torch.bool),
        features=torch.from_numpy(np.stack([r[3] for r in results])) if results else torch.zeros(0, 17),
    )


def unguided_quality(
    unet: torch.nn.Module, scheduler: object, n: int = 256, steps: int = 50, seed: int = 4321
) -> dict[str, object]:
    """How unguided samples of ``unet`` compare with real images, by the judges.

    Returns the share of clean objects, of samples with a readable colour and shape, the pair
    distribution's total-variation distance to :data:`tasks.shapes_data.PAIR_RATES`, and each
    measure on ``n`` real images for comparison.
    """
    from tasks.shapes_data import PAIR_RATES, render_batch
    from tfg_search.guidance.config import TFGConfig
    from tfg_search.guidance.sampler import guided_sample

    def stats(x: torch.Tensor) -> dict[str, float]:
        v = judge(x)
        ok = (v.colour >= 0) & (v.shape >= 0)
        counts: dict[tuple[str, str], float] = dict.fromkeys(PAIR_RATES, 0.0)
        for c, s in zip(v.colour[ok].tolist(), v.shape[ok].tolist(), strict=True):
            counts[(COLOURS[c], SHAPES[s])] += 1.0 / len(x)
        tv = 0.5 * sum(abs(counts[p] - r) for p, r in PAIR_RATES.items()) + 0.5 * float((~ok).float().mean())
        return {
            "clean_rate": float(v.clean.float().mean()),
            "readable_rate": float(ok.float().mean()),
            "pair_tv_distance": tv,
            "shape_shares": {s: float((v.shape == i).float().mean()) for i, s in enumerate(SHAPES)},
        }

    gen = torch.Generator().manual_seed(seed)
    zero = lambda y: y.flatten(1).sum(1) * 0.0  # noqa: E731 - unguided: log f plays no part
    with torch.no_grad():
        samples = guided_sample(unet, scheduler, zero, TFGConfig(), (n, 3, 32, 32), steps, generator=gen)
    real, _, _ = render_batch(n, seed)
    return {
        "quality_samples": n,
        "quality_steps": steps,
        "unguided": stats(samples),
        "real": stats(real),
    }

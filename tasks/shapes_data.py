"""Procedural data of the ``shapes`` task: one coloured shape on a dark background, 32x32 RGB.

Every image is drawn from a seed (no files, no download): a shape in {circle, square, triangle} of a
colour in {red, green, blue, yellow, magenta, cyan}, with a random size, position, brightness and a
small colour jitter, anti-aliased by 4x4 supersampling, on a flat dark background. Squares are
axis-aligned; triangles are equilateral with a random rotation.

The training distribution is skewed on purpose (:data:`PAIR_RATES`): some colour-shape pairs are
common (10%) and some rare (0.5-3%), like CelebA's attribute pairs. The guiding classifiers are
trained on a *balanced* draw (``rates="uniform"``), the diffusion model on the skewed one.

Example:
    >>> x, colour, shape = render_batch(4, seed=0)
    >>> tuple(x.shape), float(x.min()) >= -1.0, float(x.max()) <= 1.0
    ((4, 3, 32, 32), True, True)
    >>> round(sum(PAIR_RATES.values()), 6)
    1.0
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

SIZE = 32
COLOURS: tuple[str, ...] = ("red", "green", "blue", "yellow", "magenta", "cyan")
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
COLOUR_RGB: dict[str, tuple[float, float, float]] = {
    "red": (1.0, 0.0, 0.0),
    "green": (0.0, 1.0, 0.0),
    "blue": (0.0, 0.0, 1.0),
    "yellow": (1.0, 1.0, 0.0),
    "magenta": (1.0, 0.0, 1.0),
    "cyan": (0.0, 1.0, 1.0),
}
COLOUR_HUE: dict[str, float] = {
    "red": 0.0,
    "yellow": 60.0,
    "green": 120.0,
    "cyan": 180.0,
    "blue": 240.0,
    "magenta": 300.0,
}
"""Hue (degrees) of each colour: what the analytic judge compares a sample's mean colour with."""

PAIR_RATES: dict[tuple[str, str], float] = {
    ("red", "circle"): 0.100,
    ("red", "square"): 0.070,
    ("red", "triangle"): 0.030,
    ("green", "circle"): 0.030,
    ("green", "square"): 0.100,
    ("green", "triangle"): 0.060,
    ("blue", "circle"): 0.080,
    ("blue", "square"): 0.020,
    ("blue", "triangle"): 0.080,
    ("yellow", "circle"): 0.090,
    ("yellow", "square"): 0.050,
    ("yellow", "triangle"): 0.010,
    ("magenta", "circle"): 0.020,
    ("magenta", "square"): 0.070,
    ("magenta", "triangle"): 0.060,
    ("cyan", "circle"): 0.070,
    ("cyan", "square"): 0.055,
    ("cyan", "triangle"): 0.005,
}
"""Share of each (colour, shape) pair in the diffusion model's training data (sums to 1)."""

RADIUS_RANGE = (6.0, 11.0)
"""Half-width of circles and squares, in pixels (triangles: circumradius x 1.2 of this)."""
TRIANGLE_SCALE = 1.2
BRIGHTNESS_RANGE = (0.75, 1.0)
COLOUR_JITTER = 0.05
BACKGROUND_RANGE = (0.02, 0.12)
SUPERSAMPLE = 4


def pair_rate(colour: str | None, shape: str | None) -> float:
    """Share of the training data with this colour and/or shape (None = any).

    Example:
        >>> pair_rate("cyan", "triangle"), round(pair_rate("red", None), 3)
        (0.005, 0.2)
    """
    return float(
        sum(
            rate
            for (c, s), rate in PAIR_RATES.items()
            if (colour is None or c == colour) and (shape is None or s == shape)
        )
    )


def _pair_probabilities(rates: str) -> torch.Tensor:
    probs = torch.tensor(
        [[PAIR_RATES[(c, s)] for s in SHAPES] for c in COLOURS], dtype=torch.float64
    ).flatten()
    if rates == "uniform":
        return torch.full_like(probs, 1.0 / probs.numel())
    if rates != "skewed":
        raise ValueError(f"rates must be 'skewed' or 'uniform', got {rates!r}")
    return probs / probs.sum()


def render(
    colour: torch.Tensor,
    shape: torch.Tensor,
    generator: torch.Generator,
) -> torch.Tensor:
    """Images ``[n, 3, 32, 32]`` in [-1, 1] of the given colour / shape indices ``[n]``.

    Size, position, rotation, brightness, jitter and background come from ``generator``.
    """
    n = colour.numel()
    g = generator
    r = RADIUS_RANGE[0] + (RADIUS_RANGE[1] - RADIUS_RANGE[0]) * torch.rand(n, generator=g)
    extent = torch.where(shape == SHAPES.index("triangle"), r * TRIANGLE_SCALE, r)
    centre = extent[:, None] + 1.0 + (SIZE - 2.0 - 2.0 * extent[:, None]) * torch.rand(n, 2, generator=g)
    angle = 2 * math.pi * torch.rand(n, generator=g)
    brightness = BRIGHTNESS_RANGE[0] + (BRIGHTNESS_RANGE[1] - BRIGHTNESS_RANGE[0]) * torch.rand(
        n, generator=g
    )
    jitter = COLOUR_JITTER * torch.randn(n, 3, generator=g)
    background = BACKGROUND_RANGE[0] + (BACKGROUND_RANGE[1] - BACKGROUND_RANGE[0]) * torch.rand(
        n, generator=g
    )

    # Sub-pixel centres (pixel k spans [k, k + 1)).
    s = SUPERSAMPLE
    coords = (torch.arange(SIZE * s, dtype=torch.float32) + 0.5) / s
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    dx = xx[None] - centre[:, 0, None, None]
    dy = yy[None] - centre[:, 1, None, None]
    rr = r[:, None, None]
    inside_circle = dx**2 + dy**2 <= rr**2
    inside_square = (dx.abs() <= rr) & (dy.abs() <= rr)
    # Equilateral triangle: inside all three half-planes whose normals point to the vertices' opposite
    # sides; the inradius is half the circumradius R.
    big_r = (r * TRIANGLE_SCALE)[:, None, None]
    inside_tri = torch.ones_like(inside_circle)
    for k in range(3):
        phi = angle[:, None, None] + math.pi + 2 * math.pi * k / 3
        inside_tri &= dx * torch.cos(phi) + dy * torch.sin(phi) <= big_r / 2
    kind = shape[:, None, None]
    inside = torch.where(kind == 0, inside_circle, torch.where(kind == 1, inside_square, inside_tri)).float()
    coverage = torch.nn.functional.avg_pool2d(inside[:, None], s)  # [n, 1, 32, 32]

    base = torch.tensor([COLOUR_RGB[c] for c in COLOURS])[colour]  # [n, 3]
    rgb = (base * brightness[:, None] + jitter).clamp(0.0, 1.0)
    bg = background[:, None, None, None].expand(n, 3, 1, 1)
    img = bg + coverage * (rgb[:, :, None, None] - bg)
    return (2.0 * img - 1.0).clamp(-1.0, 1.0)


def render_batch(
    n: int,
    seed: int,
    rates: str = "skewed",
    colour: str | None = None,
    shape: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` images drawn from ``seed``: ``(x [n, 3, 32, 32], colour index [n], shape index [n])``.

    Args:
        n: number of images.
        seed: the only source of randomness (same seed, same images).
        rates: ``"skewed"`` (:data:`PAIR_RATES`, the diffusion model's data) or ``"uniform"``.
        colour, shape: fix the colour and / or shape (the other attribute follows ``rates``
            conditioned on it).
    """
    g = torch.Generator().manual_seed(int(seed))
    probs = _pair_probabilities(rates).reshape(len(COLOURS), len(SHAPES))
    if colour is not None:
        keep = torch.zeros_like(probs)
        keep[COLOURS.index(colour)] = 1.0
        probs = probs * keep
    if shape is not None:
        keep = torch.zeros_like(probs)
        keep[:, SHAPES.index(shape)] = 1.0
        probs = probs * keep
    pair = torch.multinomial(probs.flatten() / probs.sum(), n, replacement=True, generator=g)
    c, s = pair // len(SHAPES), pair % len(SHAPES)
    return render(c, s, g), c, s


def parse_pair(target: str) -> tuple[str | None, str | None]:
    """``"cyan-triangle"`` -> ("cyan", "triangle"); ``"red"`` -> ("red", None); a shape -> (None, shape).

    Raises:
        ValueError: anything else (the message lists what is valid).
    """
    text = str(target).strip().lower()
    valid = "COLOUR-SHAPE (e.g. cyan-triangle), a colour or a shape"
    if not text:
        raise ValueError(f"empty target; valid: {valid}")
    if text in COLOURS:
        return text, None
    if text in SHAPES:
        return None, text
    colour, sep, shape = text.partition("-")
    if sep and colour in COLOURS and shape in SHAPES:
        return colour, shape
    raise ValueError(
        f"unknown target {target!r}; valid: {valid}; colours: {', '.join(COLOURS)}; "
        f"shapes: {', '.join(SHAPES)}"
    )


def all_targets() -> list[str]:
    """Every target string: the 18 pairs, then the 6 colours and the 3 shapes."""
    return [f"{c}-{s}" for c in COLOURS for s in SHAPES] + list(COLOURS) + list(SHAPES)


def rare_pairs(below: float = 0.05) -> list[str]:
    """The pairs whose training share is below ``below`` (rarest first)."""
    pairs = sorted((rate, f"{c}-{s}") for (c, s), rate in PAIR_RATES.items() if rate < below)
    return [name for _, name in pairs]


def target_rate(target: str) -> float:
    """Training share of a target (pair, colour or shape)."""
    return pair_rate(*parse_pair(target))


def indices(colour: str | None, shape: str | None) -> tuple[int | None, int | None]:
    """Class indices of a parsed target (None stays None)."""
    return (
        None if colour is None else COLOURS.index(colour),
        None if shape is None else SHAPES.index(shape),
    )


def labels_match(
    colour_idx: torch.Tensor, shape_idx: torch.Tensor, target: Sequence[int | None]
) -> torch.Tensor:
    """Boolean ``[n]``: which (colour, shape) labels satisfy a target given as indices."""
    c, s = target
    ok = torch.ones_like(colour_idx, dtype=torch.bool)
    if c is not None:
        ok &= colour_idx == c
    if s is not None:
        ok &= shape_idx == s
    return ok

"""``shapes-latent``: a colour-conditional latent diffusion model (VAE + UNet, CFG) guided toward a shape.

Work in progress: the data facts the trainer needs come first.
"""

from __future__ import annotations

from tasks.shapes_data import COLOURS, PAIR_RATES, SHAPES, pair_rate

LATENT_SHAPE = (4, 8, 8)
"""One latent of the VAE (:data:`tasks.nets.SHAPES_VAE_CONFIG`): 32x32x3 images -> 8x8x4."""


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

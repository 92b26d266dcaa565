"""tfg-search: training-free guidance (TFG) for diffusion models and a search over its strengths.

The core names:

- :class:`TFGConfig`: every guidance hyper-parameter, validated, with presets for earlier methods;
- :func:`guided_sample`, :func:`guided_sample_many`: the TFG sampler over a diffusers DDIM scheduler,
  with :class:`Conditioning` (classifier-free guidance) and :class:`LatentDecoder` (latent models);
- :class:`TFGPipeline`: the same sampler as a diffusers ``DiffusionPipeline``;
- :class:`NonFiniteSampleError`, :class:`TFGSearchError`: what goes wrong, said clearly.

The sampler and the pipeline (and so torch) are imported on first use, so that the command line's
queries (``tfg-search best``, ``studies``, ``export``) start without loading torch.
"""

from __future__ import annotations

from typing import Any

from tfg_search.errors import NonFiniteSampleError, TFGSearchError
from tfg_search.guidance.config import METHODS, STRUCTURES, TFGConfig

__version__ = "0.4.0"
"""The one version (pyproject reads it); stored with each study and naming its layout
(:data:`tfg_search.store.layout.LAYOUT` 2 is written since 0.2)."""

__all__ = [
    "METHODS",
    "STRUCTURES",
    "Conditioning",
    "LatentDecoder",
    "NonFiniteSampleError",
    "TFGConfig",
    "TFGPipeline",
    "TFGSearchError",
    "__version__",
    "guided_sample",
    "guided_sample_many",
]


def __getattr__(name: str) -> Any:
    if name in ("guided_sample", "guided_sample_many", "Conditioning", "LatentDecoder"):
        from tfg_search import guidance

        return getattr(guidance, name)
    if name == "TFGPipeline":
        from tfg_search.pipelines.pipeline import TFGPipeline

        return TFGPipeline
    raise AttributeError(f"module 'tfg_search' has no attribute {name!r}")

"""tfg-search: training-free guidance (TFG) for diffusion models and a search over its strengths.

The core names:

- :class:`TFGConfig`: every guidance hyper-parameter, validated, with presets for earlier methods;
- :func:`guided_sample`: the TFG sampler over a diffusers DDIM scheduler;
- :class:`NonFiniteSampleError`, :class:`TFGSearchError`: what goes wrong, said clearly.
"""

from __future__ import annotations

from tfg_search.config import METHODS, STRUCTURES, TFGConfig
from tfg_search.errors import NonFiniteSampleError, TFGSearchError
from tfg_search.guidance import guided_sample, guided_sample_many

__version__ = "0.1.0"

__all__ = [
    "METHODS",
    "STRUCTURES",
    "NonFiniteSampleError",
    "TFGConfig",
    "TFGSearchError",
    "__version__",
    "guided_sample",
    "guided_sample_many",
]

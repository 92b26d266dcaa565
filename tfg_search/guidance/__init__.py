"""The guidance math: configurations, schedules and the TFG sampler. Pure torch, no I/O, no service.

* :mod:`tfg_search.guidance.config`: :class:`TFGConfig`, the earlier methods' presets (torch-free);
* :mod:`tfg_search.guidance.schedules`: the increase / decrease / constant structures;
* :mod:`tfg_search.guidance.sampler`: one guided step and the sampling loop over a DDIM chain;
* :mod:`tfg_search.guidance.passes`: the model passes a run needs (torch-free).

The sampler's names are imported on first use (torch is not loaded by ``import tfg_search.guidance``).
"""

from __future__ import annotations

from typing import Any

from tfg_search.guidance.config import METHODS, STRUCTURES, TFGConfig, method_config
from tfg_search.guidance.passes import PassCounts, pass_counts, sample_passes

__all__ = [
    "METHODS",
    "STRUCTURES",
    "PassCounts",
    "Structure",
    "TFGConfig",
    "guided_sample",
    "guided_sample_many",
    "method_config",
    "pass_counts",
    "sample_passes",
]

_SAMPLER_NAMES = ("Structure", "guided_sample", "guided_sample_many")


def __getattr__(name: str) -> Any:
    if name in _SAMPLER_NAMES:
        from tfg_search.guidance import sampler

        return getattr(sampler, name)
    raise AttributeError(f"module 'tfg_search.guidance' has no attribute {name!r}")

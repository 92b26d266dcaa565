"""The guidance math: configurations, schedules and the TFG sampler. Pure torch, no I/O, no service.

* :mod:`tfg_search.guidance.config`: :class:`TFGConfig`, the earlier methods' presets (torch-free);
* :mod:`tfg_search.guidance.schedules`: the increase / decrease / constant structures;
* :mod:`tfg_search.guidance.sampler`: one guided step and the sampling loop over a DDIM chain;
* :mod:`tfg_search.guidance.conditioning`: conditional denoisers and classifier-free guidance;
* :mod:`tfg_search.guidance.latent`: the VAE decoder of a latent model between the chain and log f;
* :mod:`tfg_search.guidance.memory`: the estimated peak memory of a guided batch;
* :mod:`tfg_search.guidance.passes`: the model passes a run needs (torch-free);
* :mod:`tfg_search.guidance.config_file`: ``TFGConfig.save_pretrained`` / ``from_pretrained`` (torch-free).

The torch modules' names are imported on first use (torch is not loaded by
``import tfg_search.guidance``).
"""

from __future__ import annotations

from typing import Any

from tfg_search.guidance.config import METHODS, STRUCTURES, TFGConfig, method_config
from tfg_search.guidance.passes import PassCounts, best_of_n_passes, pass_counts, sample_passes

__all__ = [
    "METHODS",
    "STRUCTURES",
    "Conditioning",
    "LatentDecoder",
    "PassCounts",
    "Structure",
    "TFGConfig",
    "best_of_n_passes",
    "guided_sample",
    "guided_sample_many",
    "method_config",
    "pass_counts",
    "sample_passes",
]

_LAZY = {
    "Structure": "sampler",
    "guided_sample": "sampler",
    "guided_sample_many": "sampler",
    "Conditioning": "conditioning",
    "LatentDecoder": "latent",
}
"""Names of the torch modules, imported on first use: {name: module of tfg_search.guidance}."""


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"tfg_search.guidance.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'tfg_search.guidance' has no attribute {name!r}")

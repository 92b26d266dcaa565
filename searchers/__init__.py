"""Optuna-compatible samplers for tfg-search: one class per search, over a shared base.

* :class:`TFGRungSampler`: the rung search (the default of tfg-search): a spread start,
  Gaussian-process-guided refinement, successive halving over sample sizes;
* :class:`TFGBeamSampler`: the paper's beam doubling search (docs/algorithm.md of the tfg-search
  repository, section 5), exact;

both over :class:`Lattice` search spaces, restartable from storage and safe for threads and
processes sharing an RDB storage (docs/searchers.md there; README.md here for OptunaHub).
"""

from __future__ import annotations

# Relative imports: OptunaHub's load_local_module imports this folder under another name
# (optunahub_registry.package.searchers), see README.md.
from .base import SCHEDULES, SearchPlan
from .beam import BeamPlan, TFGBeamSampler
from .lattice import DEFAULT_SPACE, Lattice, parse_space
from .rung_sampler import TFGRungSampler
from .rungs import RungSchedule

__all__ = [
    "DEFAULT_SPACE",
    "SCHEDULES",
    "BeamPlan",
    "Lattice",
    "RungSchedule",
    "SearchPlan",
    "TFGBeamSampler",
    "TFGRungSampler",
    "parse_space",
]

"""Optuna-compatible samplers for tfg-search.

:class:`TFGBeamSampler` runs the TFG beam doubling search (docs/algorithm.md of the tfg-search
repository, section 5) over :class:`Lattice` search spaces; see docs/searchers.md there.
"""

from __future__ import annotations

# Relative imports: OptunaHub's load_local_module imports this folder under another name
# (optunahub_registry.package.searchers), see README.md.
from .beam import MODES, SCHEDULES, BeamPlan, TFGBeamSampler
from .lattice import DEFAULT_SPACE, Lattice, parse_space

__all__ = ["DEFAULT_SPACE", "MODES", "SCHEDULES", "BeamPlan", "Lattice", "TFGBeamSampler", "parse_space"]

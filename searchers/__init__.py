"""Optuna-compatible samplers for tfg-search.

:class:`TFGBeamSampler` runs the TFG beam doubling search (tfg-algorithm.md, section 5) over
:class:`Lattice` search spaces; see docs/searchers.md.
"""

from __future__ import annotations

from searchers.beam import SCHEDULES, BeamPlan, TFGBeamSampler
from searchers.lattice import DEFAULT_SPACE, Lattice, parse_space

__all__ = ["DEFAULT_SPACE", "SCHEDULES", "BeamPlan", "Lattice", "TFGBeamSampler", "parse_space"]

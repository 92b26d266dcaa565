"""The load test's trial and settings (tests/test_load.py), in a module of their own.

The test's coordinator subprocesses import this module and register it with
``ray.cloudpickle.register_pickle_by_value``, so that the Ray workers receive :func:`cheap_trial` by
value (they need not import the tests).
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

from searchers import Lattice
from tfg_search.run.settings import SearchSettings
from tfg_search.trial import TrialOutcome, TrialSpec

WORKERS_PER_COORDINATOR = 4
SEARCHES = {"A": ("3", 0), "B": ("5", 1), "C": ("3", 0), "D": ("5", 1)}
"""Search name -> (target, seed). C repeats A's settings and D repeats B's, under faults."""


def cheap_trial(markers: str, spec: TrialSpec) -> TrialOutcome:
    """A trial of a few milliseconds: metrics from the configuration, target, seed and sample count.

    Writes ``markers/<pid>`` once per process, so that the test can find (and kill) the workers.
    """
    marker = Path(markers) / str(os.getpid())
    if not marker.exists():
        marker.touch()
    time.sleep(0.01)
    c, t = spec.config, float(spec.target)
    value = (
        -(math.log(c.rho / (0.5 + t / 4)) ** 2) - math.log(c.mu) ** 2 - 0.3 * math.log(c.gamma / 0.02) ** 2
    )
    value += 0.05 * math.sin(13 * c.rho + 7 * c.mu + 101 * c.gamma + spec.seed) + 0.001 * spec.samples
    metrics = {"validity": value, "fidelity": value, "sw": -value}
    return TrialOutcome(spec.number, metrics, None, 0.01, spec.device or "cpu", "load")


def load_settings(target: str, seed: int) -> SearchSettings:
    """About 60 trials: top-k 4, 8 rounds, lattices of factor 1.5 (and 2 for gamma), 3 final re-runs."""
    return SearchSettings(
        task="gmm2d",
        target=target,
        samples=16,
        final_samples=32,
        final_top=3,
        search="beam",
        top_k=4,
        rounds=8,
        steps=10,
        seed=seed,
        space={
            "rho": Lattice(0.25, 1.5, 16.0),
            "mu": Lattice(0.25, 1.5, 16.0),
            "gamma": Lattice(0.001, 2.0, 1.0),
        },
    )

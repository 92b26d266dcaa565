"""How many CPU threads torch uses in this process.

Several torch processes on one machine that each use every core slow each other 10-20x (OpenMP
threads spin-wait for cores another process holds: measured on this project's 2-core machines).
A search's local evaluations therefore run with ``--threads N`` torch threads, by default this
process's CPU share: the cores it may run on (its affinity) capped by its cgroup's CPU quota. Give
each of several searches on one machine its part (e.g. ``--threads 1`` for two searches on two
cores). Ray actors already use ``--cpus-per-trial`` threads each.

Example:
    >>> cpu_share() >= 1
    True
"""

from __future__ import annotations

import math
import os
from pathlib import Path


def _cgroup_quota() -> float | None:
    """CPUs allowed by the cgroup v2 quota (``cpu.max``), or None when unlimited or unknown."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    return float(quota) / float(period)


def cpu_share() -> int:
    """The CPUs this process may use: its affinity, capped by its cgroup's quota (at least 1)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    quota = _cgroup_quota()
    if quota is not None:
        cores = min(cores, max(1, math.floor(quota)))
    return max(1, cores)


def set_threads(n: int | None = None) -> int:
    """Use ``n`` torch threads (default :func:`cpu_share`); returns the number set."""
    import torch

    count = cpu_share() if n is None else int(n)
    if count < 1:
        raise ValueError(f"threads must be >= 1, got {n!r}")
    torch.set_num_threads(count)
    return count

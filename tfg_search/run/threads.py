"""How many CPU threads torch uses in this process.

Several torch processes on one machine that each use every core slow each other 10-20x (OpenMP
threads spin-wait for cores another process holds: measured on this project's 2-core machines,
docs/benchmarks.md "Threads"). Local evaluations (the in-process executor, ``evaluate``,
``sample``) therefore run with ``--threads N`` torch threads. By default the count is read once,
when the run starts:

    threads = max(1, cpu_share - round(load))

where ``cpu_share`` is the cores this process may run on (its affinity, capped by its cgroup's
CPU quota) and ``load`` the machine's 1-minute load average (the other work already running; a
fresh process adds almost nothing to it yet). An idle machine gets every core of the share, a
machine whose cores are already busy one thread: the cores others hold are left to them. Give
``--threads N`` to choose (kept as given; at most the CPUs of the machine). Ray actors use
``--cpus-per-trial`` threads each.

Example:
    >>> default_threads(share=2, load=0.1), default_threads(share=2, load=1.2), default_threads(2, 4.0)
    (2, 1, 1)
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


def load_average() -> float:
    """The machine's 1-minute load average (0 where the platform has none)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return 0.0


def default_threads(share: int, load: float) -> int:
    """The default thread count: the ``share`` of cores less those the ``load`` keeps busy (>= 1).

    A load is rounded half up (0.5 busy cores count as one).
    """
    busy = math.floor(max(0.0, load) + 0.5)
    return max(1, share - busy)


def set_threads(n: int | None = None) -> int:
    """Use ``n`` torch threads (default :func:`default_threads` of this moment); returns the number set."""
    import torch

    count = default_threads(cpu_share(), load_average()) if n is None else int(n)
    if count < 1:
        raise ValueError(f"threads must be >= 1, got {n!r}")
    torch.set_num_threads(count)
    return count

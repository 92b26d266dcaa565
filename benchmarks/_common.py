"""Shared helpers of the benchmark scripts: machine description, JSON output, tables."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def log(msg: str) -> None:
    """A timestamped progress line on stderr."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def t_interval(d: list[float]) -> tuple[float, float, float]:
    """Mean of ``d`` and its 95% t-interval (a single value: the interval is that value).

    The quantile is Student's t at 0.975 with n - 1 degrees of freedom (``scipy.stats.t``), exact
    for every n. (Until tfg-search 0.3 a table gave 2.11 for n = 11-17 and 2.0 for n >= 19, too
    narrow there; it was right for n <= 10 and n = 18, the sizes of the published intervals.)

    Example:
        >>> [round(v, 3) for v in t_interval([1.0, 3.0])]
        [2.0, -10.706, 14.706]
    """
    from scipy.stats import t

    mean = statistics.mean(d)
    if len(d) < 2:
        return mean, mean, mean
    q = float(t.ppf(0.975, len(d) - 1))
    half = q * statistics.stdev(d) / math.sqrt(len(d))
    return mean, mean - half, mean + half


def machine() -> dict[str, Any]:
    """Where a benchmark ran: enough to judge whether two numbers are comparable."""
    import torch

    info: dict[str, Any] = {
        "date": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    with contextlib.suppress(OSError):
        info["load_average_1m"] = round(os.getloadavg()[0], 2)
    return info


def write_json(name: str, payload: dict[str, Any], path: Path | None = None) -> Path:
    """Write ``payload`` (with the machine) to benchmarks/results/NAME.json (or ``path``)."""
    path = path or RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"benchmark": name, "machine": machine(), **payload}, indent=2) + "\n")
    return path


def print_table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    """A rich table on stdout."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for col in columns:
        table.add_column(col)
    for row in rows:
        table.add_row(*[f"{v:.4g}" if isinstance(v, float) else str(v) for v in row])
    Console(width=max(120, Console().width)).print(table)


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))])

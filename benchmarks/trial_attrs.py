"""What does writing each metric as its own trial user attr cost? (issue 27, item 5)

A told trial writes its record (one JSON user attr, ``tfg_search:trial``) and, since 0.3, one
numeric user attr per metric (``metric:validity``, ...: what optuna-dashboard sorts and plots),
each an Optuna storage write (:func:`tfg_search.store.layout.metric_attrs`). This times those
writes alone, on the storage a search opens (SQLite in WAL mode through
:func:`tfg_search.store.studies.open_storage`; ``--postgres URL`` adds a PostgreSQL database),
for a record of the size a real trial writes and 0 (before), 3 (gmm2d) and 8 metrics: per
trial, the mean of ``--trials`` trials, repeated ``--repeats`` times in alternating order, with a
95% t interval over the repeats. The load average is recorded: the writes are fsync-bound on
SQLite and share the disk with whatever else runs.

Run:
    python benchmarks/trial_attrs.py                   # 200 trials x 5 repeats, SQLite
    python benchmarks/trial_attrs.py --trials 50 --repeats 3 --out /tmp/a.json

Prints a table and writes benchmarks/results/trial_attrs.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import optuna
from _common import log, machine, print_table, t_interval, write_json

from tfg_search.store.layout import metric_attrs, record
from tfg_search.store.studies import open_storage

METRICS = {0: {}, 3: {"validity": 0.75, "sw": 0.7379, "fidelity": 0.6767}}
METRICS[8] = {**METRICS[3], **{f"extra_{i}": 0.1 * i for i in range(5)}}


def _attrs(n_metrics: int) -> tuple[dict[str, Any], dict[str, float]]:
    """A told trial's record (as a search writes it) and its metric attrs."""
    attrs = record(
        role="search", round=0, config={"rho": 0.25, "mu": 0.5, "gamma": 0.01, "n_recur": 1, "n_iter": 4},
        samples=64, seed=12345, steps=50, metrics=METRICS[n_metrics] or {"validity": 0.75},
        wall_time_s=1.234, device="cpu", node="host", attempts=1,
        passes={"denoiser": 3200, "predictor": 12800},
    )  # fmt: skip
    return attrs, metric_attrs(record(metrics=METRICS[n_metrics])) if n_metrics else {}


def time_writes(url: str, n_metrics: int, trials: int) -> float:
    """Seconds per trial of writing its user attrs (the record and ``n_metrics`` metric attrs)."""
    study = optuna.create_study(storage=open_storage(url, create=True), direction="maximize")
    attrs, numbers = _attrs(n_metrics)
    asked = [study.ask() for _ in range(trials)]
    start = time.perf_counter()
    for trial in asked:
        for key, value in {**attrs, **numbers}.items():
            trial.set_user_attr(key, value)
    return (time.perf_counter() - start) / trials


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--postgres", default=None, help="also time this PostgreSQL URL")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    load_before = os.getloadavg()
    rows, results = [], []
    with tempfile.TemporaryDirectory() as tmp:
        storages = {"sqlite": f"sqlite:///{tmp}/attrs.db"}
        if args.postgres:
            storages["postgresql"] = args.postgres
        for backend, url in storages.items():
            per: dict[int, list[float]] = {n: [] for n in METRICS}
            for rep in range(args.repeats):
                order = list(METRICS) if rep % 2 == 0 else list(reversed(METRICS))
                for n in order:
                    per[n].append(time_writes(url, n, args.trials))
                log(f"{backend} repeat {rep + 1}/{args.repeats}")
            base = t_interval([1000 * s for s in per[0]])
            for n, seconds in per.items():
                mean, low, high = t_interval([1000 * s for s in seconds])
                ratio = mean / base[0]
                results.append(
                    {
                        "backend": backend,
                        "metrics": n,
                        "ms_per_trial": mean,
                        "ci95": [low, high],
                        "vs_record": ratio,
                    }
                )
                label = "record only (0.2)" if n == 0 else f"record + {n} metric attrs"
                rows.append([backend, label, f"{mean:.2f}", f"[{low:.2f}, {high:.2f}]", f"{ratio:.2f}x"])
    print_table(
        f"trial user attr writes per trial ({args.trials} trials x {args.repeats} repeats)",
        ["storage", "what is written", "ms / trial", "95% CI", "vs record only"],
        rows,
    )
    load = {"before": load_before, "after": os.getloadavg()}
    payload = {"machine": machine(), "load_average": load, "trials": args.trials, "repeats": args.repeats}
    path = write_json("trial_attrs", {**payload, "results": results}, args.out)
    print(f"load average before {load_before[0]:.2f}, after {load['after'][0]:.2f}; wrote {path}")


if __name__ == "__main__":
    main()

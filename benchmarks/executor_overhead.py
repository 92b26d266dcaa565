"""Per-trial orchestration overhead of the coordinator (local and Ray executors, SQLite and PostgreSQL),
and the speed-up of a digits round on 2 Ray actors over the local executor.

Overhead: the real coordinator (:class:`tfg_search.search.Coordinator`) runs a whole beam search whose
trials cost nothing (a trial function that returns fixed metrics at once), so everything measured is
orchestration. Per trial it adds up: ``plan`` (the sampler replaying the study to find the round, shared
by the round's trials), ``ask`` (``study.ask`` + suggest; the sampler claims a candidate in storage),
``spec`` (the trial's user attrs written), ``executor`` (the round's ``executor.map`` wall time shared by
its trials, minus their evaluation time) and ``tell`` (result attrs + ``study.tell``). The Ray rows use
2 warm actors (``cpus_per_trial=1``); PostgreSQL is a private throwaway server started as tests/pg.py
does (fsync off, as in the tests: a production server with fsync on pays its commit latency per write).

The "sqlite-wal" rows run the same on an SQLite file with ``journal_mode=WAL`` and
``synchronous=NORMAL`` (set by this script on each connection; tfg-search's storage does not set them):
the default rollback journal syncs the disk several times per commit, and Optuna commits every write.

Digits round: 6 candidates x 64 samples, task ``digits``, target ``3``, default steps; local sequential
(the default executor) and 2 Ray actors (``cpus_per_trial=1``), each timed warm (models loaded) over
``--repeats`` rounds (median); ``--batched`` adds ``LocalExecutor(batch_size=6)``.

Run from the repository root::

    python benchmarks/executor_overhead.py            # writes benchmarks/results/executor_overhead.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import optuna  # noqa: E402
import torch  # noqa: E402

from searchers import Lattice  # noqa: E402
from tfg_search.executors import Executor, LocalExecutor  # noqa: E402
from tfg_search.search import Coordinator, open_search_study  # noqa: E402
from tfg_search.settings import SearchSettings  # noqa: E402
from tfg_search.worker import TrialOutcome, TrialSpec  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "executor_overhead.json"


_SQLITE_PRAGMAS: list[str] = []


def _enable_sqlite_pragmas() -> None:
    """Run ``_SQLITE_PRAGMAS`` on every new SQLite connection of this process (the "sqlite-wal" rows)."""
    import sqlalchemy
    from sqlalchemy import event

    @event.listens_for(sqlalchemy.engine.Engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        if _SQLITE_PRAGMAS and type(dbapi_conn).__module__.startswith("sqlite3"):
            cursor = dbapi_conn.cursor()
            for pragma in _SQLITE_PRAGMAS:
                cursor.execute(pragma)
            cursor.close()


def instant_trial(spec: TrialSpec) -> TrialOutcome:
    """A trial that costs nothing: fixed metrics, so only orchestration is timed."""
    value = 0.5 + 0.01 * (spec.number % 7)
    metrics = {"validity": value, "fidelity": value, "sw": 1.0 - value}  # gmm2d's metric names
    return TrialOutcome(spec.number, metrics, None, 0.0, "cpu", "bench")


class InstantLocal(Executor):
    """The local executor's dispatch (a call in this process) around :func:`instant_trial`."""

    name = "local"

    def map(self, specs: Sequence[TrialSpec]) -> Iterator[TrialOutcome]:
        for spec in specs:
            yield instant_trial(spec)


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def _timed(fn: Callable[..., Any], sink: list[float]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            sink.append(time.perf_counter() - start)

    return wrapper


def coordinator_overhead(storage: str, executor: Executor, study_name: str) -> dict[str, Any]:
    """Run a whole instant-trial beam search and split each trial's orchestration time."""
    settings = SearchSettings(
        task="gmm2d",
        target="3",
        samples=16,
        rounds=6,
        final_top=0,
        space={
            "rho": Lattice(0.25, 2.0, 64.0),
            "mu": Lattice(0.25, 2.0, 64.0),
            "gamma": Lattice(0.001, 10, 1),
        },
    )
    study, resolved, _ = open_search_study(settings, storage, study_name)
    coord = Coordinator(study, resolved, executor)
    asks: list[float] = []
    specs: list[float] = []
    tells: list[float] = []
    plans: list[float] = []
    rounds: list[tuple[int, float, float]] = []  # (trials, plan s, map s)
    study.ask = _timed(study.ask, asks)  # type: ignore[method-assign]
    coord._spec = _timed(coord._spec, specs)  # type: ignore[method-assign]
    coord._tell = _timed(coord._tell, tells)  # type: ignore[method-assign]
    coord.sampler.plan = _timed(coord.sampler.plan, plans)  # type: ignore[method-assign]
    real_map = executor.map

    def timed_map(batch: Sequence[TrialSpec]) -> Iterator[TrialOutcome]:
        start = time.perf_counter()
        n_tells = len(tells)
        yield from real_map(batch)
        wall = time.perf_counter() - start - sum(tells[n_tells:])  # minus the tells done in between
        rounds.append((len(batch), plans[-1], wall))

    coord.executor = type("Timed", (), {"map": staticmethod(timed_map)})()  # type: ignore[assignment]
    start = time.perf_counter()
    coord.run_beam()
    total = time.perf_counter() - start
    per_trial: list[float] = []
    parts: dict[str, list[float]] = {"plan": [], "ask": [], "spec": [], "executor": [], "tell": []}
    i = 0
    for n, plan_s, map_s in rounds:
        for _ in range(n):
            row = {
                "plan": plan_s / n,
                "ask": asks[i],
                "spec": specs[i],
                "executor": map_s / n,
                "tell": tells[i],
            }
            for key, value in row.items():
                parts[key].append(value)
            per_trial.append(sum(row.values()))
            i += 1
    n_trials = len(per_trial)
    return {
        "trials": n_trials,
        "rounds": len(rounds),
        "median_ms": 1000 * statistics.median(per_trial),
        "p95_ms": 1000 * pct(per_trial, 0.95),
        "mean_ms": 1000 * total / n_trials,
        "parts_median_ms": {k: 1000 * statistics.median(v) for k, v in parts.items()},
    }


def digits_weights() -> tuple[dict[str, str] | None, str]:
    """Task options for the digits task, and what weights they are.

    The shipped weights when present. Without a trained UNet (``tfg-search train digits`` not run yet) a
    stand-in folder gets the shipped guiding CNNs and a randomly initialised UNet of the shipped
    architecture: a trial then costs exactly what it costs with trained weights (same network, same
    steps), only its metrics mean nothing.
    """
    import torch as th
    from diffusers import UNet2DModel

    from tasks.training import DIGITS_UNET_CONFIG, SCHEDULER_CONFIG
    from tasks.weights import save_weights, weights_dir

    shipped = weights_dir("digits")
    if (shipped / "unet.safetensors").is_file():
        return None, "shipped (trained)"
    folder = Path(tempfile.mkdtemp(prefix="tfg-bench-digits-"))
    for name in ("classifier", "thickness"):
        for ext in ("safetensors", "json"):
            shutil.copy(shipped / f"{name}.{ext}", folder / f"{name}.{ext}")
    th.manual_seed(0)
    config = {k: list(v) if isinstance(v, tuple) else v for k, v in DIGITS_UNET_CONFIG.items()}
    unet = UNet2DModel(**config)
    save_weights(
        folder, "unet", unet.state_dict(), {"unet_config": config, "scheduler_config": SCHEDULER_CONFIG}
    )
    return {
        "weights": str(folder)
    }, "stand-in: shipped CNNs + randomly initialised UNet of the shipped architecture"


def digits_specs(options: dict[str, str] | None, n: int = 6, samples: int = 64) -> list[TrialSpec]:
    """``n`` configurations of the default digits lattice (start point, neighbours, then further out)."""
    from tasks import get_task

    task = get_task("digits", options)
    resolved = SearchSettings(task="digits", target="3", samples=samples, task_options=options).resolve(task)
    lattices = resolved.lattices()
    names = list(lattices)
    points = [dict.fromkeys(names, 0)]
    for step in (1, 2):
        for name in names:
            points.append({**dict.fromkeys(names, 0), name: step})
    specs = []
    for number, exps in enumerate(points[:n]):
        params = {k: lattices[k].init * lattices[k].factor ** exps[k] for k in names}
        config = resolved.config(params)
        spec = TrialSpec(number, "digits", "3", config, samples, resolved.seed, resolved.steps, "cpu")
        specs.append(dataclasses.replace(spec, task_options=options))
    return specs


def time_round(executor: Executor, specs: list[TrialSpec], repeats: int) -> dict[str, Any]:
    walls, trial_walls = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        outcomes = list(executor.map(specs))
        walls.append(time.perf_counter() - start)
        assert all(o.ok for o in outcomes), [o.error for o in outcomes if not o.ok]
        trial_walls += [o.wall_time_s for o in outcomes]
    return {"round_s": statistics.median(walls), "rounds_s": walls, "trial_s": statistics.median(trial_walls)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=1, help="warm digits rounds per executor")
    parser.add_argument("--batched", action="store_true", help="also time LocalExecutor(batch_size=6)")
    parser.add_argument("--no-postgres", action="store_true", help="skip the PostgreSQL rows")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    began = time.perf_counter()

    from tfg_search.executors.ray_pool import RayExecutor

    pg = None
    folder = tempfile.mkdtemp(prefix="tfg-bench-")
    storages = {"sqlite": f"sqlite:///{folder}/bench.db", "sqlite-wal": f"sqlite:///{folder}/wal.db"}
    _enable_sqlite_pragmas()
    if not args.no_postgres:
        from tests.pg import PostgresServer

        pg = PostgresServer.start()
        storages["postgresql"] = pg.create_database()
    ray_pool = RayExecutor(num_workers=2, cpus_per_trial=1, trial_fn=instant_trial)
    overhead = []
    try:
        ray_pool.workers_info()  # actors started before timing
        for storage_name, url in storages.items():
            wal = ["PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL"]
            _SQLITE_PRAGMAS[:] = wal if storage_name == "sqlite-wal" else []
            for executor_name, executor in (("local", InstantLocal()), ("ray", ray_pool)):
                row = coordinator_overhead(url, executor, f"bench-{executor_name}")
                row.update(executor=executor_name, storage=storage_name)
                overhead.append(row)
                print(
                    f"overhead {executor_name:5} {storage_name:10} median {row['median_ms']:.1f} ms",
                    flush=True,
                )
    finally:
        ray_pool.close()
        if pg is not None:
            pg.stop()

    options, weights = digits_weights()
    specs = digits_specs(options)
    local = LocalExecutor()
    list(local.map(specs[:1]))  # load the models in this process
    digits = {"local": time_round(local, specs, args.repeats)}
    print(f"digits local {digits['local']['round_s']:.2f} s", flush=True)
    if args.batched:
        batched = LocalExecutor(batch_size=len(specs))
        digits["local_batched"] = time_round(batched, specs, args.repeats)
        print(f"digits local batched {digits['local_batched']['round_s']:.2f} s", flush=True)
    start = time.perf_counter()
    with RayExecutor(num_workers=2, cpus_per_trial=1) as pool:
        list(pool.map(specs[:2]))  # both actors start and load their models
        digits["ray_warmup_s"] = time.perf_counter() - start
        digits["ray"] = time_round(pool, specs, args.repeats)
    print(f"digits ray (2 actors) {digits['ray']['round_s']:.2f} s", flush=True)
    shutil.rmtree(folder, ignore_errors=True)
    if options:
        shutil.rmtree(options["weights"], ignore_errors=True)

    digits_trial_ms = 1000 * digits["local"]["trial_s"]
    result = {
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "ray": __import__("ray").__version__,
            "optuna": optuna.__version__,
            "load_average_at_end": os.getloadavg(),
        },
        "overhead": overhead,
        "digits_round": digits,
        "digits_weights": weights,
        "speedup_ray_over_local": digits["local"]["round_s"] / digits["ray"]["round_s"],
        "speedup_ray_over_local_batched": (
            digits["local_batched"]["round_s"] / digits["ray"]["round_s"] if args.batched else None
        ),
        "digits_trial_ms": digits_trial_ms,
        "benchmark_s": time.perf_counter() - began,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")

    print()
    print(
        f"{'executor':9} {'storage':11} {'trials':>6} {'median ms':>10} {'p95 ms':>8} {'% digits trial':>15}"
    )
    for row in overhead:
        share = 100 * row["median_ms"] / digits_trial_ms
        print(
            f"{row['executor']:9} {row['storage']:11} {row['trials']:>6} {row['median_ms']:>10.1f} "
            f"{row['p95_ms']:>8.1f} {share:>14.2f}%"
        )
    print()
    print("digits round, 6 candidates x 64 samples (warm, median of rounds):")
    for name in ("local", "local_batched", "ray"):
        if name in digits:
            row = digits[name]
            print(f"  {name:14} {row['round_s']:6.2f} s  (median trial {row['trial_s']:.2f} s)")
    print(f"  ray start + warm-up (2 actors load their models): {digits['ray_warmup_s']:.2f} s")
    print(f"speed-up of 2 Ray actors over local: {result['speedup_ray_over_local']:.2f}x")
    if args.batched:
        print(f"speed-up of 2 Ray actors over local batched: {result['speedup_ray_over_local_batched']:.2f}x")
    print(f"took {result['benchmark_s']:.0f} s; wrote {args.out}")


if __name__ == "__main__":
    main()

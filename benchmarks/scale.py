"""The service at scale: flat per-trial cost over a 2,000-trial beam study, and the query commands on
a database of 50 searches.

Growth: a synthetic objective (no model: metrics computed from the configuration at once) runs
through :class:`searchers.TFGBeamSampler` the way the coordinator drives it
(:class:`tfg_search.run.loop.SearchLoop`: plan a round, ask its trials, evaluate them, tell each
result) for 2,000 trials of a wide beam (top-k 8) on fine lattices (factor 1.1, so that the search
does not run out of new configurations) on SQLite (WAL, as tfg-search opens it) and on PostgreSQL (a
private throwaway server, as tests/helpers/pg.py starts it). It prints ms per trial for each block of 200;
the target is last block <= 1.3x the first. On a shared machine the load drifts during the minutes
this takes, so each block has a *control*: the first 200 trials of a new study of the same settings
in the same database, run in turns with the block (20 trials of one, 20 of the other), which costs
what the first block costs under the load of that moment. ``normalised`` is each block's cost over
its control's, relative to the first block's: the growth with study size, with the drift of the
machine divided out. Client CPU time per trial (``time.process_time``, not counting the database
server's) is recorded too.

Queries: 50 searches are created in one database (gmm2d settings, the coordinator with a no-work
trial function: the default rung search and final re-runs, about 30 trials each), next to the
2,000-trial study. Then ``tfg-search --help``, ``tasks``, ``studies``, ``best --study X`` (a small
study and the 2,000-trial one) and ``export`` run as whole processes and their wall time is taken
(median of ``--repeats``); whether the process imported torch, Optuna or SQLAlchemy is recorded too.
Targets (issue 12): ``--help``, ``studies``, ``best``, ``export`` <= 0.5 s, ``tasks`` <= 1 s.

``benchmarks/results/scale.json`` also holds, under ``"load"``, the figures of tests/test_load.py
(written by that test with ``TFG_WRITE_LOAD_RESULTS=1``); this script keeps them.

Run from the repository root::

    OMP_NUM_THREADS=1 python benchmarks/scale.py            # about 10 min on a busy 2-core machine
    OMP_NUM_THREADS=1 python benchmarks/scale.py --quick    # 400 trials, 5 studies: a smoke run
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import optuna  # noqa: E402

from searchers import Lattice  # noqa: E402
from tfg_search.run.coordinator import Coordinator, open_search_study  # noqa: E402
from tfg_search.run.executors import Executor  # noqa: E402
from tfg_search.run.loop import SearchLoop  # noqa: E402
from tfg_search.run.settings import SearchSettings  # noqa: E402
from tfg_search.trial import TrialOutcome, TrialSpec  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "scale.json"
GROWTH_TARGET = 1.3
QUERY_TARGETS_S = {"--help": 0.5, "tasks": 1.0, "studies": 0.5, "best": 0.5, "export": 0.5}
BIG_STUDY = "scale-2000"


def synthetic_trial(spec: TrialSpec) -> TrialOutcome:
    """Metrics from the configuration, no model: larger strengths score higher (so a fine lattice
    never runs out), with a small deterministic ripple so that the ranking is not trivial."""
    c = spec.config
    base = math.log(c.rho) + math.log(c.mu) + 0.5 * math.log(c.gamma)
    value = base + 0.05 * math.sin(7.0 * math.log(c.rho * c.mu / c.gamma))
    metrics = {"validity": value, "fidelity": value, "sw": -value}
    return TrialOutcome(spec.number, metrics, None, 0.0, "cpu", "bench")


class SyntheticExecutor(Executor):
    """Runs :func:`synthetic_trial` in this process (the local executor's dispatch, no model)."""

    name = "local"

    def map(self, specs: Sequence[TrialSpec]) -> Iterator[TrialOutcome]:
        for spec in specs:
            yield synthetic_trial(spec)


def growth_settings() -> SearchSettings:
    """A wide beam on fine lattices: top-k 8, factor 1.1, rounds enough for 2,000 trials."""
    return SearchSettings(
        task="gmm2d",
        target="3",
        samples=16,
        rounds=1000,
        top_k=8,
        final_top=1,
        search="beam",
        space={
            "rho": Lattice(0.25, 1.1, 64.0),
            "mu": Lattice(0.25, 1.1, 64.0),
            "gamma": Lattice(0.001, 1.1, 1.0),
        },
    )


def _run(loop: SearchLoop, n_trials: int) -> tuple[list[float], list[float], int]:
    """``n_trials`` more beam trials the coordinator's way: wall and CPU seconds per trial, rounds."""
    executor = SyntheticExecutor()
    walls: list[float] = []
    cpus: list[float] = []
    rounds = 0
    while len(walls) < n_trials:
        start, cpu = time.perf_counter(), time.process_time()
        plan = loop.plan()
        if plan.exhausted:
            raise RuntimeError(f"the search ran out of configurations after {len(walls)} trials")
        wanted = min(plan.pending, n_trials - len(walls))
        batch = [p for p in (loop.ask() for _ in range(wanted)) if p is not None]
        by_number = {p.number: p for p in batch}
        for outcome in executor.map([p.spec for p in batch]):
            loop.tell(by_number[outcome.number], outcome)
        walls += [(time.perf_counter() - start) / len(batch)] * len(batch)
        cpus += [(time.process_time() - cpu) / len(batch)] * len(batch)
        rounds += 1
    return walls, cpus, rounds


def _open_loop(url: str, name: str) -> SearchLoop:
    return open_search_study(growth_settings(), url, name)[0]


def grow(url: str, n_trials: int, block: int, chunk: int) -> dict[str, Any]:
    """``n_trials`` beam trials in one study, by blocks; each block has a control, the first
    ``block`` trials of a new study, run in turns with it, ``chunk`` trials each (so that both
    see the same load)."""
    loop = _open_loop(url, BIG_STUDY)
    walls: list[float] = []
    cpus: list[float] = []
    controls: list[float] = []
    rounds = 0
    began = time.perf_counter()
    while len(walls) < n_trials:
        control, control_walls = _open_loop(url, f"control-{len(controls)}"), []
        size = min(block, n_trials - len(walls))
        for start in range(0, size, chunk):
            wall, cpu, n = _run(loop, min(chunk, size - start))
            walls, cpus, rounds = walls + wall, cpus + cpu, rounds + n
            control_walls += _run(control, min(chunk, size - start))[0]
        controls.append(1000 * statistics.fmean(control_walls))
    blocks = [1000 * statistics.fmean(walls[i : i + block]) for i in range(0, len(walls), block)]
    cpu_blocks = [1000 * statistics.fmean(cpus[i : i + block]) for i in range(0, len(cpus), block)]
    relative = [b / c for b, c in zip(blocks, controls, strict=True)]
    return {
        "trials": len(walls),
        "rounds": rounds,
        "block": block,
        "blocks_ms": blocks,
        "last_over_first": blocks[-1] / blocks[0],
        "chunk": chunk,
        "control_ms": controls,
        "normalised": [r / relative[0] for r in relative],
        "normalised_last_over_first": relative[-1] / relative[0],
        "cpu_blocks_ms": cpu_blocks,
        "cpu_last_over_first": cpu_blocks[-1] / cpu_blocks[0],
        "target": GROWTH_TARGET,
        "wall_s": time.perf_counter() - began,
    }


def make_studies(url: str, n: int) -> dict[str, Any]:
    """``n`` small searches (default gmm2d lattices, top-k 2, 6 rounds, 2 final re-runs)."""
    settings = SearchSettings(task="gmm2d", target="3", samples=16, final_samples=32)
    executor = SyntheticExecutor()
    began = time.perf_counter()
    trials = 0
    for i in range(n):
        loop, _ = open_search_study(settings, url, f"study-{i:02d}")
        Coordinator(loop, executor).run()
        trials += len(loop.records())
    return {"studies": n, "trials": trials, "wall_s": time.perf_counter() - began}


PROBE = (
    "import sys; from tfg_search.cli import main\n"
    "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
    "print('LOADED', *[m for m in ('torch', 'optuna', 'sqlalchemy') if m in sys.modules], file=sys.stderr)"
)


def _shown(args: list[str]) -> list[str]:
    """The command's arguments with the storage URL and the output file named, not spelled out."""
    shown = []
    for previous, arg in zip(["", *args], args, strict=False):
        shown.append("URL" if "://" in arg else "FILE" if previous == "--out" else arg)
    return shown


def time_cli(args: list[str], repeats: int) -> dict[str, Any]:
    """Median wall time of ``tfg-search ARGS`` as a whole process, and what it imported."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    walls = []
    for _ in range(repeats):
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "tfg_search", *args], capture_output=True, text=True, env=env, timeout=300
        )
        walls.append(time.perf_counter() - start)
        if proc.returncode != 0:
            raise RuntimeError(f"tfg-search {args[0]} failed: {proc.stderr[-2000:]}")
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, env=env, timeout=300
    )
    loaded = next((line.split()[1:] for line in proc.stderr.splitlines() if line.startswith("LOADED")), None)
    target = QUERY_TARGETS_S[args[0]]
    return {
        "command": "tfg-search " + " ".join(_shown(args)),
        "median_s": statistics.median(walls),
        "walls_s": walls,
        "imports": loaded,
        "imports_torch": loaded is not None and "torch" in loaded,
        "target_s": target,
        "met": statistics.median(walls) <= target,
    }


def queries(url: str, repeats: int, n_studies: int, folder: str) -> list[dict[str, Any]]:
    """Time the commands on the database (a small study: study-07, and the big one)."""
    small = f"study-{min(7, n_studies - 1):02d}"
    out = str(Path(folder) / "best.json")
    rows = [time_cli(["--help"], repeats), time_cli(["tasks"], repeats)]
    rows.append(time_cli(["studies", "--storage", url], repeats))
    rows.append(time_cli(["studies", "--storage", url, "--json"], repeats))
    rows.append(time_cli(["best", "--study", small, "--storage", url], repeats))
    rows.append(time_cli(["best", "--study", BIG_STUDY, "--storage", url], repeats))
    export = ["export", "--study", BIG_STUDY, "--out", out, "--force", "--storage", url]
    rows.append(time_cli(export, repeats))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=2000)
    parser.add_argument("--block", type=int, default=200)
    parser.add_argument("--chunk", type=int, default=20, help="trials per turn of a block and its control")
    parser.add_argument("--studies", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=5, help="runs of each query command")
    parser.add_argument("--quick", action="store_true", help="400 trials, 5 studies, 1 repeat")
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.quick:
        args.trials, args.studies, args.repeats = 400, 5, 1
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    began = time.perf_counter()
    load_at_start = os.getloadavg()
    folder = tempfile.mkdtemp(prefix="tfg-scale-")
    storages = {"sqlite": f"sqlite:///{folder}/scale.db"}
    pg = None
    if not args.no_postgres:
        from tests.helpers.pg import PostgresServer

        pg = PostgresServer.start()
        storages["postgresql"] = pg.create_database()
    growth: dict[str, Any] = {}
    made: dict[str, Any] = {}
    timed: dict[str, Any] = {}
    try:
        for name, url in storages.items():
            growth[name] = grow(url, args.trials, args.block, args.chunk)
            row = growth[name]
            blocks = " ".join(f"{b:.1f}" for b in row["blocks_ms"])
            controls = " ".join(f"{b:.1f}" for b in row["control_ms"])
            print(f"{name:10} ms/trial by block of {args.block}: {blocks} (last/first "
                  f"{row['last_over_first']:.2f}); controls: {controls}; normalised last/first "
                  f"{row['normalised_last_over_first']:.2f}", flush=True)  # fmt: skip
            made[name] = make_studies(url, args.studies)
            print(f"{name:10} {args.studies} studies, {made[name]['trials']} trials "
                  f"in {made[name]['wall_s']:.0f} s", flush=True)  # fmt: skip
            timed[name] = queries(url, args.repeats, args.studies, folder)
            for row in timed[name]:
                print(f"{name:10} {row['command']:40} {row['median_s']:.2f} s (imports {row['imports']})",
                      flush=True)  # fmt: skip
    finally:
        if pg is not None:
            pg.stop()
        shutil.rmtree(folder, ignore_errors=True)

    previous = json.loads(args.out.read_text()) if args.out.exists() else {}
    result = {
        "benchmark": "scale",
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "optuna": optuna.__version__,
            "load_average_at_start": load_at_start,
            "load_average_at_end": os.getloadavg(),
        },
        "settings": {
            "growth": "gmm2d, rho/mu/gamma lattices of factor 1.1, top_k 8, synthetic trial, SearchLoop",
            "trials": args.trials,
            "block": args.block,
            "control": f"per block, the first {args.block} trials of a new study of the same settings, "
            f"run in turns with the block, {args.chunk} trials each",
            "studies": f"{args.studies} x gmm2d defaults (top_k 2, 6 rounds, final_top 2), no-work trials",
        },
        "growth": growth,
        "studies": made,
        "queries": timed,
        "wall_s": time.perf_counter() - began,
    }
    if "load" in previous:
        result["load"] = previous["load"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")

    print()
    print(f"{'storage':11} {'first ms':>8} {'last ms':>8} {'last/first':>10} {'normalised':>10} "
          f"{'cpu last/first':>14} {'target':>7}")  # fmt: skip
    for name, row in growth.items():
        print(f"{name:11} {row['blocks_ms'][0]:>8.1f} {row['blocks_ms'][-1]:>8.1f} "
              f"{row['last_over_first']:>10.2f} {row['normalised_last_over_first']:>10.2f} "
              f"{row['cpu_last_over_first']:>14.2f} {GROWTH_TARGET:>7.1f}")  # fmt: skip
    print()
    print(f"{'storage':11} {'command':42} {'wall s':>7} {'target':>7} {'met':>4}  imports")
    for name, rows in timed.items():
        for row in rows:
            print(f"{name:11} {row['command']:42} {row['median_s']:>7.2f} {row['target_s']:>7.1f} "
                  f"{'yes' if row['met'] else 'no':>4}  {' '.join(row['imports'] or []) or '-'}")  # fmt: skip
    print(f"took {result['wall_s']:.0f} s; wrote {args.out}")


if __name__ == "__main__":
    main()

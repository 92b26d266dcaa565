"""Torch threads of a local search on a shared CPU: ``--threads 1``, ``2`` and the default, idle and loaded.

One small real search (digits, ``--search random``: one wave of 4 candidates on 8 samples and 5
steps, then one final re-run: a few seconds at the best setting) runs through ``run_search`` with
the in-process executor (the CLI's path, ``LocalExecutor`` deciding batching and threads), each run
in a fresh process and a fresh SQLite file so that the default reads the load average as a new
``tfg-search search`` would. The timing is the search's own (``run_search``), not the process's
start-up. Two conditions:

* **idle**: no load added by this script (other work on the machine stays; its load is recorded);
* **loaded**: ``--load-procs`` processes (default 2) each multiply 512x512 matrices in a loop at
  torch's own default threads, as another job on the machine would, started ``--warmup`` seconds
  before the first timing so that the 1-minute load average shows them.

Each setting runs ``--repeats`` times (the settings interleaved, their order rotated each repeat);
the table gives the median, the threads the default chose, and the 1-minute load average read
before and after each timing. ``--conditions idle`` or ``loaded`` reruns one condition and keeps
the other's results in the JSON file. The default passes when its median is within 1.5x of the
best explicit setting's in each condition (the script exits 1 otherwise). On a 2-core machine
``--threads 2`` is also the former default (the CPU share, whatever the load).

Run:
    python benchmarks/threads.py                     # both conditions, writes benchmarks/results/threads.json
    python benchmarks/threads.py --conditions idle --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import RESULTS, log, median, print_table, write_json

SEARCH = dict(search="random", trials=4, wave=4, samples=8, final_samples=8, final_top=1, steps=5)
TASK, TARGET = "digits", "3"
SETTINGS = ("1", "2", "default")
LIMIT = 1.5
LOAD = "import torch\na = torch.randn(512, 512)\nwhile True:\n    a = torch.tanh(a @ a)\n"


def child(threads: str, storage: str) -> None:
    """One timed search in this process; prints its figures as one JSON line."""
    from tfg_search.run.coordinator import run_search
    from tfg_search.run.executors import LocalExecutor
    from tfg_search.run.settings import SearchSettings
    from tfg_search.run.threads import load_average

    load = load_average()  # what the default reads (LocalExecutor reads it again, a moment later)
    executor = LocalExecutor(threads=None if threads == "default" else int(threads))
    start = time.perf_counter()
    report = run_search(SearchSettings(TASK, TARGET, **SEARCH), storage, "threads", executor)
    seconds = time.perf_counter() - start
    out = {"threads": executor.threads, "load_read": load, "seconds": seconds, "score": report.best_score}
    print(json.dumps(out))


def one_run(threads: str, db: Path) -> dict[str, Any]:
    """One search in a fresh process and SQLite file, with the load average before and after it."""
    storage = f"sqlite:///{db}"
    before = os.getloadavg()[0]
    proc = subprocess.run(
        [sys.executable, __file__, "--child", threads, storage], capture_output=True, text=True, check=False
    )
    after = os.getloadavg()[0]
    if proc.returncode != 0:
        raise SystemExit(f"the search with threads={threads} failed:\n{proc.stderr[-3000:]}")
    run = json.loads(proc.stdout.strip().splitlines()[-1])
    return {**run, "load_before": round(before, 2), "load_after": round(after, 2)}


def start_load(procs: int) -> list[subprocess.Popen[bytes]]:
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}  # torch's own default
    return [subprocess.Popen([sys.executable, "-c", LOAD], env=env) for _ in range(procs)]


def condition(name: str, repeats: int, load_procs: int, warmup: float) -> dict[str, Any]:
    """Time every setting ``repeats`` times under one condition."""
    loaders = start_load(load_procs) if name == "loaded" else []
    try:
        if loaders:
            log(f"{load_procs} load processes started; waiting {warmup:.0f} s for the load average")
            time.sleep(warmup)
        runs: dict[str, list[dict[str, Any]]] = {s: [] for s in SETTINGS}
        with tempfile.TemporaryDirectory() as tmp:
            for rep in range(repeats):
                order = SETTINGS[rep % len(SETTINGS) :] + SETTINGS[: rep % len(SETTINGS)]
                for setting in order:
                    run = one_run(setting, Path(tmp) / f"{setting}-{rep}.db")
                    runs[setting].append(run)
                    log(
                        f"{name} threads={setting} ({run['threads']}): {run['seconds']:.2f} s, "
                        f"load {run['load_before']} -> {run['load_after']}"
                    )
    finally:
        for proc in loaders:
            proc.kill()
            proc.wait()
    medians = {s: median([r["seconds"] for r in runs[s]]) for s in SETTINGS}
    best = min(medians[s] for s in SETTINGS if s != "default")
    return {
        "load_procs": len(loaders),
        "runs": runs,
        "median_s": medians,
        "default_over_best": medians["default"] / best,
        "within_limit": medians["default"] / best <= LIMIT,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs=2, metavar=("THREADS", "STORAGE"), help=argparse.SUPPRESS)
    parser.add_argument("--conditions", default="idle,loaded", help="idle, loaded or both (default)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--load-procs", type=int, default=2, help="busy processes of the loaded condition")
    parser.add_argument("--warmup", type=float, default=60.0, help="seconds of load before the first timing")
    parser.add_argument("--out", type=Path, default=RESULTS / "threads.json")
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    names = [c.strip() for c in args.conditions.split(",")]
    if not names or any(n not in ("idle", "loaded") for n in names) or args.repeats < 1:
        raise SystemExit("--conditions takes idle, loaded or idle,loaded, and --repeats at least 1")
    old = json.loads(args.out.read_text()).get("conditions", {}) if args.out.exists() else {}
    conditions = {n: c for n, c in old.items() if n not in names}  # a condition not rerun is kept
    search = {"task": TASK, "target": TARGET, **SEARCH}
    for name in names:
        conditions[name] = {
            "date": time.strftime("%Y-%m-%d %H:%M:%S"),
            **condition(name, args.repeats, args.load_procs, args.warmup),
        }
        path = write_json("threads", {"search": search, "limit": LIMIT, "conditions": conditions}, args.out)
        log(f"wrote {path}")  # after each condition: a long run stopped later keeps what it measured
    rows = []
    for name, cond in conditions.items():
        for setting in SETTINGS:
            runs = cond["runs"][setting]
            rows.append([
                name, setting, "/".join(str(r["threads"]) for r in runs), cond["median_s"][setting],
                " ".join(f"{r['load_before']:.1f}->{r['load_after']:.1f}" for r in runs),
                f"{cond['default_over_best']:.2f}x" if setting == "default" else "",
            ])  # fmt: skip
    print_table(
        f"{TASK} search ({SEARCH['wave']} candidates + 1 final, {SEARCH['steps']} steps), median of runs",
        ["condition", "--threads", "threads used", "median s", "load 1m before->after", "default / best"],
        rows,
    )
    failed = [n for n, c in conditions.items() if not c["within_limit"]]
    if failed:
        raise SystemExit(f"the default is more than {LIMIT}x the best --threads in: {', '.join(failed)}")


if __name__ == "__main__":
    main()

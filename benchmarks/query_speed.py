"""How fast do the query commands answer on a large search? (``tfg-search studies``, ``best``, ``export``)

A search of ``--trials`` trials (Optuna's random search through the service's loop, each trial
scored at once by a synthetic executor: what is timed is reading, not sampling) is stored in a
fresh SQLite file (and, with ``--postgres URL``, in that database too); then each command runs
``--repeats`` times as a fresh process (``tfg-search`` as a user meets it, imports included) and
the median wall time is reported, with the median CPU time of the process (user + system: what
the command costs, less sensitive than wall time to other work on the machine) and whether it
imported torch (it must not). The target (issue 26): under 1 s, median of 5, on a 1,000-trial
study, on an idle machine. The load average at the start and the end is recorded: on a busy
machine wall time is CPU time stretched by the share of the cores the process got.

For comparison, ``optuna-list`` is the least a read through Optuna costs: a fresh process that
imports Optuna, opens the storage (Optuna's RDBStorage imports alembic) and lists the studies
with their attributes, the read path of tfg-search 0.3's first design; the query commands read
their summary rows with SQLAlchemy Core instead (tfg_search/store/query.py).

Run:
    python benchmarks/query_speed.py                  # 1,000 trials, SQLite, 5 repeats
    python benchmarks/query_speed.py --trials 200 --repeats 3 --out /tmp/q.json

Prints a table and writes benchmarks/results/query_speed.json.
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, log, print_table, write_json

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tfg_search.run.executors import Executor  # noqa: E402
from tfg_search.trial import TrialOutcome, TrialSpec  # noqa: E402

PROBE = (
    "import sys\nfrom tfg_search.cli import main\n"
    "try:\n    main(sys.argv[1:])\nexcept SystemExit as exit:\n    assert not exit.code, exit.code\n"
    "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', file=sys.stderr)\n"
)
OPTUNA_LIST = (
    "import sys\nimport optuna\n"
    "storage = optuna.storages.RDBStorage(\n"
    "    sys.argv[2], skip_table_creation=True, skip_compatibility_check=True\n)\n"
    "print(len(storage.get_all_studies()))\nprint('NO-TORCH', file=sys.stderr)\n"
)


class Instant(Executor):
    """A score from the configuration, at once (the search is only the study to read)."""

    name = "instant"

    def map(self, specs: Sequence[TrialSpec]) -> Iterator[TrialOutcome]:
        for spec in specs:
            c = spec.config
            value = -abs(math.log((c.rho + 1e-3) / 0.01)) - abs(math.log((c.mu + 1e-3) / 0.01))
            yield TrialOutcome(
                spec.number, {"validity": value, "fidelity": value, "sw": -value}, None, 0.0, "cpu", "q"
            )


def make_search(url: str, trials: int) -> tuple[str, float]:
    """A finished random search of ``trials`` trials in ``url``: (its name, seconds to make it)."""
    from tfg_search.run.coordinator import run_search
    from tfg_search.run.settings import SearchSettings

    settings = SearchSettings(
        task="gmm2d", target="3", samples=8, final_samples=8, steps=4, search="random", trials=trials, wave=50
    )
    start = time.perf_counter()
    report = run_search(settings, url, f"big-{trials}", Instant())
    return report.study_name, time.perf_counter() - start


def time_command(args: list[str], repeats: int, cwd: Path, code: str = PROBE) -> dict[str, Any]:
    """Median wall and CPU time of ``tfg-search ARGS`` (or of ``code`` with ``args``) as a fresh
    process, and whether torch was imported."""
    times, cpus, torch = [], [], False
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for _ in range(repeats):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-c", code, *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=300
        )
        times.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        if proc.returncode != 0:
            raise SystemExit(f"{args[0]} failed: {proc.stderr[-2000:]}")
        torch = torch or "NO-TORCH" not in proc.stderr
    return {
        "median_s": statistics.median(times),
        "times_s": times,
        "median_cpu_s": statistics.median(cpus),
        "cpu_s": cpus,
        "imports_torch": torch,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--postgres", default=None, help="also a PostgreSQL database URL (an empty one)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    results: dict[str, Any] = {}
    rows = []
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        urls = {"sqlite": f"sqlite:///{tmp}/studies.db"}
        if args.postgres:
            urls["postgresql"] = args.postgres
        for kind, url in urls.items():
            name, made = make_search(url, args.trials)
            log(f"{kind}: a search of {args.trials} trials made in {made:.1f} s")
            per: dict[str, Any] = {"made_s": made}
            out = Path(tmp) / "best.json"
            for command, code in (
                (["studies", "--storage", url], PROBE),
                (["best", "--study", name, "--storage", url], PROBE),
                (["export", "--study", name, "--out", str(out), "--force", "--storage", url], PROBE),
                (["optuna-list", url], OPTUNA_LIST),
            ):
                per[command[0]] = timed = time_command(command, args.repeats, Path(tmp), code)
                rows.append(
                    [
                        kind,
                        command[0],
                        f"{timed['median_s']:.3f}",
                        ", ".join(f"{t:.2f}" for t in timed["times_s"]),
                        f"{timed['median_cpu_s']:.3f}",
                        "yes" if timed["imports_torch"] else "no",
                        "yes" if timed["median_s"] < 1.0 else "no",
                    ]
                )
            results[kind] = per
    print_table(
        f"query commands on a {args.trials}-trial search (fresh process each, median of {args.repeats})",
        ["storage", "command", "median s", "each s", "median CPU s", "imports torch", "under 1 s"],
        rows,
    )
    load = os.getloadavg()
    payload = {
        "benchmark": "query_speed",
        "command": " ".join(sys.argv),
        "trials": args.trials,
        "repeats": args.repeats,
        "load_average_start": load_start,
        "load_average_end": load,
        "results": results,
    }
    path = write_json("query_speed", payload, Path(args.out) if args.out else RESULTS / "query_speed.json")
    log(f"wrote {path} (load average {load_start[0]:.2f} at the start, {load[0]:.2f} at the end: idle is 0)")


if __name__ == "__main__":
    main()

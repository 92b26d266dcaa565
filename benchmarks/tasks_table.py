"""The tasks table of docs/tasks.md: unguided vs TFG at a sensible setting vs the best preset tried.

For every bundled task and a few targets it runs (64 samples, the task's default steps, seed 0):

* ``unguided``: all strengths 0;
* ``tfg``: TFG at the task's sensible setting (:data:`TFG_SETTINGS`, chosen from the task's
  default lattice, not searched per target);
* every preset (dps, lgd, freedom, mpgd, ugd) at a few strengths (:data:`PRESET_STRENGTHS`, points
  of the task's ``default_strength_space`` around where its objective peaks); the best by the
  task's objective is reported as ``best preset``.

Prints a table and writes ``benchmarks/results/tasks_table.json`` (rows, machine info, wall time).

    python benchmarks/tasks_table.py [--samples 64] [--quick] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tasks import get_task  # noqa: E402
from tfg_search.errors import NonFiniteSampleError  # noqa: E402
from tfg_search.guidance.config import method_config  # noqa: E402
from tfg_search.run.evaluation import evaluate  # noqa: E402
from tfg_search.run.objective import score  # noqa: E402

TARGETS: dict[str, list[str]] = {
    "gmm2d": ["0", "5"],
    "digits": ["3", "8"],
    "digits-attrs": ["7+thick", "8+thin"],
    "digits-inpaint": ["0", "100"],
    "digits-superres": ["0", "100"],
    "digits-deblur": ["0", "100"],
}
TFG_SETTINGS: dict[str, dict[str, float | int]] = {
    "gmm2d": {"rho": 0.008, "mu": 0.008, "gamma": 0.01, "n_recur": 1, "n_iter": 2},
    "digits": {"rho": 0.02, "mu": 0.02, "gamma": 0.1, "n_recur": 2, "n_iter": 2},
    "digits-attrs": {"rho": 0.02, "mu": 0.02, "gamma": 0.1, "n_recur": 2, "n_iter": 2},
    "digits-inpaint": {"rho": 1.0, "mu": 0.5, "gamma": 0.01, "n_recur": 2, "n_iter": 2},
    "digits-superres": {"rho": 1.0, "mu": 0.5, "gamma": 0.01, "n_recur": 2, "n_iter": 2},
    "digits-deblur": {"rho": 1.0, "mu": 0.5, "gamma": 0.01, "n_recur": 2, "n_iter": 2},
}
PRESETS = ("dps", "lgd", "freedom", "mpgd", "ugd")


PRESET_STRENGTHS: dict[str, list[float]] = {
    "gmm2d": [0.004, 0.016, 0.064],
    "digits": [0.01, 0.04, 0.16],
    "digits-attrs": [0.01, 0.04, 0.16],
    "digits-inpaint": [0.5, 2.0],
    "digits-superres": [0.5, 2.0],
    "digits-deblur": [0.5, 2.0],
}


def strengths(task_name: str, quick: bool) -> list[float]:
    """The preset strengths tried for a task (``quick``: only the middle one)."""
    values = PRESET_STRENGTHS[task_name]
    return [values[len(values) // 2]] if quick else values


def run_one(task, target: str, config, n: int) -> dict:
    """One evaluation as a row fragment (a non-finite run scores -inf)."""
    try:
        res = evaluate(task, target, config, n, seed=0)
        return {
            "metrics": res.metrics,
            "score": score(res.metrics, task.objective),
            "wall_s": res.wall_time_s,
        }
    except NonFiniteSampleError as err:
        return {"metrics": {}, "score": float("-inf"), "error": str(err)}


def main() -> None:
    """Run the table and write its JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--quick", action="store_true", help="one preset strength (the middle)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 on a busy machine)")
    parser.add_argument("--tasks", nargs="*", default=list(TARGETS))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/tasks_table.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    rows = []
    for name in args.tasks:
        task = get_task(name)
        for target in TARGETS[name]:
            t0 = time.perf_counter()
            unguided = run_one(task, target, method_config("unguided"), args.samples)
            tfg = run_one(task, target, method_config("tfg", **TFG_SETTINGS[name]), args.samples)
            tried = []
            for method in PRESETS:
                for s in strengths(name, args.quick):
                    r = run_one(task, target, method_config(method, s), args.samples)
                    tried.append({"method": method, "strength": s, **r})
            best = max(tried, key=lambda r: r["score"])
            row = {
                "task": name,
                "target": target,
                "objective": list(task.objective),
                "unguided": unguided,
                "tfg": {"setting": TFG_SETTINGS[name], **tfg},
                "best_preset": best,
                "presets_tried": tried,
                "wall_s": time.perf_counter() - t0,
            }
            rows.append(row)
            print(_line(row), flush=True)
    total = time.perf_counter() - start
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "samples": args.samples,
        "seed": 0,
        "total_wall_s": round(total, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": info, "rows": rows}, indent=2) + "\n")
    print(f"\n{len(rows)} rows in {total:.0f} s; wrote {args.out}")
    print(markdown(rows))


def _fid(m: dict) -> str:
    for key in ("fidelity", "ssim"):
        if key in m:
            return f"{m[key]:.2f}"
    return "-"


def _line(row: dict) -> str:
    u, t, b = row["unguided"], row["tfg"], row["best_preset"]
    return (
        f"{row['task']:16s} {row['target']:8s} unguided {u['metrics'].get('validity', 0):.2f} "
        f"tfg {t['metrics'].get('validity', 0):.2f}/{_fid(t['metrics'])} best "
        f"{b['method']}@{b['strength']:g} {b['metrics'].get('validity', 0):.2f}"
    )


def markdown(rows: list[dict]) -> str:
    """The docs table: validity / fidelity (or SSIM) / score per setting."""
    head = (
        "| task | target | fidelity metric | unguided (val / fid / score) | TFG (val / fid / score) "
        "| best preset | best preset (val / fid / score) |\n|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for r in rows:
        cells = []
        for key in ("unguided", "tfg", "best_preset"):
            m, s = r[key]["metrics"], r[key]["score"]
            cells.append(f"{m.get('validity', float('nan')):.2f} / {_fid(m)} / {s:.2f}")
        fid_name = "ssim" if "ssim" in r["unguided"]["metrics"] else "fidelity"
        b = r["best_preset"]
        lines.append(
            f"| {r['task']} | {r['target']} | {fid_name} | {cells[0]} | {cells[1]} "
            f"| {b['method']} @ {b['strength']:g} | {cells[2]} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()

"""Does searched TFG beat the earlier methods, each given the same search? And does recurrence help?

For every bundled task that loads (its weights exist) and a few targets each:

* TFG searched over rho, mu, gamma (the task's default lattice, beam top_k 2, 6 rounds);
* each earlier method (DPS, LGD, FreeDoM, MPGD, UGD: ``TFGConfig.preset`` points, see
  tfg-algorithm.md section 4) searched over its single strength with the same beam sampler on the
  one-parameter space ``{"strength": Lattice(*task.default_strength_space)}``;
* every search on ``--samples`` samples per evaluation with common random numbers (seed 0), its
  ``--final-top`` best re-run on ``--final-samples`` fresh samples; the best re-run is reported.

Per task: validity and fidelity (the objective's second metric: ``fidelity`` or ``ssim``) of each
method's chosen configuration, and TFG's relative improvement of the objective score over the best
earlier method of each target (the paper reports 8.5% on average). Then the recurrence ablation:
TFG's chosen configuration on ``--recur-task`` re-run with n_recur = 1, 2, 4 (the paper: CIFAR10
label guidance 52% -> 77% accuracy from 1 to 4).

The searches are the real ``searchers.TFGBeamSampler`` driven ask-and-tell on the benchmarks'
evaluation cache (``_cache.py``; shared with ``search_efficiency.py``), not ``tfg-search search``:
the cache makes reruns cheap, and an evaluation is 4 chunks of 16 samples (see ``_cache.py``).

Run:
    python benchmarks/guidance_quality.py                          # every task that loads
    python benchmarks/guidance_quality.py --tasks digits --targets 3,8 --final-samples 512
    python benchmarks/guidance_quality.py --quick                  # < 60 s smoke configuration

Prints tables and writes benchmarks/results/guidance_quality.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _cache import ChunkEvaluator
from _common import print_table, write_json
from _search_variants import FINAL_SEED, beam_search, describe, final_reruns

from tfg_search.errors import TFGSearchError
from tfg_search.settings import SearchSettings

ALL_TASKS = ("gmm2d", "digits", "digits-attrs", "digits-inpaint", "digits-superres", "digits-deblur")
BASELINES = ("dps", "lgd", "freedom", "mpgd", "ugd")
DEFAULT_TARGETS = {
    "gmm2d": ["0", "3"],
    "digits": ["3", "8"],
    "digits-attrs": ["7+thick", "2+thin"],
    "digits-inpaint": ["0", "1"],
    "digits-superres": ["0", "1"],
    "digits-deblur": ["0", "1"],
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def parse_targets(spec: str | None, tasks: list[str]) -> dict[str, list[str]]:
    """``"0,3"`` (every task) or ``"gmm2d:0,3;digits:1,2"`` -> {task: [targets]}."""
    out = {t: list(DEFAULT_TARGETS.get(t, ["0"])) for t in tasks}
    if not spec:
        return out
    for part in spec.split(";"):
        if ":" in part:
            task, _, values = part.partition(":")
            out[task.strip()] = [v.strip() for v in values.split(",") if v.strip()]
        else:
            for t in tasks:
                out[t] = [v.strip() for v in part.split(",") if v.strip()]
    return out


def task_value(spec: str | None, task: str) -> int | None:
    """A per-task integer from ``"10"`` or ``"gmm2d:50,*:10"`` (``*``: other tasks; None: unset)."""
    if not spec:
        return None
    if ":" not in spec:
        return int(spec)
    values = dict(part.split(":") for part in spec.split(","))
    value = values.get(task, values.get("*"))
    return int(value) if value else None


def loads(task_name: str) -> str | None:
    """None when the task and its models load, else the reason."""
    try:
        ev_task = ChunkEvaluator(task_name, cache=False).task
        ev_task.diffusion("cpu")
        ev_task.log_f(ev_task.targets[0], "cpu")
    except (TFGSearchError, OSError, RuntimeError) as err:
        return str(err).splitlines()[0]
    return None


def run_target(ev: ChunkEvaluator, task_name: str, target: str, args: argparse.Namespace) -> dict[str, Any]:
    """TFG and every baseline searched and re-run on one target."""
    chunks = task_value(args.samples, task_name) // ev.chunk
    final_chunks = task_value(args.final_samples, task_name) // ev.chunk
    fidelity_name = ev.objective[1].lstrip("_") if len(ev.objective) > 1 else "validity"
    out: dict[str, Any] = {}
    for method in ("tfg", *args.methods):
        t0 = time.perf_counter()
        resolved = SearchSettings(
            task=task_name,
            target=target,
            method=method,
            samples=chunks * ev.chunk,
            rounds=args.rounds,
            steps=ev.steps,
            n_recur=args.tfg_n_recur if method == "tfg" else None,
        ).resolve(ev.task)
        run = beam_search(ev, target, resolved, 0, chunks, mode="crn", name=method)
        final_reruns(ev, target, resolved, [run], args.final_top, final_chunks)
        params, final, metrics = run.chosen
        out[method] = {
            "evaluations": run.evaluations,
            "samples": run.samples,
            "chosen": params,
            "config": resolved.config(params).to_dict(),
            "final_score": final,
            "final_metrics": metrics,
            "validity": (metrics or {}).get("validity", float("nan")),
            "fidelity": (metrics or {}).get(fidelity_name, float("nan")),
            "wall_s": round(time.perf_counter() - t0, 1),
        }
        log(f"{task_name} {target} {method}: {describe(params)} -> {final:.4f} ({run.evaluations} ev)")
    ev.flush()
    best_base = max(args.methods, key=lambda m: out[m]["final_score"])
    tfg, base = out["tfg"]["final_score"], out[best_base]["final_score"]
    return {
        "methods": out,
        "fidelity_metric": fidelity_name,
        "best_baseline": best_base,
        "tfg_relative_improvement": (tfg - base) / abs(base) if base else float("nan"),
        "tfg_validity_improvement": (out["tfg"]["validity"] - out[best_base]["validity"])
        / max(out[best_base]["validity"], 1e-9),
    }


def recurrence(ev: ChunkEvaluator, per_target: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """TFG's chosen configuration of each target re-run with n_recur = 1, 2, 4 (final samples)."""
    from tfg_search.guidance.config import TFGConfig

    out: dict[str, Any] = {}
    for target, rec in per_target.items():
        base = TFGConfig.from_dict(rec["methods"]["tfg"]["config"])
        configs = [base.replace(n_recur=n) for n in args.recur]
        final_chunks = task_value(args.final_samples, ev.task_name) // ev.chunk
        res = ev.evaluate(target, [(c, FINAL_SEED, final_chunks) for c in configs])
        out[target] = {
            str(n): {"metrics": r.metrics, "score": r.score} for n, r in zip(args.recur, res, strict=True)
        }
        log(
            f"recurrence {target}: "
            + ", ".join(f"{n}: {r.score:.4f}" for n, r in zip(args.recur, res, strict=True))
        )
    ev.flush()
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tasks", default=",".join(ALL_TASKS), help="comma-separated task names")
    p.add_argument("--targets", default=None, help='"0,3" for every task or "gmm2d:0,3;digits:1,2"')
    p.add_argument("--methods", default=",".join(BASELINES), help="earlier methods compared with TFG")
    p.add_argument("--seeds", default="0", help="search seed (one; kept for a uniform interface)")
    p.add_argument("--samples", default="64", help='samples per search evaluation: "64" or "gmm2d:64,*:32"')
    p.add_argument("--final-samples", default="256", help="samples per final re-run (same forms)")
    p.add_argument("--final-top", type=int, default=2)
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--steps", default=None, help='DDIM steps: "10", or "gmm2d:50,*:10" (* = other tasks)')
    p.add_argument(
        "--tfg-n-recur",
        type=int,
        default=None,
        help="n_recur of the TFG search (default 1; UGD/FreeDoM use 2)",
    )
    p.add_argument("--recur-task", default="digits", help="task of the recurrence ablation ('' to skip)")
    p.add_argument("--recur", default="1,2,4", help="n_recur values of the ablation")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the disk cache")
    p.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/results/...)")
    p.add_argument(
        "--quick", action="store_true", help="gmm2d, 1 target, 8 steps, 32 samples, 3 rounds, n_recur 1,2"
    )
    args = p.parse_args(argv)
    if args.quick:
        args.tasks, args.targets, args.recur_task = "gmm2d", args.targets or "3", "gmm2d"
        args.samples, args.final_samples, args.steps, args.rounds = "32", "32", args.steps or "8", 3
        args.recur = "1,2"
    if int(str(args.seeds).split(",")[0]) != 0:
        p.error("guidance_quality searches with seed 0 only (the final re-runs use a fresh seed)")
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    args.recur = [int(n) for n in args.recur.split(",")]
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    targets = parse_targets(args.targets, tasks)
    start = time.perf_counter()
    results: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    recur: dict[str, Any] = {}
    for task_name in tasks:
        reason = loads(task_name)
        if reason:
            skipped[task_name] = reason
            log(f"skipping {task_name}: {reason}")
            continue
        steps = task_value(args.steps, task_name)
        ev = ChunkEvaluator(task_name, steps=steps, cache=not args.no_cache)
        t0 = time.perf_counter()
        per_target = {t: run_target(ev, task_name, t, args) for t in targets[task_name]}
        results[task_name] = {"targets": per_target, "wall_s": round(time.perf_counter() - t0, 1)}
        if task_name == args.recur_task:
            recur = {"task": task_name, "targets": recurrence(ev, per_target, args)}
    summary = []
    for task_name, rec in results.items():
        per_target = rec["targets"]
        for method in ("tfg", *args.methods):
            recs = [pt["methods"][method] for pt in per_target.values()]
            summary.append(
                {
                    "task": task_name,
                    "method": method,
                    "validity": statistics.mean(r["validity"] for r in recs),
                    "fidelity": statistics.mean(r["fidelity"] for r in recs),
                    "score": statistics.mean(r["final_score"] for r in recs),
                    "evaluations": statistics.mean(r["evaluations"] for r in recs),
                }
            )
        rec["tfg_relative_improvement_mean"] = statistics.mean(
            pt["tfg_relative_improvement"] for pt in per_target.values()
        )
        rec["tfg_validity_improvement_mean"] = statistics.mean(
            pt["tfg_validity_improvement"] for pt in per_target.values()
        )
        rec["tfg_wins"] = sum(pt["tfg_relative_improvement"] > 0 for pt in per_target.values())
    wall = time.perf_counter() - start
    print_table(
        "Guidance quality: chosen configuration re-run at the final sample count (mean over targets)",
        ["task", "method", "validity", "fidelity", "score", "evals"],
        [
            [
                r["task"],
                r["method"],
                f"{r['validity']:.3f}",
                f"{r['fidelity']:.3f}",
                f"{r['score']:.4f}",
                r["evaluations"],
            ]
            for r in summary
        ],
    )
    print_table(
        "TFG vs the best earlier method of each target",
        [
            "task",
            "targets",
            "best earlier (per target)",
            "TFG wins",
            "rel. improvement (score)",
            "rel. (validity)",
        ],
        [
            [
                t,
                ", ".join(rec["targets"]),
                ", ".join(pt["best_baseline"] for pt in rec["targets"].values()),
                f"{rec['tfg_wins']}/{len(rec['targets'])}",
                f"{rec['tfg_relative_improvement_mean']:+.1%}",
                f"{rec['tfg_validity_improvement_mean']:+.1%}",
            ]
            for t, rec in results.items()
        ],
    )
    if recur:
        rows = []
        for target, per_n in recur["targets"].items():
            for n, r in per_n.items():
                m = r["metrics"] or {}
                rows.append(
                    [recur["task"], target, n, f"{m.get('validity', float('nan')):.3f}", f"{r['score']:.4f}"]
                )
        print_table(
            "Recurrence ablation at TFG's chosen setting",
            ["task", "target", "n_recur", "validity", "score"],
            rows,
        )
    payload = {
        "settings": {
            "tasks": tasks,
            "targets": targets,
            "methods": args.methods,
            "samples": args.samples,
            "final_samples": args.final_samples,
            "final_top": args.final_top,
            "rounds": args.rounds,
            "tfg_n_recur": args.tfg_n_recur,
            "steps": args.steps,
            "recur": args.recur,
            "quick": args.quick,
        },
        "skipped": skipped,
        "summary": summary,
        "results": results,
        "recurrence": recur,
        "wall_s": round(wall, 1),
    }
    path = write_json("guidance_quality", payload, args.out)
    log(f"wrote {path} ({wall:.0f} s)")
    return payload


if __name__ == "__main__":
    main()

"""How good and how cheap is the beam search? Grid vs beam (CRN, independent, cheaper fidelity) vs TPE/random.

For each task, target and search seed:

* ``grid``: every point of the lattice at search fidelity (search seed 0 only: computed once and
  cached); its ``--grid-top`` best are re-run at the final sample count and the best of those
  re-runs is the *grid best*, the reference of every fraction below;
* ``beam-crn``: the beam search (``searchers.TFGBeamSampler``, top_k 2, 6 rounds) with every
  candidate on the same seed (common random numbers), as ``tfg-search search`` runs it;
* ``beam-independent``: the same with fresh seeds per candidate;
* ``beam-half``: the CRN beam on half the samples per evaluation (the plainest cheaper fidelity);
* ``beam-mf-<tol>``: cheaper fidelity: a round's candidates get 16 samples first and are extended
  to 32 and 64 only while they may still enter the beam: score at that fidelity >= the k-th best
  at the same fidelity on the same chunks, minus ``tol * sqrt(64 / samples)`` (one variant per
  ``--tol`` value; see ``_search_variants.beam_search``);
* ``tpe`` and ``random``: Optuna's TPESampler / RandomSampler with as many distinct evaluations as
  ``beam-crn`` used on that target and seed, on the same lattice (lattice exponents through
  ``suggest_int``), on common random numbers too.

Each search's ``--final-top`` best configurations are re-run on ``--final-samples`` samples with a
fresh seed shared by all searches; the best re-run is the search's answer, reported as a fraction
of the grid best, with the samples the search generated (re-runs not included; they are the same
for every search).

Evaluations are cached on disk (``benchmarks/results/cache/``; see ``_cache.py``): reruns are cheap.

Run:
    python benchmarks/search_efficiency.py                        # gmm2d + digits, 3 seeds
    python benchmarks/search_efficiency.py --tasks gmm2d --targets 0,3 --seeds 0,1
    python benchmarks/search_efficiency.py --quick                # < 60 s smoke configuration

Prints tables and writes benchmarks/results/search_efficiency.json.
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
from _search_variants import (
    SearchRun,
    beam_search,
    describe,
    final_reruns,
    grid_search,
    optuna_search,
)

from searchers import parse_space
from tfg_search.settings import SearchSettings

DEFAULT_TARGETS = {"gmm2d": ["0", "3", "6"], "digits": ["0", "1", "3", "5", "8"]}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def parse_targets(spec: str | None, tasks: list[str]) -> dict[str, list[str]]:
    """``"0,3"`` (every task) or ``"gmm2d:0,3;digits:1,2"`` -> {task: [targets]}."""
    out = {t: list(DEFAULT_TARGETS.get(t, ["0", "1"])) for t in tasks}
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


def per_task(spec: str, task: str) -> int:
    """``"64"`` -> 64 for every task; ``"gmm2d:64,digits:32"`` (``*:N``: other tasks) -> the task's value.

    Raises:
        ValueError: the spec names no value for ``task``.
    """
    if ":" not in spec:
        return int(spec)
    values = dict(part.split(":") for part in spec.split(","))
    value = values.get(task, values.get("*"))
    if value is None:
        raise ValueError(f"{spec!r} gives no value for task {task!r}")
    return int(value)


def task_seeds(spec: str, task: str) -> list[int]:
    """``"0,1,2"`` for every task, or ``"gmm2d:0,1,2;digits:0,1"`` (the grid always uses seed 0)."""
    if ":" not in spec:
        return [int(x) for x in spec.split(",")]
    values = dict(part.split(":") for part in spec.split(";"))
    return [int(x) for x in values[task].split(",")]


def run_record(run: SearchRun, grid: SearchRun, grid_best: float) -> dict[str, Any]:
    """JSON form of one search with its chosen configuration and fraction of the grid best."""
    params, final, metrics = run.chosen
    order = [p for p, _ in grid.ranked]
    return {
        "method": run.name,
        "seed": run.seed,
        "evaluations": run.evaluations,
        "evaluations_share_of_grid": run.evaluations / grid.evaluations,
        "samples": run.samples,
        "stopped_early": run.stopped_early,
        "search_best": {"params": run.ranked[0][0], "score": run.ranked[0][1]} if run.ranked else None,
        "chosen": {"params": params, "final_score": final, "final_metrics": metrics},
        "fraction_of_grid_best": final / grid_best if grid_best > 0 else float("nan"),
        "regret": grid_best - final,
        "grid_rank": order.index(params) + 1 if params in order else None,
        "wall_s": round(run.wall_s, 2),
    }


def run_target(ev: ChunkEvaluator, task_name: str, target: str, args: argparse.Namespace) -> dict[str, Any]:
    """Every search of one target (all seeds), their final re-runs, and the grid reference."""
    resolved = SearchSettings(
        task=task_name,
        target=target,
        samples=per_task(args.samples, task_name),
        top_k=args.top_k,
        rounds=args.rounds,
        steps=ev.steps,
        space=parse_space(args.space) if args.space else None,
    ).resolve(ev.task)
    chunks = per_task(args.samples, task_name) // ev.chunk
    final_chunks = per_task(args.final_samples, task_name) // ev.chunk
    stages = sorted({max(1, chunks // 4), max(1, chunks // 2), chunks})
    t0 = time.perf_counter()
    grid = grid_search(ev, target, resolved, 0, chunks)
    log(f"{task_name} {target}: grid of {grid.evaluations} in {grid.wall_s:.0f} s")
    runs: list[SearchRun] = []
    for seed in task_seeds(args.seeds, task_name):
        crn = beam_search(ev, target, resolved, seed, chunks, mode="crn")
        seed_runs = [crn, beam_search(ev, target, resolved, seed, chunks, mode="independent")]
        if chunks >= 2:
            half = beam_search(ev, target, resolved, seed, chunks // 2, mode="crn", name="beam-half")
            seed_runs.append(half)
        for tol in args.tol:
            name = f"beam-mf-{tol:g}"
            seed_runs.append(
                beam_search(ev, target, resolved, seed, chunks, stages=stages, tol=tol, name=name)
            )
        seed_runs.append(optuna_search(ev, target, resolved, seed, chunks, crn.evaluations, "tpe"))
        seed_runs.append(optuna_search(ev, target, resolved, seed, chunks, crn.evaluations, "random"))
        runs += seed_runs
        log(
            f"{task_name} {target} seed {seed}: "
            + ", ".join(f"{r.name} {r.evaluations} ev {r.samples} smp {r.wall_s:.0f} s" for r in seed_runs)
        )
    final_reruns(ev, target, resolved, [grid, *runs], args.final_top, final_chunks, args.grid_top)
    ev.flush()
    grid_best_params, grid_best, grid_metrics = grid.chosen
    log(f"{task_name} {target}: done in {time.perf_counter() - t0:.0f} s, grid best {grid_best:.4f}")
    return {
        "grid": {
            "evaluations": grid.evaluations,
            "samples": grid.samples,
            "search_best": {"params": grid.ranked[0][0], "score": grid.ranked[0][1]},
            "best": {"params": grid_best_params, "final_score": grid_best, "final_metrics": grid_metrics},
            "top_finals": [{"params": p, "final_score": s} for p, s, _ in grid.finals],
        },
        "runs": [run_record(r, grid, grid_best) for r in runs],
        "wall_s": round(time.perf_counter() - t0, 1),
    }


def summarize(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Per task and method: fractions of the grid best, evaluations and samples (means over runs)."""
    rows = []
    for task_name, per_task in results.items():
        by_method: dict[str, list[dict[str, Any]]] = {}
        grid_evals = grid_samples = 0
        for per_target in per_task.values():
            grid_evals = per_target["grid"]["evaluations"]
            grid_samples = per_target["grid"]["samples"]
            for rec in per_target["runs"]:
                by_method.setdefault(rec["method"], []).append(rec)
        crn_samples = statistics.mean(r["samples"] for r in by_method.get("beam-crn", [{"samples": 1}]))
        for method, recs in by_method.items():
            fr = [r["fraction_of_grid_best"] for r in recs]
            samples = statistics.mean(r["samples"] for r in recs)
            rows.append(
                {
                    "task": task_name,
                    "method": method,
                    "runs": len(recs),
                    "fraction_mean": statistics.mean(fr),
                    "fraction_min": min(fr),
                    "share_ge_0.97": sum(f >= 0.97 for f in fr) / len(fr),
                    "regret_mean": statistics.mean(r["regret"] for r in recs),
                    "grid_rank_median": statistics.median(r["grid_rank"] or grid_evals for r in recs),
                    "evaluations_mean": statistics.mean(r["evaluations"] for r in recs),
                    "grid_evaluations": grid_evals,
                    "evaluations_share_of_grid": statistics.mean(r["evaluations"] for r in recs) / grid_evals,
                    "samples_mean": samples,
                    "grid_samples": grid_samples,
                    "samples_vs_beam_crn": samples / crn_samples,
                }
            )
    return rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tasks", default="gmm2d,digits", help="comma-separated task names")
    p.add_argument("--targets", default=None, help='"0,3" for every task or "gmm2d:0,3;digits:1,2"')
    p.add_argument("--seeds", default="0,1,2", help='search seeds: "0,1,2" or "gmm2d:0,1,2;digits:0,1"')
    p.add_argument(
        "--samples", default="64", help='samples per search evaluation: "64" or "gmm2d:64,digits:32"'
    )
    p.add_argument("--final-samples", default="512", help="samples per final re-run (same forms)")
    p.add_argument("--final-top", type=int, default=2, help="configurations of a search re-run")
    p.add_argument("--grid-top", type=int, default=6, help="configurations of the grid re-run")
    p.add_argument("--top-k", type=int, default=2)
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--tol", default="0,0.02", help="promotion tolerances of beam-mf (one variant each)")
    p.add_argument("--steps", default=None, help='DDIM steps: "10" or "digits:10" (default: the task\'s)')
    p.add_argument("--space", default=None, help='lattice, e.g. "rho=0.002:2:0.064,mu=0.002:2:0.064"')
    p.add_argument("--chunk", type=int, default=16, help="samples per chunk (lowest fidelity)")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the disk cache")
    p.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/results/...)")
    p.add_argument(
        "--quick",
        action="store_true",
        help="gmm2d, 1 target, 1 seed, 8 steps, 32 samples, 75-point lattice",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.tasks, args.targets, args.seeds = "gmm2d", args.targets or "3", "0"
        args.samples, args.final_samples, args.steps, args.rounds = "32", "32", args.steps or "8", 3
        args.space = args.space or "rho=0.002:2:0.032,mu=0.002:2:0.032,gamma=0.001:10:0.1"
        args.grid_top = 3
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    targets = parse_targets(args.targets, tasks)
    args.tol = [float(t) for t in str(args.tol).split(",") if t.strip()]
    for t in tasks:
        task_seeds(args.seeds, t)
        if per_task(args.samples, t) % args.chunk or per_task(args.final_samples, t) % args.chunk:
            p.error("--samples and --final-samples must be multiples of --chunk")
    start = time.perf_counter()
    results: dict[str, Any] = {}
    sampling: dict[str, Any] = {}
    for task_name in tasks:
        steps = (
            per_task(args.steps, task_name)
            if args.steps and (":" not in args.steps or f"{task_name}:" in args.steps or "*:" in args.steps)
            else None
        )
        ev = ChunkEvaluator(task_name, steps=steps, chunk=args.chunk, cache=not args.no_cache)
        results[task_name] = {}
        for target in targets[task_name]:
            results[task_name][target] = run_target(ev, task_name, target, args)
        sampling[task_name] = {
            "generated_samples": ev.generated_samples,
            "sampling_s": round(ev.sampling_s, 1),
            "steps": ev.steps,
        }
    summary = summarize(results)
    wall = time.perf_counter() - start
    rows = [
        [
            r["task"],
            r["method"],
            r["runs"],
            f"{r['fraction_mean']:.3f}",
            f"{r['fraction_min']:.3f}",
            f"{r['share_ge_0.97']:.0%}",
            f"{r['regret_mean']:.4f}",
            f"{r['grid_rank_median']:g}",
            f"{r['evaluations_mean']:.1f}",
            f"{r['evaluations_share_of_grid']:.1%}",
            f"{r['samples_mean']:.0f}",
            f"{r['samples_vs_beam_crn']:.2f}",
        ]
        for r in summary
    ]
    print_table(
        "Search efficiency: final re-run of the chosen configuration / grid best",
        [
            "task",
            "method",
            "runs",
            "mean",
            "min",
            ">=97%",
            "regret",
            "rank",
            "evals",
            "share",
            "samples",
            "vs crn",
        ],
        rows,
    )
    grid_rows = [
        [
            t,
            tg,
            rec["grid"]["evaluations"],
            describe(rec["grid"]["best"]["params"]),
            f"{rec['grid']['best']['final_score']:.4f}",
            rec["wall_s"],
        ]
        for t, per_task in results.items()
        for tg, rec in per_task.items()
    ]
    print_table(
        "Grid reference", ["task", "target", "grid size", "best", "final score", "target wall s"], grid_rows
    )
    payload = {
        "settings": {
            "tasks": tasks,
            "targets": targets,
            "seeds": args.seeds,
            "samples": args.samples,
            "final_samples": args.final_samples,
            "final_top": args.final_top,
            "grid_top": args.grid_top,
            "top_k": args.top_k,
            "rounds": args.rounds,
            "tol": args.tol,
            "chunk": args.chunk,
            "steps": args.steps,
            "space": args.space,
            "quick": args.quick,
        },
        "summary": summary,
        "results": results,
        "sampling": sampling,
        "wall_s": round(wall, 1),
    }
    path = write_json("search_efficiency", payload, args.out)
    log(f"wrote {path} ({wall:.0f} s)")
    return payload


if __name__ == "__main__":
    main()

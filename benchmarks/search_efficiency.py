"""Which search finds the best guidance configuration for the fewest evaluations?

For each task, target and search seed, every search runs on the same grid of candidates (the
task's benchmark space: lattices with 0 ("off") and, on digits, the rho schedule structure as a
dimension) with common random numbers (every candidate of a search on the same seed):

* ``beam-reference``: the paper's beam (``TFGBeamSampler`` defaults: lattices without 0, start at
  the lowest strengths, steps up only), top_k 2, 6 rounds;
* ``beam-zero``: the same beam on lattices with 0 and the earlier methods' points (at the middle
  of the task's strength lattice) in round 0 (``--seed-presets``);
* ``beam-refined``: ``TFGBeamSampler(mode="refined")`` with the same lattices and seeds
  (docs/searchers.md);
* ``beam-reeval``: ``beam-refined``, then its ``REEVAL_TOP`` (6) best re-evaluated once on a second
  search seed (common to the six: a paired re-evaluation) and ranked by the mean of both scores;
  the re-evaluations count as evaluations;
* ``tpe``, ``random``, ``gp``: Optuna's TPESampler, RandomSampler and GPSampler on the grid, with
  as many distinct evaluations as the last beam variant run (``beam-reeval``: all its evaluations,
  re-evaluations included) used on that target and seed.

Each search's two best configurations (by search score) are re-run on ``--final-samples`` fresh
samples (one seed shared by all searches); the better re-run is the search's answer, reported as a
fraction of the *grid best* (the best re-run of the grid's ``--grid-top`` configurations at search
seed 0). Differences between methods are paired over (target, seed) with 95% t-intervals: a
difference whose interval contains 0 is a tie.

Evaluations are cached (``benchmarks/results/cache/``, see ``_cache.py``): a run that is stopped
resumes where it was, and new strategies cost nothing once a grid is evaluated
(``--full-grid`` evaluates the whole grid at every search seed up front, in big batches).

Run:
    python benchmarks/search_efficiency.py --tasks digits --full-grid
    python benchmarks/search_efficiency.py --tasks shapes --targets cyan-triangle,yellow-triangle,blue-square
    python benchmarks/search_efficiency.py --quick                # < 2 min smoke configuration

Prints tables and writes benchmarks/results/search_efficiency.json (``--out`` elsewhere).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _cache import ChunkEvaluator
from _common import print_table, write_json
from _strategies import GridSpace, Key, Run, beam, optuna_search, reevaluated

from searchers import Lattice
from tfg_search.guidance.config import TFGConfig, search_point
from tfg_search.run.settings import SearchSettings
from tfg_search.run.warm_start import PRESET_METHODS, default_strength

FINAL_SEED = 999
"""Search seed of every final re-run: fresh noise, shared by all searches (paired finals)."""
METHODS = ("beam-reference", "beam-zero", "beam-refined", "beam-reeval", "tpe", "random", "gp")
REEVAL_TOP = 6
"""``beam-reeval``: how many of ``beam-refined``'s best are re-evaluated on a second search seed."""
REEVAL_SEED = 100
"""``beam-reeval`` re-evaluates on search seed ``REEVAL_SEED + seed``."""


def z(init: float, factor: float, cap: float) -> Lattice:
    return Lattice(init, factor, cap, zero=True)


TASKS: dict[str, dict[str, Any]] = {
    "digits": {
        "space": GridSpace(
            {"rho": z(0.02, 2, 0.64), "mu": z(0.02, 2, 0.64), "gamma": z(0.01, 10, 1)}, schedules=("rho",)
        ),
        "targets": ["0", "1", "3", "5", "8"],
        "samples": 32,
        "final_samples": 128,
        "steps": 10,
    },
    "shapes": {
        "space": GridSpace({"rho": z(0.25, 2, 8), "mu": z(0.06, 2, 0.96), "gamma": z(0.01, 10, 0.1)}),
        "targets": ["cyan-triangle", "yellow-triangle", "blue-square"],
        "samples": 32,
        "final_samples": 64,
        "steps": 10,
    },
    "gmm2d": {
        "space": GridSpace({"rho": z(0.002, 2, 0.032), "mu": z(0.002, 2, 0.032), "gamma": z(0.001, 10, 0.1)}),
        "targets": ["3"],
        "samples": 32,
        "final_samples": 32,
        "steps": 8,
    },
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class GridOracle:
    """Scores of grid keys for one target and search seed, through the evaluation cache."""

    def __init__(self, ev: ChunkEvaluator, target: str, base: Any, space: GridSpace, seed: int, chunks: int):
        self.ev, self.target, self.base, self.space = ev, target, base, space
        self.seed, self.chunks = seed, chunks
        self.known: dict[Key, float] = {}

    def config(self, key: Key) -> TFGConfig:
        return self.base.config(self.space.params(key))

    def __call__(self, keys: list[Key]) -> list[float]:
        todo = [k for k in dict.fromkeys(keys) if k not in self.known]
        if todo:
            res = self.ev.evaluate(self.target, [(self.config(k), self.seed, self.chunks) for k in todo])
            self.known.update({k: r.score for k, r in zip(todo, res, strict=True)})
        return [self.known[k] for k in keys]


def preset_seeds(task: Any) -> list[dict[str, Any]]:
    """The earlier methods' points at the middle of the task's strength lattice."""
    s = default_strength(task)
    return [search_point(TFGConfig.preset(m, s)) for m in PRESET_METHODS]


def paired(a: list[float], b: list[float]) -> dict[str, float]:
    """Mean of a - b with a 95% t-interval (pairs: same target and seed)."""
    d = [x - y for x, y in zip(a, b, strict=True)]
    mean = statistics.mean(d)
    if len(d) < 2:
        return {"mean": mean, "low": mean, "high": mean}
    half = 2.0 * statistics.stdev(d) / math.sqrt(len(d))  # t(0.975, ~14 df) ~ 2.1; 2.0 for n >= 30
    if len(d) < 30:
        half *= {2: 6.35, 3: 2.15, 4: 1.59, 5: 1.39, 6: 1.28, 7: 1.22, 8: 1.18}.get(len(d), 1.07)
    return {"mean": mean, "low": mean - half, "high": mean + half}


def run_target(ev: ChunkEvaluator, task_name: str, target: str, args: argparse.Namespace) -> dict[str, Any]:
    cfg = TASKS[task_name]
    space: GridSpace = cfg["space"]
    base = SearchSettings(task=task_name, target=target, steps=ev.steps).resolve(ev.task)
    chunks = cfg["samples"] // ev.chunk
    final_chunks = cfg["final_samples"] // ev.chunk
    reference_space = {n: Lattice(lat.init, lat.factor, lat.cap) for n, lat in space.lattices.items()}
    seeds_cfg = preset_seeds(ev.task)
    t0 = time.perf_counter()
    keys = space.keys()
    grid0 = GridOracle(ev, target, base, space, 0, chunks)
    grid0(keys)
    ev.flush()
    log(f"{task_name} {target}: grid of {len(keys)} at seed 0 in {time.perf_counter() - t0:.0f} s")
    grid_run = Run("grid", dict(grid0.known))
    finals: dict[Key, float] = {}

    def final_scores(wanted: list[Key]) -> None:
        todo = [k for k in dict.fromkeys(wanted) if k not in finals]
        if todo:
            res = ev.evaluate(target, [(grid0.config(k), FINAL_SEED, final_chunks) for k in todo])
            finals.update({k: r.score for k, r in zip(todo, res, strict=True)})

    final_scores(grid_run.top(args.grid_top))
    grid_best_key = max(grid_run.top(args.grid_top), key=lambda k: finals[k])
    grid_best = finals[grid_best_key]
    records = []
    for seed in args.seeds:
        oracle = grid0 if seed == 0 else GridOracle(ev, target, base, space, seed, chunks)
        if args.full_grid and seed != 0:
            oracle(keys)
            ev.flush()
        runs = [
            beam(space, oracle, "beam-reference", sampler_space=reference_space),
            beam(space, oracle, "beam-zero", seeds=seeds_cfg),
        ]
        if "beam-refined" in args.methods or "beam-reeval" in args.methods:
            runs.append(beam(space, oracle, "beam-refined", seeds=seeds_cfg, mode="refined"))
        if "beam-reeval" in args.methods:
            second = GridOracle(ev, target, base, space, REEVAL_SEED + seed, chunks)
            runs.append(reevaluated(runs[-1], second, REEVAL_TOP, "beam-reeval"))
        budget = runs[-1].total_evaluations
        for kind in ("tpe", "random", "gp"):
            if kind in args.methods:
                runs.append(optuna_search(space, oracle, kind, budget, seed))
        runs = [r for r in runs if r.name in args.methods]
        final_scores([k for r in runs for k in r.top(2)])
        for r in runs:
            chosen = max(r.top(2), key=lambda k: finals[k])
            records.append(
                {
                    "method": r.name,
                    "seed": seed,
                    "evaluations": r.evaluations,
                    "total_evaluations": r.total_evaluations,
                    "chosen": space.params(chosen),
                    "final_score": finals[chosen],
                    "fraction": finals[chosen] / grid_best if grid_best > 0 else float("nan"),
                }
            )
        log(f"{task_name} {target} seed {seed}: " + ", ".join(f"{r.name} {r.evaluations} ev" for r in runs))
    ev.flush()
    check = fidelity_check(ev, task_name, target, grid0.known) if args.fidelity_check else None
    if check is not None:
        log(f"{task_name} {target}: reduced vs full fidelity, Spearman {check['spearman']:.2f}")
    return {
        "fidelity_check": check,
        "grid": {
            "size": len(keys),
            "best": {"params": space.params(grid_best_key), "final_score": grid_best},
        },
        "runs": records,
        "wall_s": round(time.perf_counter() - t0, 1),
    }


def fidelity_check(
    ev: ChunkEvaluator, task_name: str, target: str, grid: dict[Key, float], n: int = 8
) -> dict[str, Any]:
    """Does the reduced fidelity rank like the full one? ``n`` grid points spread over the
    reduced-fidelity ranking, re-scored at the task's own steps on 64 samples (seed 0)."""
    from scipy.stats import spearmanr

    space: GridSpace = TASKS[task_name]["space"]
    ranked = sorted(grid, key=lambda k: -grid[k])
    picks = [ranked[round(i * (len(ranked) - 1) / (n - 1))] for i in range(n)]
    full_ev = ChunkEvaluator(task_name, chunk=ev.chunk, cache=ev.use_cache)
    base = SearchSettings(task=task_name, target=target, steps=full_ev.steps).resolve(full_ev.task)
    res = full_ev.evaluate(target, [(base.config(space.params(k)), 0, 64 // ev.chunk) for k in picks])
    full_ev.flush()
    rho = spearmanr([grid[k] for k in picks], [r.score for r in res]).statistic
    return {
        "points": [
            {"params": space.params(k), "reduced": grid[k], "full": r.score}
            for k, r in zip(picks, res, strict=True)
        ],
        "full_steps": full_ev.steps,
        "full_samples": 64,
        "spearman": float(rho),
    }


def summarize(results: dict[str, Any], methods: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Per task and method the mean fraction and evaluations, and paired differences."""
    summary: dict[str, Any] = {}
    pairs: dict[str, Any] = {}
    for task_name, per_target in results.items():
        by: dict[str, dict[tuple[str, int], dict[str, Any]]] = {}
        for target, rec in per_target.items():
            for r in rec["runs"]:
                by.setdefault(r["method"], {})[(target, r["seed"])] = r
        summary[task_name] = {
            m: {
                "mean_fraction": statistics.mean(r["fraction"] for r in by[m].values()),
                "min_fraction": min(r["fraction"] for r in by[m].values()),
                "evaluations": statistics.mean(r["evaluations"] for r in by[m].values()),
                "total_evaluations": statistics.mean(r["total_evaluations"] for r in by[m].values()),
                "runs": len(by[m]),
            }
            for m in methods
            if m in by
        }
        leads = [m for m in ("beam-reeval", "beam-refined") if m in by] or [next(iter(by))]
        keys = {lead: sorted(by[lead]) for lead in leads}
        pairs[task_name] = {
            f"{lead} - {m}": paired(
                [by[lead][k]["fraction"] for k in keys[lead]], [by[m][k]["fraction"] for k in keys[lead]]
            )
            for lead in leads
            for m in methods
            if m in by and m != lead and m not in leads[: leads.index(lead)]
        }
    return summary, pairs


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tasks", default="digits,shapes")
    p.add_argument("--targets", default=None, help='"0,3" for every task, or "digits:0,3;shapes:red"')
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--grid-top", type=int, default=6)
    p.add_argument("--full-grid", action="store_true", help="evaluate the whole grid at every seed first")
    p.add_argument(
        "--fidelity-check", action="store_true", help="re-score 8 grid points at the task's full fidelity"
    )
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the evaluation cache")
    p.add_argument("--quick", action="store_true", help="gmm2d, one target, one seed")
    args = p.parse_args(argv)
    if args.quick:
        args.tasks, args.seeds = "gmm2d", "0"
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.methods = [m for m in args.methods.split(",") if m]
    tasks = [t for t in args.tasks.split(",") if t]
    targets = {t: list(TASKS[t]["targets"]) for t in tasks}
    if args.targets:
        for part in args.targets.split(";"):
            if ":" in part:
                t, _, vals = part.partition(":")
                targets[t] = vals.split(",")
            else:
                targets = {t: part.split(",") for t in tasks}
    start = time.perf_counter()
    results: dict[str, Any] = {}
    for task_name in tasks:
        ev = ChunkEvaluator(task_name, steps=TASKS[task_name]["steps"], cache=not args.no_cache)
        results[task_name] = {tg: run_target(ev, task_name, tg, args) for tg in targets[task_name]}
    summary, pairs = summarize(results, args.methods)
    rows = [
        [
            t,
            m,
            s["runs"],
            f"{s['mean_fraction']:.4f}",
            f"{s['min_fraction']:.4f}",
            f"{s['evaluations']:.1f}",
            f"{s['total_evaluations']:.1f}",
        ]
        for t, per in summary.items()
        for m, s in per.items()
    ]
    print_table(
        "Search efficiency: chosen configuration's final score / grid best",
        ["task", "method", "runs", "mean", "min", "distinct evals", "all evals"],
        rows,
    )
    prow = [
        [t, name, f"{d['mean']:+.4f}", f"[{d['low']:+.4f}, {d['high']:+.4f}]"]
        for t, per in pairs.items()
        for name, d in per.items()
    ]
    print_table(
        "Paired differences of the fraction (95% t-interval; containing 0 = tie)",
        ["task", "difference", "mean", "interval"],
        prow,
    )
    payload = {
        "settings": {
            "tasks": tasks,
            "targets": targets,
            "seeds": args.seeds,
            "methods": args.methods,
            "grid_top": args.grid_top,
            "fidelity": {t: {k: TASKS[t][k] for k in ("samples", "final_samples", "steps")} for t in tasks},
            "spaces": {t: {n: str(lat) for n, lat in TASKS[t]["space"].lattices.items()} for t in tasks},
            "schedules": {t: list(TASKS[t]["space"].schedules) for t in tasks},
        },
        "summary": summary,
        "paired": pairs,
        "results": results,
        "wall_s": round(time.perf_counter() - start, 1),
    }
    path = write_json("search_efficiency", payload, args.out)
    log(f"wrote {path}")
    return payload


if __name__ == "__main__":
    main()

"""Which search finds the best guidance configuration for the least compute, in fewest waves?

Methods (``benchmarks/_waves.py``: the service's own search loop, each method's strategy, driven
in waves of ``K`` parallel workers, each ending with the service's final re-runs of its two best
configurations):

* ``rungs``: ``tfg-search search``'s default, ``TFGRungSampler`` with the earlier methods'
  configurations in its spread start (``searchers/rungs.py``);
* ``beam``: the paper's beam (``--search beam``), for context: it stops on its own, with
  less compute;
* ``gp``, ``tpe``, ``random``: Optuna's GPSampler, TPESampler and RandomSampler on the lattice
  exponents, with as many model passes as ``rungs`` spent on the same target and seed (its search
  samples in trials of ``samples``, the same finals); then ``--extra-waves`` more waves for the
  anytime curve.

Tasks:

* ``shapes`` (the task that discriminates): replayed on the tabular benchmark of
  ``benchmarks/_table.py`` (every point of the grid judged per sample at the task's 50 steps;
  ``_replay.py``: how an evaluation reads its samples). Each answer and each incumbent is judged
  on 256 samples of the table's final seeds (the same for every point: paired), against a
  *reference that no method can beat*: the best judged score among the grid's 16 best points
  (by their 32-sample pool score) and every point any method answered or held; its own noise is
  its score's spread over two more reseeds of 256 samples.
* ``digits`` (at its own 50 steps, live through the evaluation cache of ``_cache.py``): judged on
  512 fresh samples (the task's final size), as a fraction of the best judged answer.
* ``gmm2d`` (``--quick``, the smoke test): live, tiny.

Reported per method: mean and minimum fraction of the reference, model passes (denoiser and
predictor) and waves at the answer, ``waves_to_0.98`` (the first wave at which the mean over
runs of the incumbents' fractions reaches 0.98; Optuna's samplers continue past their budget for
it), and paired differences of the answers with 95% t-intervals.

Run:
    python benchmarks/search_efficiency.py --tasks shapes             # the table; builds what it lacks
    python benchmarks/search_efficiency.py --tasks digits
    python benchmarks/search_efficiency.py --quick                     # < 2 min smoke configuration

Prints tables and writes benchmarks/results/search_efficiency.json and
docs/img/search-efficiency.png (``--out`` / ``--plot`` elsewhere).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, log, print_table, t_interval, write_json
from _waves import METHODS, OPTUNA, Key, Passes, Run, search

from searchers import Lattice

ROOT = Path(__file__).resolve().parents[1]
K = 8
"""Parallel workers: trials per wave."""
FRACTION_GOAL = 0.98
FINAL_TOP = 2


@dataclass
class TaskSetup:
    """How one task is benchmarked."""

    task: str
    space: dict[str, Lattice]
    targets: list[str]
    samples: int
    """Samples of a search trial of Optuna's samplers and the beam (the task's search samples)."""
    unit: int
    """Samples of a rung-0 evaluation of the rung search (the task's search samples)."""
    final_samples: int
    presets: list[Key] = field(default_factory=list)
    """The earlier methods' points in the rung search's spread start."""


def shapes_setup() -> TaskSetup:
    from _table import GRID
    from shapes_table import LADDER_PAIRS

    return TaskSetup("shapes", dict(GRID), list(LADDER_PAIRS), 32, 32, 128, preset_keys("shapes", GRID))


def digits_setup() -> TaskSetup:
    from tasks.digits import DIGITS_SPACE

    space = {n: Lattice(lat.init, lat.factor, lat.cap, zero=True) for n, lat in DIGITS_SPACE.items()}
    return TaskSetup("digits", space, ["0", "1", "3", "5", "8"], 64, 64, 512, preset_keys("digits", space))


def gmm_setup() -> TaskSetup:
    z = lambda *a: Lattice(*a, zero=True)  # noqa: E731
    space = {"rho": z(0.002, 2, 0.032), "mu": z(0.002, 2, 0.032), "gamma": z(0.001, 10, 0.1)}
    return TaskSetup("gmm2d", space, ["3"], 32, 32, 32, preset_keys("gmm2d", space))


def preset_keys(task_name: str, space: dict[str, Lattice]) -> list[Key]:
    """The earlier methods' configurations at the task's middle strength, as lattice keys (what
    ``--seed-presets`` adds to a search without stored searches of them)."""
    from tasks import get_task
    from tfg_search.guidance.config import TFGConfig, search_point
    from tfg_search.run.warm_start import PRESET_METHODS, default_strength

    s = default_strength(get_task(task_name))
    keys = []
    for method in PRESET_METHODS:
        point = search_point(TFGConfig.preset(method, s))
        key = tuple(space[n].nearest(float(point.get(n, 0.0))) for n in space)
        if key not in keys:
            keys.append(key)
    return keys


# -- oracles --------------------------------------------------------------------------------------


class LiveOracle:
    """Evaluations made on demand through the evaluation cache (digits, gmm2d).

    The n-th evaluation of any point draws the chunks of evaluation seed ``base + n`` (common
    random numbers: every point's n-th look has the same noise; a re-evaluation has fresh noise;
    ``fresh=False``: the first look's seed again, as a one-seed search draws it).
    """

    def __init__(self, ev: Any, target: str, seed: int, space: dict[str, Lattice], structure: Any) -> None:
        self.ev, self.target, self.seed, self.space, self.structure = ev, target, seed, space, structure
        self.used: dict[Key, int] = {}
        self.spent = Passes()

    def config(self, key: Key) -> Any:
        return self.structure.config(
            {n: self.space[n].value(k) for n, k in zip(self.space, key, strict=True)}
        )

    def evaluate(self, key: Key, samples: int, fresh: bool = True) -> float:
        from tfg_search.guidance.passes import sample_passes

        n = self.used.get(key, 0) if fresh else 0
        self.used[key] = max(self.used.get(key, 0), n + 1)
        config = self.config(key)
        result = self.ev.evaluate_one(
            self.target, config, 10_000 + 100 * self.seed + n, samples // self.ev.chunk
        )
        self.spent = self.spent + Passes(**sample_passes(config, self.ev.steps, samples))
        return result.score

    @property
    def passes(self) -> Passes:
        return self.spent

    def fork(self) -> LiveOracle:
        other = LiveOracle(self.ev, self.target, self.seed, self.space, self.structure)
        other.used, other.spent = dict(self.used), self.spent
        return other


JUDGE_SEED = 999


# -- running --------------------------------------------------------------------------------------


def run_method(
    method: str,
    oracle: Any,
    setup: TaskSetup,
    target: str,
    seed: int,
    budget: int | None,
    extra_waves: int,
) -> Run:
    """One search of ``method`` (Optuna's samplers: ``budget`` search samples)."""
    common: dict[str, Any] = dict(task=setup.task, target=target, seed=seed, workers=K)
    common.update(final_top=FINAL_TOP, final_samples=setup.final_samples)
    if method == "rungs":
        return search("rungs", oracle, setup.space, unit=setup.unit, seeds=setup.presets, **common)
    if method == "beam":
        return search("beam", oracle, setup.space, unit=setup.samples, **common)
    assert budget is not None
    trials = max(1, round(budget / setup.samples))
    extra = dict(trials=trials, extra_waves=extra_waves)
    return search(method, oracle, setup.space, unit=setup.samples, **extra, **common)


def search_samples(run: Run, setup: TaskSetup, steps: int) -> int:
    """Samples a run's search spent (its passes less the finals', per step)."""
    finals = FINAL_TOP * setup.final_samples
    return run.waves[-1].passes.denoiser // steps - finals if run.waves else 0


def run_all(
    methods: list[str],
    setup: TaskSetup,
    target: str,
    seeds: list[int],
    make_oracle: Callable[[int], Any],
    steps: int,
    extra_waves: int,
) -> dict[tuple[str, int], Run]:
    """Every method on every seed; Optuna's samplers get the rung search's search samples."""
    runs: dict[tuple[str, int], Run] = {}
    for seed in seeds:
        budget = None
        for method in ["rungs", *[m for m in methods if m != "rungs"]]:
            if method not in methods and method != "rungs":
                continue
            t0 = time.perf_counter()
            run = run_method(method, make_oracle(seed), setup, target, seed, budget, extra_waves)
            if method == "rungs":
                budget = search_samples(run, setup, steps)
            runs[(method, seed)] = run
            log(
                f"{target} seed {seed} {method}: answer {run.answer}, {run.evaluations} evaluations, "
                f"{run.passes.denoiser:,} denoiser passes, {len(run.waves)} waves "
                f"({time.perf_counter() - t0:.1f} s)"
            )
    return {k: v for k, v in runs.items() if k[0] in methods}


# -- judging and summaries ------------------------------------------------------------------------


def curve(run: Run, frac: Callable[[Key], float]) -> list[float]:
    """The incumbent's fraction after each wave (the extended waves after the finals)."""
    return [frac(w.incumbent) for w in [*run.waves, *run.extended]]


def search_curve(run: Run, frac: Callable[[Key], float]) -> list[float]:
    """The incumbent's fraction after each search wave of an Optuna sampler, past its budget too
    (its finals left out: they are not a search wave)."""
    waves = run.waves[: run.search_waves] + run.extended
    return [frac(w.incumbent) for w in waves]


def waves_to(curves: list[list[float]], goal: float) -> int | None:
    """The first wave (1-based) at which the mean of the curves reaches ``goal`` (None: never)."""
    length = min(len(c) for c in curves)
    for i in range(length):
        if statistics.mean(c[i] for c in curves) >= goal:
            return i + 1
    return None


def summarize(
    runs: dict[tuple[str, int], Run],
    fractions: dict[tuple[str, int], float],
    curves: dict[tuple[str, int], list[float]],
    methods: list[str],
) -> dict[str, Any]:
    """Per method: mean / min fraction, passes, waves, waves to the goal; paired differences."""
    out: dict[str, Any] = {}
    for m in methods:
        keys = sorted(k for k in runs if k[0] == m)
        if not keys:
            continue
        fr = [fractions[k] for k in keys]
        out[m] = {
            "runs": len(keys),
            "mean_fraction": statistics.mean(fr),
            "min_fraction": min(fr),
            "passes": statistics.mean(runs[k].passes.denoiser for k in keys),
            "predictor_passes": statistics.mean(runs[k].passes.predictor for k in keys),
            "evaluations": statistics.mean(runs[k].evaluations for k in keys),
            "waves": statistics.mean(len(runs[k].waves) for k in keys),
            f"waves_to_{FRACTION_GOAL}": waves_to([curves[k] for k in keys], FRACTION_GOAL),
        }
    base = "rungs"
    for m in methods:
        if m == base or m not in out or base not in out:
            continue
        pairs = sorted({k[1:] for k in runs if k[0] == m} & {k[1:] for k in runs if k[0] == base})
        d = [fractions[(base, *p)] - fractions[(m, *p)] for p in pairs]
        out[base][f"minus_{m}"] = dict(zip(("mean", "low", "high"), t_interval(d), strict=True))
    return out


def run_records(
    runs: dict[tuple[str, int], Run],
    fractions: dict[tuple[str, int], float],
    curves: dict[tuple[str, int], list[float]],
) -> dict[str, Any]:
    """What the JSON keeps of each run (``method/seed``)."""
    return {
        f"{m}/{s}": {
            "answer": list(r.answer or ()),
            "fraction": fractions[(m, s)],
            "passes": vars(r.passes),
            "evaluations": r.evaluations,
            "waves": len(r.waves),
            "curve": curves[(m, s)],
        }
        for (m, s), r in sorted(runs.items())
    }


def write_plot(
    curves_by_method: dict[str, list[tuple[list[float], list[float]]]], path: Path, title: str
) -> None:
    """Fraction of the reference against model passes: each method's mean curve over runs,
    shaded between the runs' lowest and highest (runs of one method share their waves' passes
    up to the budget only approximately: the curve is drawn on the runs' mean passes per wave)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=120)
    for method, pts in curves_by_method.items():
        n = min(len(x) for x, _ in pts)
        xs = [statistics.mean(x[i] for x, _ in pts) for i in range(n)]
        ys = [[y[i] for _, y in pts] for i in range(n)]
        mean = [statistics.mean(v) for v in ys]
        ax.plot(xs, mean, marker="o", ms=3, label=method)
        ax.fill_between(xs, [min(v) for v in ys], [max(v) for v in ys], alpha=0.15)
    ax.axhline(FRACTION_GOAL, color="grey", lw=0.8, ls="--")
    ax.set_xscale("log")
    ax.set_xlabel("denoiser passes (samples x steps), log scale")
    ax.set_ylabel("fraction of the reference")
    ax.set_ylim(0.5, 1.02)
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


# -- the tasks ------------------------------------------------------------------------------------


Runner = Callable[[str, Callable[[int], Any]], dict[tuple[str, int], Run]]
"""Every run of one target: ``runner(target, make_oracle)``, ``make_oracle(seed)`` an oracle."""


def bench_table(
    args: argparse.Namespace,
    methods: list[str],
    runner: Runner | None = None,
    optuna_like: frozenset[str] = frozenset(OPTUNA),
) -> dict[str, Any]:
    """shapes, replayed on the table (building the chunks its runs and judges need).

    ``runner`` makes a target's runs (default: :func:`run_all` over ``methods`` and
    ``args.seeds``); ``optuna_like``: the methods whose anytime curve leaves the finals out."""
    from _replay import Oracle, judge, pool_score
    from _table import STEPS, Table, final_seeds

    setup = shapes_setup()
    targets = args.targets.split(",") if args.targets else setup.targets
    per_target: dict[str, Any] = {}
    all_runs: dict[tuple[str, str, int], Run] = {}
    all_fractions: dict[tuple[str, str, int], float] = {}
    all_curves: dict[tuple[str, str, int], list[float]] = {}
    plot_points: dict[str, list[tuple[list[float], list[float]]]] = {}
    for target in targets:
        table = Table(target)
        grid_top = sorted(table.grid_keys(), key=lambda k: (-pool_score(table, k, target), k))[
            : args.grid_top
        ]
        for attempt in range(args.max_builds + 1):
            oracles: list[Any] = []

            def make_oracle(
                seed: int, table: Any = table, target: str = target, oracles: list = oracles
            ) -> Any:
                oracle = Oracle(table, target, seed, lenient=True)
                oracles.append(oracle)
                return oracle

            if runner is None:
                runs = run_all(methods, setup, target, args.seeds, make_oracle, STEPS, args.extra_waves)
            else:
                runs = runner(target, make_oracle)
            need = set().union(*(o.missing for o in oracles))
            held = {w.incumbent for r in runs.values() for w in [*r.waves, *r.extended]}
            held |= {r.answer for r in runs.values() if r.answer is not None}
            for key in [*grid_top, *sorted(held)]:
                need |= {(key, s) for s in final_seeds(0) if not table.has(key, s)}
            judged = {
                k: judge(table, k, target) for k in [*grid_top, *held] if judge(table, k, target) is not None
            }
            if judged:
                best = max(judged, key=lambda k: (judged[k], k))
                need |= {(best, s) for r in (1, 2) for s in final_seeds(r) if not table.has(best, s)}
            if not need:
                break
            if attempt == args.max_builds:
                raise SystemExit(f"{target}: {len(need)} chunks still missing after {attempt} builds")
            log(f"{target}: building {len(need)} chunks (attempt {attempt + 1})")
            table.build(sorted(need))
        reference_key = max(judged, key=lambda k: (judged[k], k))
        reference = judged[reference_key]
        reseeds = [judge(table, reference_key, target, r) for r in (0, 1, 2)]
        noise = statistics.stdev(reseeds)  # type: ignore[arg-type]

        def frac(key: Key, judged: dict[Key, float] = judged, reference: float = reference) -> float:
            return judged[key] / reference

        fractions = {(m, s): frac(r.answer) for (m, s), r in runs.items()}  # type: ignore[arg-type]
        curves = {
            k: (search_curve(r, frac) if k[0] in optuna_like else curve(r, frac)) for k, r in runs.items()
        }
        per_target[target] = {
            "reference": {"key": list(reference_key), "score": reference, "reseeds": reseeds, "noise": noise},
            "grid_top_judged": {",".join(map(str, k)): judged[k] for k in grid_top},
            "runs": run_records(runs, fractions, curves),
            "summary": summarize(runs, fractions, curves, methods),
        }
        log(f"{target}: reference {reference_key} {reference:.4f} (noise {noise:.4f})")
        for (m, s), r in runs.items():
            all_runs[(m, target, s)] = r
            all_fractions[(m, target, s)] = fractions[(m, s)]
            all_curves[(m, target, s)] = curves[(m, s)]
            waves = r.waves[: r.search_waves] + r.extended if m in optuna_like else r.waves
            plot_points.setdefault(m, []).append(([w.passes.denoiser for w in waves], curves[(m, s)]))
    overall = summarize(all_runs, all_fractions, all_curves, methods)  # type: ignore[arg-type]
    if args.plot:
        write_plot(plot_points, Path(args.plot), f"shapes, {len(targets)} pairs x {len(args.seeds)} seeds")
    return {"targets": per_target, "summary": overall}


def bench_live(
    task_name: str, setup: TaskSetup, args: argparse.Namespace, methods: list[str]
) -> dict[str, Any]:
    """digits / gmm2d: live evaluations through the cache; judged on ``setup.final_samples``."""
    from _cache import ChunkEvaluator

    from tasks import get_task
    from tfg_search.run.settings import SearchSettings

    task = get_task(task_name)
    steps = int(args.steps or task.num_inference_steps)
    ev = ChunkEvaluator(task_name, steps=steps, cache=not args.no_cache)
    targets = args.targets.split(",") if args.targets else setup.targets
    per_target: dict[str, Any] = {}
    all_runs: dict[Any, Run] = {}
    all_fractions: dict[Any, float] = {}
    all_curves: dict[Any, list[float]] = {}
    for target in targets:
        structure = SearchSettings(task=task_name, target=target, steps=steps).resolve(task)

        def make_oracle(seed: int, target: str = target, structure: Any = structure) -> LiveOracle:
            return LiveOracle(ev, target, seed, setup.space, structure)

        runs = run_all(methods, setup, target, args.seeds, make_oracle, steps, args.extra_waves)
        ev.flush()
        judge_oracle = make_oracle(0)
        held = {w.incumbent for r in runs.values() for w in [*r.waves, *r.extended]}
        held |= {r.answer for r in runs.values() if r.answer is not None}
        chunks = setup.final_samples // ev.chunk
        judged = {
            k: ev.evaluate_one(target, judge_oracle.config(k), JUDGE_SEED, chunks).score for k in sorted(held)
        }
        ev.flush()
        reference = max(judged.values())

        def frac(key: Key, judged: dict[Key, float] = judged, reference: float = reference) -> float:
            return judged[key] / reference

        fractions = {(m, s): frac(r.answer) for (m, s), r in runs.items()}  # type: ignore[arg-type]
        curves = {k: (search_curve(r, frac) if k[0] in OPTUNA else curve(r, frac)) for k, r in runs.items()}
        per_target[target] = {
            "reference": reference,
            "runs": run_records(runs, fractions, curves),
            "summary": summarize(runs, fractions, curves, methods),
        }
        for (m, s), r in runs.items():
            all_runs[(m, target, s)] = r
            all_fractions[(m, target, s)] = fractions[(m, s)]
            all_curves[(m, target, s)] = curves[(m, s)]
    return {
        "targets": per_target,
        "summary": summarize(all_runs, all_fractions, all_curves, methods),
        "steps": steps,
    }


def print_summary(task: str, summary: dict[str, Any]) -> None:
    rows = []
    for m, s in summary.items():
        rows.append(
            [
                m,
                s["runs"],
                f"{s['mean_fraction']:.4f}",
                f"{s['min_fraction']:.4f}",
                f"{s['passes']:,.0f}",
                f"{s['evaluations']:.1f}",
                f"{s['waves']:.1f}",
                s[f"waves_to_{FRACTION_GOAL}"] or "not reached",
            ]
        )
    print_table(
        f"{task}: fraction of the reference at equal model passes, waves of K = {K} workers",
        [
            "method",
            "runs",
            "mean fraction",
            "min",
            "denoiser passes",
            "evaluations",
            "waves",
            "waves to 0.98",
        ],
        rows,
    )
    base = summary.get("rungs", {})
    for key, iv in base.items():
        if key.startswith("minus_"):
            print(f"  rungs - {key[6:]}: {iv['mean']:+.4f} [{iv['low']:+.4f}, {iv['high']:+.4f}]")


def merge_results(earlier: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
    """``payload`` with the tasks of an ``earlier`` report that this run did not measure (the
    tasks run apart, e.g. ``--tasks shapes`` then ``--tasks digits``, end up in one report; a
    task measured again replaces its earlier results). Each task keeps its own command and wall
    time.

    Example:
        >>> merge_results({"benchmark": "search_efficiency", "tasks": {"a": 1, "b": 2}},
        ...               {"benchmark": "search_efficiency", "tasks": {"b": 3}})["tasks"]
        {'a': 1, 'b': 3}
    """
    if earlier.get("benchmark") != "search_efficiency":
        return payload
    tasks = {k: v for k, v in earlier.get("tasks", {}).items() if k not in payload["tasks"]}
    return {**payload, "tasks": {**tasks, **payload["tasks"]}}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", default="shapes,digits")
    parser.add_argument("--targets", default="", help="comma list (default: the task's)")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument(
        "--extra-waves", type=int, default=8, help="waves of Optuna's samplers past the budget"
    )
    parser.add_argument(
        "--grid-top", type=int, default=16, help="shapes: grid points judged for the reference"
    )
    parser.add_argument("--max-builds", type=int, default=8)
    parser.add_argument(
        "--steps", type=int, default=None, help="live tasks: DDIM steps (default: the task's)"
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-cache", action="store_true")
    parser.add_argument("--quick", action="store_true", help="gmm2d only, tiny: the smoke test")
    parser.add_argument("--out", default=None)
    parser.add_argument("--plot", default=str(ROOT / "docs" / "img" / "search-efficiency.png"))
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    args.seeds = [int(s) for s in args.seeds.split(",")]
    methods = args.methods.split(",")
    if args.quick:
        args.tasks, args.seeds, args.extra_waves, args.plot = "gmm2d", [0], 1, None
        args.steps = args.steps or 8
    t0 = time.perf_counter()
    results: dict[str, Any] = {}
    for task_name in args.tasks.split(","):
        if task_name == "shapes":
            results[task_name] = bench_table(args, methods)
        else:
            setup = digits_setup() if task_name == "digits" else gmm_setup()
            results[task_name] = bench_live(task_name, setup, args, methods)
        print_summary(task_name, results[task_name]["summary"])
    wall = round(time.perf_counter() - t0, 1)
    for task_results in results.values():
        task_results["command"] = " ".join(sys.argv)
        task_results["wall_time_s"] = wall
    payload = {
        "benchmark": "search_efficiency",
        "workers": K,
        "goal": FRACTION_GOAL,
        "methods": methods,
        "seeds": args.seeds,
        "tasks": results,
    }
    out = Path(args.out) if args.out else RESULTS / "search_efficiency.json"
    if out.exists():
        payload = merge_results(json.loads(out.read_text()), payload)
    path = write_json("search_efficiency", payload, out)
    log(f"wrote {path}")


if __name__ == "__main__":
    main()

"""Does a search of a new target start better from the earlier searches of other targets?

Leave one target out, on the tabular shapes benchmark (``benchmarks/_table.py``, replayed as in
``search_efficiency.py``: the same oracles, waves of K = 8, the same judged finals and reference).
For each of the six pairs, its *history* is the other five pairs' finished cold default searches
(search seed 0, so no target leaks into its own history), as ``tfg-search search`` freezes them
into a new study (``tfg_search.run.transfer``: every evaluated point with its estimate and sample
units). Methods, three search seeds each:

* ``transfer``: the default rung search given that history (what ``tfg-search search`` does
  when the storage holds it);
* ``cold``: the default without it (``--no-transfer``);
* ``gp``: Optuna's GPSampler, cold, with the search samples ``cold`` spent;
* ``gp-warm``: the same GPSampler given the history's answers first (``enqueue_trial``, as an
  Optuna user warm-starts by hand);
* ``tpe``: Optuna's TPESampler, cold, with the same budget.

The history's passes are sunk cost: only the new search's passes are counted. ``negative``: the
same with a *misleading* history, the other pairs' cold searches of the opposite objective (they
maximised 1 - validity, so their best points are the worst here), forced in as ``--transfer-from``
would force them: ``transfer`` against ``cold``.

Reported (``summary.shapes``, per method): ``mean_fraction``, ``min_fraction``, ``passes``,
``fraction_after_wave`` (the mean over runs of the incumbent's judged fraction after each wave),
``waves_to_0.98``, ``anytime_area`` (the mean of ``fraction_after_wave``), and ``paired``
``transfer-<method>`` differences of the answers' fractions with 95% t-intervals.

Caveat, beside every interval: the three search seeds of a pair read the same 32 rung-0 samples
of a point (the table's pool; docs/benchmarks-search.md), so the 18 runs are 6 pairs x 3 draws of
search randomness on one noise draw per point.

Run:
    python benchmarks/search_transfer.py            # builds the chunks it lacks, resumably

Prints tables, writes benchmarks/results/search_transfer.json and docs/img/search-transfer.png.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, log, print_table, t_interval, write_json
from _replay import Oracle
from _table import STEPS, Table
from _waves import Key, Run, keys_of, search
from search_efficiency import (
    FINAL_TOP,
    FRACTION_GOAL,
    ROOT,
    K,
    bench_table,
    run_method,
    search_samples,
    shapes_setup,
)
from shapes_table import LADDER_PAIRS

METHODS = ("transfer", "cold", "gp", "gp-warm", "tpe")
CAVEAT = (
    "the three search seeds of a pair share each point's 32 rung-0 samples (the table's pool): "
    "6 pairs x 3 draws of search randomness on one noise draw per point"
)


class Inverted:
    """An oracle scoring 1 - validity: the searches of a misleading history."""

    def __init__(self, oracle: Any) -> None:
        self.oracle = oracle

    def evaluate(self, key: Key, samples: int, fresh: bool = True) -> float:
        return 1.0 - self.oracle.evaluate(key, samples, fresh)

    @property
    def passes(self) -> Any:
        return self.oracle.passes

    def fork(self) -> Inverted:
        return Inverted(self.oracle.fork())


class History:
    """The cold seed-0 search of every pair, built on first use (its missing chunks made)."""

    def __init__(self, inverted: bool = False) -> None:
        self.inverted = inverted
        self.runs: dict[str, Run] = {}

    def run(self, target: str) -> Run:
        if target not in self.runs:
            setup, table = shapes_setup(), Table(target)
            for _ in range(8):
                oracle = Oracle(table, target, 0, lenient=True)
                run = run_method(
                    "rungs", Inverted(oracle) if self.inverted else oracle, setup, target, 0, None, 0
                )
                if not oracle.missing:
                    break
                log(f"history {target}: building {len(oracle.missing)} chunks")
                table.build(sorted(oracle.missing))
            self.runs[target] = run
        return self.runs[target]

    def sources(self, left_out: str) -> list[dict[str, Any]]:
        """The other pairs' searches as frozen transfer sources."""
        out = []
        for target in LADDER_PAIRS:
            if target == left_out:
                continue
            run = self.run(target)
            space = shapes_setup().space
            assert run.answer is not None
            params = {n: space[n].value(k) for n, k in zip(space, run.answer, strict=True)}
            scores = [p["score"] for p in run.points if p["params"] == params]
            best = {"params": params, "score": scores[0] if scores else None}
            out.append(
                {
                    "name": f"shapes-{target}-cold-0{'-inverted' if self.inverted else ''}",
                    "target": target,
                    "answer": best,
                    "points": run.points,
                }
            )
        return out


def answers(sources: list[dict[str, Any]], space: dict[str, Any]) -> list[Key]:
    """The sources' answers as lattice keys, without repeats (what a user would enqueue)."""
    keys: list[Key] = []
    for s in sources:
        key = keys_of(s["answer"]["params"], space)
        if key not in keys:
            keys.append(key)
    return keys


def runner(seeds: list[int], methods: tuple[str, ...], history: History, extra_waves: int) -> Any:
    setup = shapes_setup()
    common: dict[str, Any] = dict(task=setup.task, workers=K, final_top=FINAL_TOP)
    common.update(final_samples=setup.final_samples)

    def runs_of(target: str, make_oracle: Any) -> dict[tuple[str, int], Run]:
        sources = history.sources(target)
        runs: dict[tuple[str, int], Run] = {}
        for seed in seeds:
            t0 = time.perf_counter()
            cold = run_method("rungs", make_oracle(seed), setup, target, seed, None, 0)
            runs[("cold", seed)] = cold
            trials = max(1, round(search_samples(cold, setup, STEPS) / setup.samples))
            if "transfer" in methods:
                runs[("transfer", seed)] = search(
                    "rungs",
                    make_oracle(seed),
                    setup.space,
                    target=target,
                    seed=seed,
                    unit=setup.unit,
                    seeds=setup.presets,
                    transfer=sources,
                    **common,
                )
            warm = answers(sources, setup.space)
            for name, method, enqueued in (("gp", "gp", ()), ("tpe", "tpe", ()), ("gp-warm", "gp", warm)):
                if name in methods:
                    runs[(name, seed)] = search(
                        method,
                        make_oracle(seed),
                        setup.space,
                        target=target,
                        seed=seed,
                        unit=setup.samples,
                        trials=trials,
                        extra_waves=extra_waves,
                        warm=enqueued,
                        **common,
                    )
            log(
                f"{target} seed {seed}: "
                + ", ".join(f"{m} {r.answer}" for (m, s), r in runs.items() if s == seed)
                + f" ({time.perf_counter() - t0:.1f} s)"
            )
        return {k: v for k, v in runs.items() if k[0] in methods}

    return runs_of


def summary(result: dict[str, Any], methods: tuple[str, ...], base: str = "transfer") -> dict[str, Any]:
    """The issue's summary keys, from bench_table's per-target run records."""
    runs: dict[tuple[str, str, int], dict[str, Any]] = {}
    for target, per in result["targets"].items():
        for name, record in per["runs"].items():
            method, seed = name.rsplit("/", 1)
            runs[(method, target, int(seed))] = record
    out: dict[str, Any] = {}
    for m in methods:
        keys = sorted(k for k in runs if k[0] == m)
        if not keys:
            continue
        fractions = [runs[k]["fraction"] for k in keys]
        curves = [runs[k]["curve"] for k in keys]
        length = min(len(c) for c in curves)
        after = [statistics.mean(c[i] for c in curves) for i in range(length)]
        reached = next((i + 1 for i, f in enumerate(after) if f >= FRACTION_GOAL), None)
        out[m] = {
            "runs": len(keys),
            "mean_fraction": statistics.mean(fractions),
            "min_fraction": min(fractions),
            "passes": statistics.mean(runs[k]["passes"]["denoiser"] for k in keys),
            "fraction_after_wave": after,
            f"waves_to_{FRACTION_GOAL}": reached,
            "anytime_area": statistics.mean(after) if after else None,
        }
    paired = {}
    for m in methods:
        if m == base or m not in out or base not in out:
            continue
        pairs = sorted({k[1:] for k in runs if k[0] == m} & {k[1:] for k in runs if k[0] == base})
        d = [runs[(base, *p)]["fraction"] - runs[(m, *p)]["fraction"] for p in pairs]
        paired[f"{base}-{m}"] = dict(zip(("mean", "low", "high"), t_interval(d), strict=True))
    return {**out, "paired": paired, "caveat": CAVEAT}


def write_plot(shapes: dict[str, Any], negative: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, part, title in (
        (axes[0], shapes, "history of the other pairs"),
        (axes[1], negative, "misleading history"),
    ):
        for m, s in part.items():
            if isinstance(s, dict) and "fraction_after_wave" in s:
                curve = s["fraction_after_wave"]
                ax.plot(range(1, len(curve) + 1), curve, marker="o", ms=3, label=m)
        ax.axhline(FRACTION_GOAL, color="grey", lw=0.8, ls="--")
        ax.set_xlabel("wave (8 evaluations)")
        ax.set_title(f"shapes, leave one pair out: {title}", fontsize=10)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("incumbent, fraction of the reference")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def print_summary(title: str, part: dict[str, Any]) -> None:
    rows = []
    for m, s in part.items():
        if isinstance(s, dict) and "mean_fraction" in s:
            first = s["fraction_after_wave"][0] if s["fraction_after_wave"] else float("nan")
            rows.append(
                [
                    m,
                    f"{s['mean_fraction']:.4f}",
                    f"{s['min_fraction']:.4f}",
                    f"{first:.4f}",
                    str(s[f"waves_to_{FRACTION_GOAL}"]),
                    f"{s['anytime_area']:.4f}",
                    f"{s['passes']:,.0f}",
                ]
            )
    print_table(title, ["method", "mean", "min", "after wave 1", "waves to 0.98", "anytime", "passes"], rows)
    for name, d in part.get("paired", {}).items():
        print(f"  {name}: {d['mean']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--targets", default=",".join(LADDER_PAIRS))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--extra-waves", type=int, default=3)
    parser.add_argument("--grid-top", type=int, default=16)
    parser.add_argument("--max-builds", type=int, default=8)
    parser.add_argument("--no-negative", action="store_true")
    parser.add_argument(
        "--negative-targets", default=None, help="pairs of the misleading run (default: --targets)"
    )
    parser.add_argument("--out", default=str(RESULTS / "search_transfer.json"))
    parser.add_argument("--plot", default=str(ROOT / "docs" / "img" / "search-transfer.png"))
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    seeds = [int(s) for s in args.seeds.split(",")]
    t0 = time.perf_counter()
    table_args = argparse.Namespace(
        targets=args.targets,
        seeds=seeds,
        extra_waves=args.extra_waves,
        grid_top=args.grid_top,
        max_builds=args.max_builds,
        plot="",
    )
    optuna_like = frozenset({"gp", "gp-warm", "tpe"})
    history = History()
    shapes = bench_table(
        table_args, list(METHODS), runner(seeds, METHODS, history, args.extra_waves), optuna_like
    )
    payload: dict[str, Any] = {
        "benchmark": "search_transfer",
        "workers": K,
        "goal": FRACTION_GOAL,
        "seeds": seeds,
        "summary": {"shapes": summary(shapes, METHODS)},
        "targets": shapes["targets"],
        "history": {
            t: {"answer": list(r.answer or ()), "points": len(r.points)} for t, r in history.runs.items()
        },
    }
    print_summary("shapes, leave one pair out", payload["summary"]["shapes"])
    if not args.no_negative:
        negative_args = argparse.Namespace(
            **{**vars(table_args), "targets": args.negative_targets or args.targets}
        )
        negative = bench_table(
            negative_args,
            ["transfer", "cold"],
            runner(seeds, ("transfer", "cold"), History(inverted=True), 0),
        )
        payload["summary"]["negative"] = summary(negative, ("transfer", "cold"))
        payload["negative_targets"] = negative["targets"]
        print_summary("shapes, misleading history", payload["summary"]["negative"])
    payload["command"] = " ".join(sys.argv)
    payload["wall_time_s"] = round(time.perf_counter() - t0, 1)
    if args.plot:
        write_plot(payload["summary"]["shapes"], payload["summary"].get("negative", {}), Path(args.plot))
    log(f"wrote {write_json('search_transfer', payload, Path(args.out))}")


if __name__ == "__main__":
    main()

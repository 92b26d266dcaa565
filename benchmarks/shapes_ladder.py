"""The shapes task's acceptance ladder: unguided vs guided validity for every rare pair, and a trial's cost.

For each colour-shape pair whose training share is below ``--below`` (5%): validity (judged by the
analytic judges) of ``--samples`` unguided samples, and of TFG at each rung of the ladder
(rho, mu) = (0.25, 0.06), (1, 0.25), (4, 1), (16, 4) with gamma 0.001 (n_recur 1, n_iter 4, the
default schedules), all on the same seed; the best rung's gain over unguided is the number the task
must make large (>= 0.4). Also the wall time of one trial at the task's defaults and of one
64-sample, 50-step trial.

Run:
    python benchmarks/shapes_ladder.py                  # writes benchmarks/results/shapes_ladder.json
    python benchmarks/shapes_ladder.py --pairs cyan-triangle --samples 32 --steps 25
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch
from _common import print_table, write_json

from tasks import get_task
from tasks.shapes_data import rare_pairs, target_rate
from tfg_search.guidance.config import TFGConfig
from tfg_search.run.evaluation import evaluate

LADDER = ((0.25, 0.06), (1.0, 0.25), (4.0, 1.0), (16.0, 4.0))


def judge_agreement(task: Any, steps: int, n_real: int = 1200, n_unguided: int = 256) -> dict[str, Any]:
    """How often the analytic judges and the guiding CNNs read the same colour and shape: on fresh
    real images (balanced pairs) and on unguided samples of the UNet."""
    from tasks.shapes_data import render_batch
    from tasks.shapes_judge import judge

    real, _, _ = render_batch(n_real, seed=31_337, rates="uniform")
    unguided = evaluate(
        task, "red", TFGConfig(), n_unguided, 7, num_inference_steps=steps, return_samples=True
    )
    out = {}
    for name, x in (("real (balanced)", real), ("unguided samples", unguided.samples)):
        verdict = judge(x)
        with torch.no_grad():
            colour = task.guide("colour", "cpu")(x).argmax(1)
            shape = task.guide("shape", "cpu")(x).argmax(1)
        out[name] = {
            "n": len(x),
            "colour": float((colour == verdict.colour).float().mean()),
            "shape": float((shape == verdict.shape).float().mean()),
        }
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pairs", default=None, help="comma list (default: every pair below --below)")
    p.add_argument("--below", type=float, default=0.05)
    p.add_argument("--samples", type=int, default=64)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--grid", type=Path, default=None, help="also write a PNG: real, unguided, guided rows")
    args = p.parse_args(argv)
    task = get_task("shapes")
    pairs = args.pairs.split(",") if args.pairs else rare_pairs(args.below)
    results: dict[str, Any] = {}
    rows = []
    for pair in pairs:
        t0 = time.perf_counter()
        unguided = evaluate(task, pair, TFGConfig(), args.samples, args.seed, num_inference_steps=args.steps)
        rungs = []
        for rho, mu in LADDER:
            r = evaluate(
                task, pair, TFGConfig(rho=rho, mu=mu, gamma=0.001), args.samples, args.seed,
                num_inference_steps=args.steps,
            )  # fmt: skip
            rungs.append({"rho": rho, "mu": mu, "metrics": r.metrics, "wall_s": round(r.wall_time_s, 2)})
        best = max(rungs, key=lambda g: g["metrics"]["validity"])
        gain = best["metrics"]["validity"] - unguided.metrics["validity"]
        results[pair] = {
            "base_rate": target_rate(pair),
            "unguided": unguided.metrics,
            "ladder": rungs,
            "best": {"rho": best["rho"], "mu": best["mu"], "validity": best["metrics"]["validity"]},
            "gain": gain,
            "meets": unguided.metrics["validity"] < 0.1 and gain >= 0.4,
            "wall_s": round(time.perf_counter() - t0, 1),
        }
        rows.append(
            [
                pair,
                f"{target_rate(pair):.1%}",
                f"{unguided.metrics['validity']:.3f}",
                *(f"{g['metrics']['validity']:.3f}" for g in rungs),
                f"{gain:+.3f}",
                "yes" if results[pair]["meets"] else "NO",
            ]
        )
        print(f"{pair}: {rows[-1]}", file=sys.stderr, flush=True)
    print_table(
        f"shapes: validity of {args.samples} samples, {args.steps} steps (analytic judges)",
        ["pair", "share", "unguided", *(f"({r:g}, {m:g})" for r, m in LADDER), "gain", ">= +0.4"],
        rows,
    )
    timing = {}
    for name, (n, steps) in {
        "defaults": (task.search_samples, task.num_inference_steps),
        "64 samples, 50 steps": (64, 50),
    }.items():
        cfg = TFGConfig(rho=1.0, mu=0.25, gamma=0.001)
        evaluate(task, pairs[0], cfg, 2, 0, num_inference_steps=2)  # models loaded
        r = evaluate(task, pairs[0], cfg, n, 0, num_inference_steps=steps)
        timing[name] = {"samples": n, "steps": steps, "wall_s": round(r.wall_time_s, 2)}
    print_table("one guided trial (rho 1, mu 0.25, n_iter 4)", ["", "samples", "steps", "wall s"],
                [[k, v["samples"], v["steps"], v["wall_s"]] for k, v in timing.items()])  # fmt: skip
    if args.grid is not None:
        from tasks.shapes_data import render_batch
        from tfg_search.cli.images import save_samples

        rows = [render_batch(16, 1)[0]]  # two rows of real training images
        rows.append(evaluate(task, pairs[0], TFGConfig(), 24, 1, return_samples=True).samples)
        for pair in pairs[:2]:  # guided at its best rung
            best = results[pair]["best"]
            cfg = TFGConfig(rho=best["rho"], mu=best["mu"], gamma=0.001)
            rows.append(evaluate(task, pair, cfg, 8, 1, return_samples=True).samples)
        save_samples(torch.cat(rows), args.grid, ncol=8)
        print(
            f"wrote {args.grid} (rows: 2 real, 3 unguided, then {', '.join(pairs[:2])} guided)",
            file=sys.stderr,
        )
    agreement = judge_agreement(task, args.steps)
    print_table(
        "judges vs guiding CNNs: share of images on which they read the same attribute",
        ["images", "n", "colour", "shape"],
        [[k, v["n"], f"{v['colour']:.3f}", f"{v['shape']:.3f}"] for k, v in agreement.items()],
    )
    payload = {
        "settings": {"samples": args.samples, "steps": args.steps, "seed": args.seed, "ladder": LADDER},
        "agreement": agreement,
        "results": results,
        "all_meet": all(r["meets"] for r in results.values()),
        "trial_time": timing,
    }
    path = write_json("shapes_ladder", payload, args.out)
    print(f"wrote {path}", file=sys.stderr)
    return payload


if __name__ == "__main__":
    main()

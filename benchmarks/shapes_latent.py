"""shapes-latent: what TFG adds to a conditional latent model (issue 25's target).

On each conditional rare pair (:data:`tasks.shapes_latent.CONDITIONAL_RARE_PAIRS`: the shape rarest
within its colour), three ways to draw ``COLOUR-SHAPE`` from the colour-conditioned latent model,
each chosen on a selection seed and then judged on ``--samples`` fresh samples (seed
``--fresh-seed``, never used to choose) by the analytic judges on decoded images:

* **CFG alone**: every scale of ``--scales`` is evaluated on ``--select-samples`` samples and the
  best is kept (an exhaustive search of the one parameter).
* **CFG + best-of-N**: N CFG candidates per kept sample, the one the guiding predictor (the shape
  CNN on the decoded candidate, forward only) likes best is kept. N is the least that gives the
  baseline at least TFG's answer's passes per kept sample: N >= its predictor passes and
  N x steps x CFG branches >= its denoiser passes. Its scale is chosen like CFG's, on the selection
  seed.
* **CFG + TFG**: the service's default search (``tfg-search search``: the rung search, its
  in-process executor) over the guidance scale and TFG's strengths together (the task's lattices;
  ``n_iter`` fixed at ``--n-iter``); its answer (the best of its final re-runs) is then judged on the
  fresh samples.

Validity (colour and shape both right) with a 95% Wilson interval; passes per kept sample of each
answer; what each choice spent. Resumable: the searches keep their studies in
``--cache/shapes_latent.db`` and every finished part is kept in ``--cache/parts.json``.

Run:
    python benchmarks/shapes_latent.py                       # writes benchmarks/results/shapes_latent.json
    python benchmarks/shapes_latent.py --grid docs/img/shapes_latent.png
    python benchmarks/shapes_latent.py --pairs cyan-triangle --samples 64 --out /tmp/sl.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import torch
from _common import RESULTS, log, print_table, write_json

from tasks import get_task
from tasks.shapes_latent import CONDITIONAL_RARE_PAIRS, shape_share
from tfg_search.guidance import TFGConfig, best_of_n_passes, sample_passes
from tfg_search.guidance.latent import sample_and_decode
from tfg_search.guidance.passes import cfg_branches
from tfg_search.run.evaluation import evaluate_batch

CACHE = RESULTS / "cache" / "shapes_latent"


def wilson(successes: float, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of a proportion of ``n`` trials.

    Example:
        >>> [round(v, 3) for v in wilson(20, 100)]
        [0.133, 0.289]
    """
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def bon_n(tfg: TFGConfig, bon_scale: float, steps: int) -> int:
    """The least N that gives best-of-N at ``bon_scale`` at least the passes per kept sample of
    TFG's answer ``tfg``: N predictor passes >= TFG's, N x steps x branches >= TFG's denoiser passes.

    Example:
        >>> bon_n(TFGConfig(guidance_scale=2, rho=1, mu=1, n_iter=1), 2.0, 10)
        10
    """
    spent = sample_passes(tfg, steps, 1, decoder=True)
    denoiser_per_candidate = steps * cfg_branches(TFGConfig(guidance_scale=bon_scale))
    return max(1, spent["predictor"], -(-spent["denoiser"] // denoiser_per_candidate))


def best_of_n(
    task: Any, pair: str, scale: float, steps: int, kept: int, n: int, seed: int, chunk: int = 512
) -> tuple[dict[str, float], torch.Tensor]:
    """Best-of-``n`` at CFG ``scale``: (metrics of the ``kept`` samples chosen, their images).

    Candidates are drawn in chunks (one generator seeded by ``seed`` for the whole draw) and scored
    once by the guide (log f on the latent: the shape CNN on its decoded image, forward only)."""
    model, scheduler = task.diffusion("cpu")
    log_f, decoder = task.log_f(pair, "cpu"), task.decoder("cpu")
    config = TFGConfig(guidance_scale=scale, n_iter=1, clip_x0=task.clip_x0)  # latents: no clip
    gen = torch.Generator().manual_seed(seed)
    chosen = []
    per_chunk = max(1, chunk // n)
    for start in range(0, kept, per_chunk):
        m = min(per_chunk, kept - start)
        (latents,), _ = sample_and_decode(
            model, scheduler, log_f, [config], (m * n, *task.sample_shape), [gen], steps, "cpu",
            conditioning=task.conditioning(pair, "cpu"),
        )  # fmt: skip
        with torch.no_grad():
            scores = log_f(latents)
        pick = scores.view(m, n).argmax(1)
        chosen.append(latents.view(m, n, *task.sample_shape)[torch.arange(m), pick])
    with torch.no_grad():
        images = decoder(torch.cat(chosen))
    return task.compute_metrics(images, pair), images


def judged(metrics: dict[str, float], n: int) -> dict[str, Any]:
    """Validity with its interval, and the other metrics."""
    low, high = wilson(metrics["validity"] * n, n)
    return {"validity": metrics["validity"], "interval": [low, high], "metrics": metrics}


class Parts:
    """Finished parts of the benchmark, kept in a JSON file (the benchmark resumes from it)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}

    def get(self, key: str, make: Any) -> Any:
        if key not in self.data:
            self.data[key] = make()
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.data, indent=1, sort_keys=True))
            tmp.replace(self.path)
        return self.data[key]


def cfg_alone(task: Any, pair: str, args: argparse.Namespace) -> dict[str, Any]:
    """Every scale on the selection seed; the best kept."""
    scales = [float(w) for w in args.scales.split(",")]
    configs = [TFGConfig(guidance_scale=w, n_iter=1) for w in scales]
    runs = evaluate_batch(
        task, pair, configs, args.select_samples, [args.seed] * len(configs), num_inference_steps=args.steps
    )
    by_scale = {str(w): r.metrics["validity"] for w, r in zip(scales, runs, strict=True)}
    best = max(scales, key=lambda w: (by_scale[str(w)], -w))
    spent = [sample_passes(c, args.steps, args.select_samples, decoder=True) for c in configs]
    return {"by_scale": by_scale, "scale": best, "search_passes": _sum(spent)}


def cfg_bon_select(task: Any, pair: str, n: int, args: argparse.Namespace) -> dict[str, Any]:
    """Best-of-N at every scale on the selection seed; the best scale kept."""
    scales = [float(w) for w in args.scales.split(",")]
    kept = max(8, args.select_samples // 2)
    by_scale = {}
    for w in scales:
        metrics, _ = best_of_n(task, pair, w, args.steps, kept, n, args.seed)
        by_scale[str(w)] = metrics["validity"]
    best = max(scales, key=lambda w: (by_scale[str(w)], -w))
    spent = [best_of_n_passes(TFGConfig(guidance_scale=w), args.steps, n, kept, decoder=True) for w in scales]
    return {"by_scale": by_scale, "scale": best, "n": n, "kept": kept, "search_passes": _sum(spent)}


def search_tfg(pair: str, args: argparse.Namespace) -> dict[str, Any]:
    """The service's default search over the guidance scale and TFG's strengths."""
    import optuna

    from tfg_search.run.coordinator import run_search
    from tfg_search.run.executors import LocalExecutor
    from tfg_search.run.settings import SearchSettings

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    settings = SearchSettings(
        task="shapes-latent",
        target=pair,
        steps=args.steps,
        n_iter=args.n_iter,
        samples=args.search_samples,
        final_samples=args.final_samples,
        seed=args.seed,
        task_options=_options(args),
    )
    t0 = time.perf_counter()
    storage = f"sqlite:///{args.cache / 'shapes_latent.db'}"
    report = run_search(settings, storage, f"bench-{pair}", LocalExecutor(batch_size=args.batch))
    return {
        "study": report.study_name,
        "config": report.best_config.to_dict(),
        "search_score": report.best_score,
        "search_trials": report.n_search,
        "final_trials": report.n_final,
        "search_passes": report.compute.get("passes"),
        "wall_s": round(time.perf_counter() - t0, 1),
    }


def _options(args: argparse.Namespace) -> dict[str, str]:
    return {"weights": str(args.weights)} if args.weights else {}


def _sum(spent: list[dict[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for s in spent:
        for k, v in s.items():
            out[k] = out.get(k, 0) + v
    return out


def run_pair(task: Any, pair: str, parts: Parts, args: argparse.Namespace) -> dict[str, Any]:
    """The three ways on one pair, chosen on the selection seed, judged on fresh samples."""
    fresh, n = args.fresh_seed, args.samples
    log(f"{pair}: CFG alone")
    cfg = parts.get(f"{pair}/cfg", lambda: cfg_alone(task, pair, args))
    log(f"{pair}: CFG + TFG search")
    tfg = parts.get(f"{pair}/tfg", lambda: search_tfg(pair, args))
    tfg_config = TFGConfig.from_dict(tfg["config"])
    bon = {}
    for w in (float(s) for s in args.scales.split(",")):  # N at each scale; the largest bounds all
        bon[str(w)] = bon_n(tfg_config, w, args.steps)
    n_bon = max(bon.values())
    log(f"{pair}: CFG + best-of-{n_bon}")
    bon_sel = parts.get(f"{pair}/bon", lambda: cfg_bon_select(task, pair, n_bon, args))

    def fresh_cfg() -> dict[str, Any]:
        (r,) = evaluate_batch(
            task, pair, [TFGConfig(guidance_scale=cfg["scale"], n_iter=1)], n, [fresh],
            num_inference_steps=args.steps,
        )  # fmt: skip
        return judged(r.metrics, n)

    def fresh_tfg() -> dict[str, Any]:
        (r,) = evaluate_batch(task, pair, [tfg_config], n, [fresh], num_inference_steps=args.steps)
        return judged(r.metrics, n)

    def fresh_bon() -> dict[str, Any]:
        metrics, _ = best_of_n(task, pair, bon_sel["scale"], args.steps, n, n_bon, fresh)
        return judged(metrics, n)

    log(f"{pair}: fresh samples")
    out = {
        "cfg": parts.get(f"{pair}/fresh/cfg", fresh_cfg),
        "cfg_bon": parts.get(f"{pair}/fresh/bon", fresh_bon),
        "cfg_tfg": parts.get(f"{pair}/fresh/tfg", fresh_tfg),
    }
    bon_config = TFGConfig(guidance_scale=bon_sel["scale"])
    return {
        "cfg": out["cfg"]["validity"],
        "cfg_bon": out["cfg_bon"]["validity"],
        "cfg_tfg": out["cfg_tfg"]["validity"],
        "samples": n,
        "intervals": {k: v["interval"] for k, v in out.items()},
        "metrics": {k: v["metrics"] for k, v in out.items()},
        "passes": {  # per kept sample
            "cfg": sample_passes(
                TFGConfig(guidance_scale=cfg["scale"], n_iter=1), args.steps, 1, decoder=True
            ),
            "cfg_bon": best_of_n_passes(bon_config, args.steps, n_bon, 1, decoder=True),
            "cfg_tfg": sample_passes(tfg_config, args.steps, 1, decoder=True),
        },
        "choices": {
            "cfg": cfg,
            "cfg_bon": bon_sel,
            "cfg_tfg": tfg,
        },
        "shape_share_in_colour": shape_share(*pair.split("-")),
        "gain_over_cfg": out["cfg_tfg"]["validity"] - out["cfg"]["validity"],
        "meets": out["cfg_tfg"]["validity"] >= out["cfg"]["validity"] + 0.3
        and out["cfg_tfg"]["validity"] > out["cfg_bon"]["validity"],
    }


def grid(task: Any, results: dict[str, Any], args: argparse.Namespace, path: Path) -> None:
    """A PNG: per pair, a row of CFG alone, of CFG + best-of-N and of CFG + TFG (fresh seed)."""
    from tfg_search.cli.images import save_samples

    rows = []
    for pair, r in results.items():
        c = r["choices"]
        (a,) = evaluate_batch(
            task, pair, [TFGConfig(guidance_scale=c["cfg"]["scale"], n_iter=1)], 8, [args.fresh_seed],
            num_inference_steps=args.steps, return_samples=True,
        )  # fmt: skip
        _, b = best_of_n(task, pair, c["cfg_bon"]["scale"], args.steps, 8, c["cfg_bon"]["n"], args.fresh_seed)
        (t,) = evaluate_batch(
            task, pair, [TFGConfig.from_dict(c["cfg_tfg"]["config"])], 8, [args.fresh_seed],
            num_inference_steps=args.steps, return_samples=True,
        )  # fmt: skip
        rows += [a.samples, b, t.samples]
    save_samples(torch.cat(rows).clamp(-1, 1), path, ncol=8)
    log(f"wrote {path} (rows per pair: CFG alone, CFG + best-of-N, CFG + TFG)")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pairs", default=",".join(CONDITIONAL_RARE_PAIRS))
    p.add_argument("--steps", type=int, default=10, help="DDIM steps of every way (default 10)")
    p.add_argument("--n-iter", type=int, default=1, help="TFG's n_iter during its search (default 1)")
    p.add_argument("--scales", default="1,1.5,2,3,4,6", help="CFG scales of CFG alone and best-of-N")
    p.add_argument("--select-samples", type=int, default=128, help="samples per scale when choosing")
    p.add_argument("--search-samples", type=int, default=32, help="TFG search: samples of a rung-0 trial")
    p.add_argument("--final-samples", type=int, default=128, help="TFG search: samples of a final re-run")
    p.add_argument("--samples", type=int, default=256, help="fresh samples of each answer")
    p.add_argument("--seed", type=int, default=0, help="selection seed (the searches' too)")
    p.add_argument("--fresh-seed", type=int, default=1000)
    p.add_argument("--batch", type=int, default=8, help="TFG search: trials sampled together")
    p.add_argument("--weights", type=Path, default=None, help="shapes-latent weights (default: shipped)")
    p.add_argument("--cache", type=Path, default=CACHE)
    p.add_argument("--grid", type=Path, default=None, help="also write a PNG of the three ways per pair")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    args.cache.mkdir(parents=True, exist_ok=True)
    task = get_task("shapes-latent", _options(args))
    parts = Parts(args.cache / "parts.json")
    t0 = time.perf_counter()
    results = {pair: run_pair(task, pair, parts, args) for pair in args.pairs.split(",")}
    rows = []
    for pair, r in results.items():
        iv = r["intervals"]
        rows.append(
            [
                pair,
                f"{r['shape_share_in_colour']:.3f}",
                f"{r['cfg']:.3f} [{iv['cfg'][0]:.2f}, {iv['cfg'][1]:.2f}] "
                f"(w {r['choices']['cfg']['scale']:g})",
                f"{r['cfg_bon']:.3f} [{iv['cfg_bon'][0]:.2f}, {iv['cfg_bon'][1]:.2f}] "
                f"(N {r['choices']['cfg_bon']['n']}, w {r['choices']['cfg_bon']['scale']:g})",
                f"{r['cfg_tfg']:.3f} [{iv['cfg_tfg'][0]:.2f}, {iv['cfg_tfg'][1]:.2f}]",
                f"{r['gain_over_cfg']:+.3f}",
                "yes" if r["meets"] else "NO",
            ]
        )
    print_table(
        f"shapes-latent: validity of {args.samples} fresh samples, {args.steps} steps (95% Wilson interval)",
        ["pair", "share in colour", "CFG", "CFG + best-of-N", "CFG + TFG", "TFG - CFG", "target met"],
        rows,
    )
    if args.grid is not None:
        grid(task, results, args, args.grid)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "cache"}
    payload = {
        "settings": settings,
        "pairs": results,
        "all_meet": all(r["meets"] for r in results.values()),
        "wall_s_this_run": round(time.perf_counter() - t0, 1),
    }
    path = write_json("shapes_latent", payload, args.out)
    log(f"wrote {path}")
    return payload


if __name__ == "__main__":
    main()

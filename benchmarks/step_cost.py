"""How close a guided trial runs to its compute floor, and a whole search to the sum of its floors.

The floor of a trial is the model passes it cannot avoid (docs/algorithm.md, section 2): per step,
n_recur x (UNet forward, + backward when rho > 0) plus n_recur x M x (1[rho > 0] + n_iter x 1[mu > 0])
predictor forward+backward passes, each timed here in isolation on the task's own models. This
implementation needs one predictor pass fewer per round when rho and mu are both on (the variance
gradient at x0 is the first mean step): "floor (ours)" counts that, "floor (paper)" does not.

Run:
    python benchmarks/step_cost.py                    # digits, target 3, 64 samples, 50 steps
    python benchmarks/step_cost.py --search           # also a whole default CLI search (1b)

Prints tables and writes benchmarks/results/step_cost.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import median, print_table, write_json

from tasks import get_task
from tfg_search import TFGConfig, guided_sample
from tfg_search.guidance.sampler import ddim_chain, pass_counts


def _timeit(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return median(times)


class PassTimer:
    """Median times of single passes of the task's UNet and predictor at a batch size."""

    def __init__(self, task: Any, target: str, device: torch.device, calls: int = 20) -> None:
        self.model, self.scheduler = task.diffusion(device)
        self.log_f = task.log_f(target, device)
        self.shape = tuple(task.sample_shape)
        self.device = device
        self.calls = calls
        self.t = ddim_chain(self.scheduler, 50, device).timesteps[25]
        self._cache: dict[tuple[str, int], float] = {}

    def _x(self, batch: int) -> torch.Tensor:
        return torch.randn(batch, *self.shape, device=self.device)

    def _eps(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x, self.t.expand(x.shape[0]))
        return out.sample if hasattr(out, "sample") else out

    def time(self, kind: str, batch: int) -> float:
        key = (kind, batch)
        if key not in self._cache:
            x = self._x(batch)

            def unet_fwd() -> None:
                with torch.no_grad():
                    for _ in range(self.calls):
                        self._eps(x)

            def unet_fwd_bwd() -> None:
                for _ in range(self.calls):
                    xi = x.detach().requires_grad_(True)
                    torch.autograd.grad(self._eps(xi).sum(), xi)

            def pred_fwd_bwd() -> None:
                for _ in range(self.calls):
                    xi = x.clamp(-1, 1).detach().requires_grad_(True)
                    torch.autograd.grad(self.log_f(xi).sum(), xi)

            fn = {"unet_fwd": unet_fwd, "unet_fwd_bwd": unet_fwd_bwd, "pred": pred_fwd_bwd}[kind]
            self._cache[key] = _timeit(fn, 3) / self.calls
        return self._cache[key]

    def sample(self, cfg: TFGConfig, shape: tuple[int, ...], steps: int) -> None:
        """One guided run of ``cfg`` on the task's models (seed 0): what a trial samples."""
        guided_sample(
            self.model,
            self.scheduler,
            self.log_f,
            cfg,
            shape,
            steps,
            generator=torch.Generator().manual_seed(0),
            device=self.device,
        )

    def floor(self, cfg: TFGConfig, batch: int, steps: int, ours: bool) -> float:
        counts = pass_counts(cfg, steps, this_implementation=ours)
        unet = counts.unet_forward * self.time("unet_fwd", batch) + counts.unet_forward_backward * self.time(
            "unet_fwd_bwd", batch
        )
        # M Monte-Carlo copies run as one predictor call on B*M samples: count that batched cost.
        pred = counts.predictor_forward_backward / cfg.n_mc * self.time("pred", batch * cfg.n_mc)
        return unet + pred


def configurations(task: Any) -> dict[str, TFGConfig]:
    """TFG defaults, its variations and each preset, at strengths from the task's lattice."""
    space = task.default_space
    rho, mu, gamma = (space[k][0] * space[k][1] ** 2 for k in ("rho", "mu", "gamma"))
    strength = task.default_strength_space[0] * task.default_strength_space[1] ** 2
    tfg = TFGConfig(rho=rho, mu=mu, gamma=gamma, n_iter=4, clip_x0=task.clip_x0)
    configs = {
        "tfg (n_recur 1, n_iter 4)": tfg,
        "tfg n_recur 4": tfg.replace(n_recur=4),
        "tfg n_iter 0": tfg.replace(n_iter=0),
        "tfg gamma 0": tfg.replace(gamma=0.0),
        "unguided": TFGConfig(clip_x0=task.clip_x0),
    }
    for name in ("dps", "lgd", "freedom", "mpgd", "ugd"):
        configs[name] = TFGConfig.preset(name, strength, clip_x0=task.clip_x0)
    return configs


def bench_trials(args: argparse.Namespace) -> dict[str, Any]:
    task = get_task(args.task)
    device = torch.device(args.device)
    timer = PassTimer(task, args.target, device)
    rows, out = [], []
    for name, cfg in configurations(task).items():
        shape = (args.samples, *task.sample_shape)

        def run(cfg: TFGConfig = cfg, shape: tuple[int, ...] = shape) -> None:
            timer.sample(cfg, shape, args.steps)

        trial = _timeit(run, args.repeats)
        paper = timer.floor(cfg, args.samples, args.steps, ours=False)
        ours = timer.floor(cfg, args.samples, args.steps, ours=True)
        rows.append([name, paper, ours, trial, trial / paper, trial / ours])
        out.append(
            {
                "config": name,
                "tfg_config": cfg.to_dict(),
                "floor_paper_s": paper,
                "floor_ours_s": ours,
                "trial_s": trial,
                "ratio_paper_floor": trial / paper,
                "ratio_our_floor": trial / ours,
            }
        )
    print_table(
        f"{args.task} trial cost vs floor ({args.samples} samples, {args.steps} steps, {device})",
        [
            "configuration",
            "floor paper (s)",
            "floor ours (s)",
            "trial (s)",
            "trial/floor paper",
            "trial/floor ours",
        ],
        rows,
    )
    passes = {f"{k}@{b}": v for (k, b), v in timer._cache.items()}
    print_table("single passes (s)", ["pass@batch", "seconds"], [[k, v] for k, v in passes.items()])
    return {"trials": out, "passes_s": passes, "timer": timer}


def bench_search(args: argparse.Namespace, timer: PassTimer) -> dict[str, Any]:
    """A whole default search from the CLI (models loaded once) against the sum of its trials' floors."""
    import optuna

    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        cmd = [
            sys.executable,
            "-m",
            "tfg_search",
            "search",
            "--task",
            args.task,
            "--target",
            args.target,
            "--storage",
            url,
            "--quiet",
            "--json",
            "--out-dir",
            f"{tmp}/out",
            "--device",
            args.device,
        ]
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        wall = time.perf_counter() - start
        report = json.loads(proc.stdout)
        study = optuna.load_study(study_name=report["study"], storage=url)
        trials = [t for t in study.trials if t.state.is_finished() and "config" in t.user_attrs]
        floors, trial_walls = 0.0, 0.0
        for t in trials:
            cfg = TFGConfig.from_dict(t.user_attrs["config"])
            floors += timer.floor(cfg, t.user_attrs["samples"], t.user_attrs["steps"], ours=False)
            trial_walls += t.user_attrs.get("wall_time_s", 0.0)
    loop = report["wall_time_s"]
    row = {
        "trials": len(trials),
        "process_wall_s": wall,
        "search_loop_wall_s": loop,
        "sum_trial_floors_paper_s": floors,
        "sum_trial_wall_s": trial_walls,
        "ratio_process_to_floors": wall / floors,
        "ratio_loop_to_floors": loop / floors,
        "orchestration_per_trial_ms": 1000 * (loop - trial_walls) / max(1, len(trials)),
    }
    print_table(
        f"whole `tfg-search search --task {args.task} --target {args.target}` (defaults)",
        list(row),
        [[row[k] for k in row]],
    )
    return row


def bench_batching(args: argparse.Namespace, timer: PassTimer, task: Any) -> list[dict[str, Any]]:
    """A round of candidates sampled as one batch against one after another (sampling only)."""
    from tfg_search.guidance.sampler import guided_sample_many

    space = task.default_space
    base = TFGConfig(
        rho=space["rho"][0], mu=space["mu"][0], gamma=space["gamma"][0], n_iter=4, clip_x0=task.clip_x0
    )
    configs = [
        base.replace(rho=base.rho * 2**k, mu=base.mu * 2 ** (k % 3)) for k in range(max(args.batch_sizes))
    ]
    shape = (args.samples, *task.sample_shape)
    rows, out = [], []
    for k in args.batch_sizes:
        cands = configs[:k]

        def one_by_one(cands: list[TFGConfig] = cands) -> None:
            for cfg in cands:
                timer.sample(cfg, shape, args.steps)

        def batched(cands: list[TFGConfig] = cands) -> None:
            gens = [torch.Generator().manual_seed(0) for _ in cands]
            guided_sample_many(
                timer.model, timer.scheduler, timer.log_f, cands, shape, gens, args.steps, device=timer.device
            )

        t1 = _timeit(one_by_one, max(1, args.repeats // 2))
        tb = _timeit(batched, max(1, args.repeats // 2))
        rows.append([k, k * args.samples, t1, tb, t1 / tb])
        out.append(
            {
                "candidates": k,
                "batch_samples": k * args.samples,
                "one_by_one_s": t1,
                "batched_s": tb,
                "speedup": t1 / tb,
            }
        )
    print_table(
        f"{args.task}: a round of k candidates x {args.samples} samples, {args.steps} steps",
        ["k", "batch samples", "one by one (s)", "batched (s)", "speed-up"],
        rows,
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="digits")
    parser.add_argument("--target", default="3")
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--search", action="store_true", help="also time a whole default CLI search")
    parser.add_argument("--batching", action="store_true", help="also time rounds batched vs one by one")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2, 3, 6])
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/results/)")
    args = parser.parse_args()
    started = time.perf_counter()
    result = bench_trials(args)
    timer = result.pop("timer")
    if args.batching:
        result["batching"] = bench_batching(args, timer, get_task(args.task))
    if args.search:
        result["search"] = bench_search(args, timer)
    result["args"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    result["benchmark_wall_s"] = time.perf_counter() - started
    print(f"wrote {write_json('step_cost', result, args.out)}")


if __name__ == "__main__":
    main()

"""How close a guided trial runs to its compute floor, how much memory it takes, on a pixel and a latent task.

The floor of a trial is the model passes it cannot avoid (docs/algorithm.md, sections 2 and 7): per
step, n_recur x (denoiser forward, + backward when rho > 0) plus n_recur x M x (1[rho > 0] + n_iter x
1[mu > 0]) predictor forward+backward passes, each timed here in isolation on the task's own
models. This implementation needs one predictor pass fewer per round when rho and mu are both on
(the variance gradient at x0 is the first mean step): "floor (ours)" counts that, "floor (paper)"
does not. A latent task (``shapes-latent``: a colour-conditional UNet with classifier-free guidance
and a VAE) times its denoiser call with both CFG branches, its predictor pass as a decoder forward +
backward + the guide, with the full decoder or with gradient checkpointing, and one decode of every
kept sample at the end.

Peak memory of each configuration: one short guided run (``--memory-steps``; each step frees the
previous step's graph, so the peak does not grow with the steps) after a warm-up, measured as the
growth over the loaded models: on CPU of the process's peak RSS (Linux VmHWM, reset before the run, in
a fresh worker process per task whose allocator returns freed blocks at once), on CUDA of
``torch.cuda.max_memory_allocated`` (reset before the run). Set against the task's own estimate
``Task.batch_bytes`` less its weights (the models are loaded before the run): the ratio says how
well the bad-input checks' estimate predicts the peak.

``--dtype float16|bfloat16`` casts the denoiser and the VAE only; the sampler, the guide and the
guidance arithmetic stay float32 (docs/algorithm.md, section 7).

Run:
    python benchmarks/step_cost.py                    # digits 3 (64 samples, 25 steps) + shapes-latent
                                                      # cyan-triangle (32 samples, 10 steps), CPU
    python benchmarks/step_cost.py --threads 1        # the same on a CPU shared with other jobs
    python benchmarks/step_cost.py --search           # also a whole default CLI search
    python benchmarks/step_cost.py --device cuda --dtype float16 --memory-samples 256

Prints tables and writes benchmarks/results/step_cost.json (or ``--out``).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import RESULTS, median, print_table, write_json

from tasks import get_task
from tfg_search import TFGConfig
from tfg_search.guidance.conditioning import Denoiser
from tfg_search.guidance.latent import sample_and_decode
from tfg_search.guidance.sampler import ddim_chain, pass_counts

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
MIB = 2**20
CFG_SCALE = 3.0
"""The CFG weight of the latent configurations (the shapes-latent trainer's quality scale)."""


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timeit(
    fn: Callable[[], None], repeats: int, device: torch.device, warm_up: Callable[[], None] | None = None
) -> float:
    """Median wall time of ``fn`` over ``repeats`` runs after one warm-up run of ``warm_up`` (default
    ``fn`` itself), CUDA synchronised."""
    (warm_up or fn)()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return median(times)


# -- models -----------------------------------------------------------------------------------------
@contextlib.contextmanager
def _quiet_diffusers() -> Iterator[None]:
    """Silence diffusers' warning on casting a model with ``.to(dtype)`` (it lists no module to keep)."""
    from diffusers.utils import logging as dlogging

    level = dlogging.get_verbosity()
    dlogging.set_verbosity_error()
    try:
        yield
    finally:
        dlogging.set_verbosity(level)


@dataclass
class Models:
    """A task's models for one target on one device, the denoiser and VAE in ``dtype``."""

    model: Any
    scheduler: Any
    log_f: Any
    conditioning: Any
    decoder: Any
    sample_shape: tuple[int, ...]
    device: torch.device

    @classmethod
    def load(cls, task: Any, target: str, device: torch.device, dtype: torch.dtype) -> Models:
        model, scheduler = task.diffusion(device)
        decoder = task.decoder(device)
        with _quiet_diffusers():
            model.to(dtype)  # the task caches its models per device: the cast holds for the process
            if decoder is not None:
                decoder.vae.to(dtype)
        return cls(
            model,
            scheduler,
            task.log_f(target, device),
            task.conditioning(target, device),
            decoder,
            tuple(task.sample_shape),
            device,
        )

    def sample(self, cfg: TFGConfig, n: int, steps: int) -> None:
        """One guided run of ``cfg`` (seed 0, decoded for a latent task): what a trial samples."""
        sample_and_decode(
            self.model,
            self.scheduler,
            self.log_f,
            [cfg],
            (n, *self.sample_shape),
            [torch.Generator().manual_seed(0)],
            steps,
            self.device,
            conditioning=self.conditioning,
            decoder=self.decoder,
        )


def untrained_latent_weights(folder: Path) -> Path:
    """A ``shapes-latent`` weights folder of randomly initialised models of the task's architecture
    (its configs in :mod:`tasks.nets`), for timing and memory before the task is trained: the cost
    of a pass does not depend on the weights' values."""
    from diffusers import AutoencoderKL, UNet2DModel

    from tasks.nets import SHAPES_LATENT_UNET_CONFIG, SHAPES_VAE_CONFIG, make_scheduler

    torch.manual_seed(0)
    UNet2DModel(**SHAPES_LATENT_UNET_CONFIG).save_pretrained(folder / "unet")
    AutoencoderKL(**SHAPES_VAE_CONFIG).save_pretrained(folder / "vae")
    make_scheduler().save_pretrained(folder / "scheduler")
    return folder


@contextlib.contextmanager
def latent_task_options(task: str) -> Iterator[tuple[dict[str, str], str]]:
    """(task options, what weights they give): the shipped weights when the task has them, else
    untrained ones of the same architecture in a temporary folder (``shapes-latent`` only)."""
    from tasks.weights import weights_dir

    if task != "shapes-latent" or (weights_dir(task) / "unet" / "config.json").is_file():
        yield {}, "shipped"
        return
    with tempfile.TemporaryDirectory(prefix="tfg-untrained-") as tmp:
        untrained_latent_weights(Path(tmp))
        yield {"weights": tmp}, f"untrained (no trained weights in tasks/weights/{task} yet)"


# -- passes and floors ------------------------------------------------------------------------------
class PassTimer:
    """Median times of single passes of a task's denoiser (with its CFG branches), guide and decoder:
    each the median of 5 timings of as many calls as fill about ``target_s`` seconds."""

    def __init__(self, models: Models, target_s: float = 0.5) -> None:
        self.models = models
        self.target_s = target_s
        self.t = ddim_chain(models.scheduler, 50, models.device).timesteps[25]
        self._cache: dict[tuple[str, int, float], float] = {}

    def variant(self, models: Models) -> PassTimer:
        """A timer of ``models`` that differ only in their log f (e.g. a checkpointing decoder): the
        denoiser's times are kept, the guide's measured again."""
        other = PassTimer(models, self.target_s)
        other._cache = {k: v for k, v in self._cache.items() if k[0] in ("denoiser", "denoiser_grad")}
        return other

    def _pass(self, kind: str, batch: int, scale: float) -> Callable[[], None]:
        m = self.models
        x = torch.randn(batch, *m.sample_shape, device=m.device)
        call = Denoiser(m.model, m.conditioning, [scale], batch, m.device)

        def denoiser() -> None:
            with torch.no_grad():
                call(x, self.t)

        def denoiser_grad() -> None:
            xi = x.detach().requires_grad_(True)
            torch.autograd.grad(call(xi, self.t).sum(), xi)

        def log_f() -> None:
            xi = x.detach().requires_grad_(True)
            torch.autograd.grad(m.log_f(xi).sum(), xi)

        def decode() -> None:
            with torch.no_grad():
                m.decoder(x)

        return {"denoiser": denoiser, "denoiser_grad": denoiser_grad, "log_f": log_f, "decode": decode}[kind]

    def time(self, kind: str, batch: int, scale: float = 1.0) -> float:
        """Seconds of one pass: ``denoiser`` (no graph), ``denoiser_grad`` (forward + backward to x),
        ``log_f`` (forward + backward: the guide, through the decoder on latents) or ``decode``."""
        key = (kind, batch, scale if kind.startswith("denoiser") else 1.0)
        if key not in self._cache:
            once = self._pass(kind, batch, scale)
            device = self.models.device
            single = _timeit(once, 1, device)
            calls = max(1, min(50, round(self.target_s / max(single, 1e-6))))

            def repeated() -> None:
                for _ in range(calls):
                    once()

            self._cache[key] = _timeit(repeated, 5, device) / calls
        return self._cache[key]

    def floor(self, cfg: TFGConfig, batch: int, steps: int, ours: bool) -> float:
        counts = pass_counts(cfg, steps, this_implementation=ours)
        w = cfg.guidance_scale
        unet = counts.unet_forward * self.time("denoiser", batch, w)
        unet += counts.unet_forward_backward * self.time("denoiser_grad", batch, w)
        # M Monte-Carlo copies run as one predictor call on B*M samples: count that batched cost.
        pred = counts.predictor_forward_backward / cfg.n_mc * self.time("log_f", batch * cfg.n_mc)
        decode = self.time("decode", batch) if self.models.decoder is not None else 0.0
        return unet + pred + decode

    def passes(self) -> dict[str, float]:
        return {f"{k}{'@cfg' + str(w) if w != 1 else ''}@{b}": v for (k, b, w), v in self._cache.items()}


# -- memory -----------------------------------------------------------------------------------------
def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise OSError(f"no {field} in /proc/self/status")


def _release_freed_memory() -> None:
    """Freed blocks back to the OS (glibc), so that the next run's peak starts from the live data."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _return_blocks_at_once() -> None:
    """glibc: blocks of 64 KiB and more are mapped and unmapped (a fixed threshold, not one that
    grows as blocks are freed), so a freed tensor leaves the RSS and one run's peak does not hide
    in memory kept from the last. Used in the memory worker only (it slows allocation)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 64 * 1024)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 128 * 1024)  # M_TRIM_THRESHOLD


def peak_growth(fn: Callable[[], None], device: torch.device) -> dict[str, int]:
    """Bytes by which ``fn`` raises the peak over what is allocated before it: CUDA max allocated
    (and reserved), or the process's peak RSS (VmHWM reset through /proc/self/clear_refs)."""
    if device.type == "cuda":
        _sync(device)
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        allocated, reserved = torch.cuda.memory_allocated(device), torch.cuda.memory_reserved(device)
        fn()
        _sync(device)
        return {
            "peak_growth_bytes": torch.cuda.max_memory_allocated(device) - allocated,
            "reserved_growth_bytes": torch.cuda.max_memory_reserved(device) - reserved,
        }
    _release_freed_memory()
    Path("/proc/self/clear_refs").write_text("5")  # peak RSS := current RSS (Linux >= 4.0)
    base = _status_kib("VmRSS")
    fn()
    return {"peak_growth_bytes": 1024 * (_status_kib("VmHWM") - base)}


def measure_memory(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Peak memory of each row of ``spec`` (task, options, target, config, samples) in this process."""
    device, dtype, steps = torch.device(spec["device"]), DTYPES[spec["dtype"]], spec["steps"]
    torch.set_num_threads(spec["threads"])
    out = []
    for row in spec["rows"]:
        task = get_task(row["task"], row["options"])
        models = Models.load(task, row["target"], device, dtype)
        cfg, n = TFGConfig.from_dict(row["config"]), row["samples"]
        estimate, weights = task.batch_bytes(n, cfg, steps), task.batch_bytes(0, cfg, steps)
        models.sample(cfg, n, steps)  # warm-up: one-off allocations are not the run's peak
        grown = peak_growth(lambda models=models, cfg=cfg, n=n: models.sample(cfg, n, steps), device)
        out.append(
            {
                "name": row["name"],
                "samples": n,
                "steps": steps,
                **grown,
                "estimate_bytes": estimate,
                "estimate_weights_bytes": weights,
                "ratio_growth_to_estimate": grown["peak_growth_bytes"] / max(1, estimate - weights),
            }
        )
    return out


def memory_rows(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """:func:`measure_memory` in this process on CUDA, in a fresh worker process on the CPU."""
    if torch.device(spec["device"]).type == "cuda":
        return measure_memory(spec)
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--memory-worker"],
        input=json.dumps(spec),
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"memory worker failed: {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _memory_spec(args: argparse.Namespace, rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "device": args.device,
        "dtype": args.dtype,
        "steps": args.memory_steps,
        "threads": torch.get_num_threads(),
        "rows": rows,
    }


def _mib(value: int | None) -> float | None:
    return None if value is None else value / MIB


# -- the benchmarks ---------------------------------------------------------------------------------
def configurations(task: Any) -> dict[str, TFGConfig]:
    """TFG defaults, its variations and each preset, at strengths from the task's lattice."""
    space = task.default_space
    rho, mu, gamma = (space[k].value(2) for k in ("rho", "mu", "gamma"))
    strength = task.default_strength_space.value(2)
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


def latent_configurations(task: Any) -> dict[str, tuple[TFGConfig, bool]]:
    """A latent task's (config, gradient checkpointing): CFG alone, TFG alone, and CFG + TFG with
    the full decoder and with checkpointing (n_iter 1: one predictor pass per step, the task's
    measured default; strengths from its lattice)."""
    space = task.default_space
    rho, mu, gamma = (space[k].value(2) for k in ("rho", "mu", "gamma"))
    tfg = TFGConfig(rho=rho, mu=mu, gamma=gamma, n_iter=1, clip_x0=False)
    with_cfg = tfg.replace(guidance_scale=CFG_SCALE)
    return {
        f"cfg {CFG_SCALE:g} (no tfg)": (TFGConfig(guidance_scale=CFG_SCALE, clip_x0=False), False),
        "tfg (no cfg), full decoder": (tfg, False),
        f"cfg {CFG_SCALE:g} + tfg, full decoder": (with_cfg, False),
        f"cfg {CFG_SCALE:g} + tfg, checkpointing": (with_cfg, True),
    }


def _time_trials(
    timers: dict[bool, PassTimer],
    configs: dict[str, tuple[TFGConfig, bool]],
    n: int,
    steps: int,
    repeats: int,
) -> list[dict[str, Any]]:
    out = []
    for name, (cfg, ckpt) in configs.items():
        timer = timers[ckpt]

        def run(cfg: TFGConfig = cfg, timer: PassTimer = timer, steps: int = steps) -> None:
            timer.models.sample(cfg, n, steps)

        # A 2-step run warms up what a trial calls first (its shapes, the noise draws); every step
        # after it costs the same.
        trial = _timeit(run, repeats, timer.models.device, warm_up=lambda run=run: run(steps=min(steps, 2)))
        paper = timer.floor(cfg, n, steps, ours=False)
        ours = timer.floor(cfg, n, steps, ours=True)
        out.append(
            {
                "config": name,
                "tfg_config": cfg.to_dict(),
                "checkpointing": ckpt,
                "floor_paper_s": paper,
                "floor_ours_s": ours,
                "trial_s": trial,
                "ratio_paper_floor": trial / paper,
                "ratio_our_floor": trial / ours,
            }
        )
    return out


def _add_memory(
    args: argparse.Namespace,
    rows: list[dict[str, Any]],
    task: str,
    options: dict[str, str],
    target: str,
    samples: int,
) -> None:
    if args.no_memory:
        return
    spec_rows = [
        {
            "name": r["config"],
            "task": task,
            "options": {**options, **({"checkpointing": "true"} if r["checkpointing"] else {})},
            "target": target,
            "config": r["tfg_config"],
            "samples": args.memory_samples or samples,
        }
        for r in rows
    ]
    for row, mem in zip(rows, memory_rows(_memory_spec(args, spec_rows)), strict=True):
        row["memory"] = mem


def _print_trials(title: str, rows: list[dict[str, Any]]) -> None:
    columns = ["configuration", "floor paper (s)", "floor ours (s)", "trial (s)", "trial/floor paper"]
    columns += ["trial/floor ours", "peak growth (MiB)", "estimate (MiB)", "growth/estimate"]
    table = []
    for r in rows:
        mem = r.get("memory", {})
        grown = _mib(mem.get("peak_growth_bytes"))
        est = _mib(mem["estimate_bytes"] - mem["estimate_weights_bytes"]) if mem else None
        table.append(
            [
                r["config"],
                *(r[k] for k in ("floor_paper_s", "floor_ours_s", "trial_s")),
                *(r[k] for k in ("ratio_paper_floor", "ratio_our_floor")),
                *(grown, est, mem.get("ratio_growth_to_estimate")),
            ]
        )
    print_table(title, columns, table)


def bench_trials(args: argparse.Namespace) -> dict[str, Any]:
    task = get_task(args.task)
    device = torch.device(args.device)
    timer = PassTimer(Models.load(task, args.target, device, DTYPES[args.dtype]), args.pass_seconds)
    configs = {name: (cfg, False) for name, cfg in configurations(task).items()}
    rows = _time_trials({False: timer}, configs, args.samples, args.steps, args.repeats)
    _add_memory(args, rows, args.task, {}, args.target, args.samples)
    for r in rows:
        del r["checkpointing"]  # a pixel task has no decoder
    _print_trials(
        f"{args.task} trial cost vs floor and memory ({args.samples} samples, {args.steps} steps, "
        f"{device}, {args.dtype})",
        rows,
    )
    passes = timer.passes()
    print_table("single passes (s)", ["pass@batch", "seconds"], [[k, v] for k, v in passes.items()])
    return {"trials": rows, "passes_s": passes, "timer": timer}


def bench_latent(args: argparse.Namespace) -> dict[str, Any]:
    """The latent task: CFG's two branches, the decoder in every predictor pass, full decoder
    against gradient checkpointing, each configuration's time, floor and peak memory."""
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    with latent_task_options(args.latent_task) as (options, weights):
        full = get_task(args.latent_task, options)
        ckpt = get_task(args.latent_task, {**options, "checkpointing": "true"})
        timer = PassTimer(Models.load(full, args.latent_target, device, dtype), args.pass_seconds)
        timers = {False: timer, True: timer.variant(Models.load(ckpt, args.latent_target, device, dtype))}
        n, steps = args.latent_samples, args.latent_steps
        rows = _time_trials(timers, latent_configurations(full), n, steps, args.repeats)
        _add_memory(args, rows, args.latent_task, options, args.latent_target, n)
    _print_trials(
        f"{args.latent_task} {args.latent_target} trial cost vs floor and memory ({n} samples, "
        f"{steps} steps, {device}, {args.dtype}; weights {weights.split(' ')[0]})",
        rows,
    )
    passes = {**timer.passes(), **{f"{k} (checkpointing)": v for k, v in timers[True].passes().items()}}
    passes = {k: v for k, v in passes.items() if not k.endswith("(checkpointing)") or k.startswith("log_f")}
    print_table(
        f"{args.latent_task} single passes (s)",
        ["pass@batch", "seconds"],
        [[k, v] for k, v in passes.items()],
    )
    return {
        "task": args.latent_task,
        "target": args.latent_target,
        "weights": weights,
        "samples": n,
        "steps": steps,
        "trials": rows,
        "passes_s": passes,
    }


def bench_search(args: argparse.Namespace, timer: PassTimer) -> dict[str, Any]:
    """A whole default search from the CLI (models loaded once) against the sum of its trials' floors."""
    import optuna

    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        cmd = [sys.executable, "-m", "tfg_search", "search", "--task", args.task, "--target", args.target]
        cmd += ["--storage", url, "--quiet", "--json", "--out-dir", f"{tmp}/out", "--device", args.device]
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
        rho=space["rho"].init, mu=space["mu"].init, gamma=space["gamma"].init, n_iter=4, clip_x0=task.clip_x0
    )
    configs = [
        base.replace(rho=base.rho * 2**k, mu=base.mu * 2 ** (k % 3)) for k in range(max(args.batch_sizes))
    ]
    m = timer.models
    rows, out = [], []
    for k in args.batch_sizes:
        cands = configs[:k]

        def one_by_one(cands: list[TFGConfig] = cands) -> None:
            for cfg in cands:
                m.sample(cfg, args.samples, args.steps)

        def batched(cands: list[TFGConfig] = cands) -> None:
            gens = [torch.Generator().manual_seed(0) for _ in cands]
            shape = (args.samples, *m.sample_shape)
            guided_sample_many(m.model, m.scheduler, m.log_f, cands, shape, gens, args.steps, device=m.device)

        t1 = _timeit(one_by_one, max(1, args.repeats // 2), m.device)
        tb = _timeit(batched, max(1, args.repeats // 2), m.device)
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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="digits")
    parser.add_argument("--target", default="3")
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--latent-task", default="shapes-latent", help="a latent task, or none to skip it")
    parser.add_argument("--latent-target", default="cyan-triangle")
    parser.add_argument("--latent-samples", type=int, default=32)
    parser.add_argument("--latent-steps", type=int, default=10)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32", help="denoiser and VAE dtype")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument(
        "--pass-seconds", type=float, default=0.5, help="each of a pass's 5 timings lasts about this long"
    )
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory runs")
    parser.add_argument(
        "--memory-samples", type=int, default=None, help="batch of the memory runs (default: each task's)"
    )
    parser.add_argument("--memory-steps", type=int, default=2)
    parser.add_argument("--search", action="store_true", help="also time a whole default CLI search")
    parser.add_argument("--batching", action="store_true", help="also time rounds batched vs one by one")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2, 3, 6])
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/results/)")
    parser.add_argument("--memory-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: this torch has no CUDA device; use --device cpu")
    return args


def main() -> None:
    args = parse_args()
    if args.memory_worker:  # one task's memory runs, in a fresh process (see memory_rows)
        _return_blocks_at_once()
        print(json.dumps(measure_memory(json.load(sys.stdin))))
        return
    # Stopped by SIGTERM (gpu_check.py's budget): unwind, so that temporary weights are removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    if args.threads:  # on a shared CPU, one thread per process avoids OpenMP threads waiting on each other
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    out = args.out or RESULTS / "step_cost.json"
    partial = out.with_name(out.name + ".partial.tmp")  # each section as it ends (a run cut short)
    result: dict[str, Any] = {
        "memory_method": (
            "torch.cuda.max_memory_allocated growth over the loaded models (reset before the run)"
            if torch.device(args.device).type == "cuda"
            else "peak RSS (VmHWM, reset) growth over the loaded models, fresh worker process per task"
        ),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }

    def section(name: str, value: Any) -> None:
        result[name] = value
        write_json("step_cost", {**result, "benchmark_wall_s": time.perf_counter() - started}, partial)

    trials = bench_trials(args)
    timer = trials.pop("timer")
    result["passes_s"] = trials["passes_s"]
    section("trials", trials["trials"])
    if args.latent_task != "none":
        section("latent", bench_latent(args))
    if args.batching:
        section("batching", bench_batching(args, timer, get_task(args.task)))
    if args.search:
        section("search", bench_search(args, timer))
    result["benchmark_wall_s"] = time.perf_counter() - started
    print(f"wrote {write_json('step_cost', result, out)}")
    partial.unlink(missing_ok=True)


if __name__ == "__main__":
    main()

"""Per-trial orchestration overhead of the coordinator (local and Ray executors, SQLite and PostgreSQL),
and (``--digits``) the speed-up of a digits round on 2 Ray actors over the local executor.

Overhead: the real coordinator (:class:`tfg_search.run.coordinator.Coordinator` over
:class:`tfg_search.run.loop.SearchLoop`) runs a whole beam search of about 200 trials (gmm2d
settings, 3 parameters on lattices of factor 1.1, top-k 8, 14 rounds) whose trials cost nothing: a
trial function returns metrics computed from the configuration at once (so the beam keeps moving, as
a real search does), and everything measured is orchestration. Per trial it adds up:

* ``plan``: ``SearchLoop.plan`` (the sampler reading the study and planning the round), shared by the
  round's trials;
* ``ask``: ``SearchLoop._ask_search``: the trial made (``optuna_internals.new_trial``: ``study.ask``
  less its look for enqueued trials), in which the sampler claims a candidate (``claim``: one
  attribute write and one read of the new and running trials), + 3 suggests + the spec;
* ``executor``: the round's ``executor.map`` wall time shared by its trials, minus the tells done
  while it ran;
* ``tell``: ``SearchLoop.tell``: the trial's one record attribute + ``study.tell`` (in which the
  sampler's ``after_trial`` runs: ``after``).

The median over the study's trials is the figure the targets are about (<= 20 ms per trial on SQLite
in WAL mode, which tfg-search's storage sets, and <= 40 ms on PostgreSQL). Two reference rows say
where the milliseconds go: ``optuna-floor`` (``study.ask`` / 3 suggests / 1 user attr / tell in
rounds of the same sizes with Optuna's ``RandomSampler``: what Optuna's ask-and-tell itself costs,
whatever the sampler) and ``claim-writes`` (a claim written as three system attributes, as before
the ``TFGBeamSampler:claim`` attribute, against one JSON attribute).
PostgreSQL is a private throwaway server started as tests/helpers/pg.py does (fsync off, as in the tests).
The Ray rows use 2 warm actors (``cpus_per_trial=1``).

Digits round (``--digits``): 6 candidates x 64 samples, task ``digits``, target ``3``, default steps;
local sequential and 2 Ray actors, each timed warm over ``--repeats`` rounds (median); ``--batched``
adds ``LocalExecutor(batch_size=6)``. Without ``--digits`` the JSON keeps the digits figures of the
run that last measured them (marked as such).

Run from the repository root::

    OMP_NUM_THREADS=1 python benchmarks/executor_overhead.py   # writes benchmarks/results/...json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import optuna  # noqa: E402

from searchers import Lattice, optuna_internals  # noqa: E402
from tfg_search.run.coordinator import Coordinator, open_search_study  # noqa: E402
from tfg_search.run.executors import Executor, LocalExecutor  # noqa: E402
from tfg_search.run.settings import SearchSettings  # noqa: E402
from tfg_search.store.studies import open_storage  # noqa: E402
from tfg_search.trial import TrialOutcome, TrialSpec  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "executor_overhead.json"
TARGETS_MS = {"sqlite": 20.0, "postgresql": 40.0}


def study_settings(rounds: int = 14, top_k: int = 8, factor: float = 1.1) -> SearchSettings:
    """gmm2d settings whose beam runs about 200 trials with :func:`instant_trial` (14 rounds)."""
    return SearchSettings(
        task="gmm2d",
        target="3",
        samples=16,
        rounds=rounds,
        top_k=top_k,
        final_top=1,
        search="beam",
        space={
            "rho": Lattice(0.25, factor, 64.0),
            "mu": Lattice(0.25, factor, 64.0),
            "gamma": Lattice(0.001, factor, 1.0),
        },
    )


def instant_trial(spec: TrialSpec) -> TrialOutcome:
    """A trial that costs nothing: metrics from the configuration (larger strengths score higher, so
    the beam keeps climbing the lattice instead of stopping), for gmm2d's metric names."""
    c = spec.config
    value = math.log(c.rho) + math.log(c.mu) + 0.5 * math.log(c.gamma)
    metrics = {"validity": value, "fidelity": value, "sw": -value}
    return TrialOutcome(spec.number, metrics, None, 0.0, "cpu", "bench")


class InstantLocal(Executor):
    """The local executor's dispatch (a call in this process) around :func:`instant_trial`."""

    name = "local"

    def map(self, specs: Sequence[TrialSpec]) -> Iterator[TrialOutcome]:
        for spec in specs:
            yield instant_trial(spec)


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def _timed(fn: Callable[..., Any], sink: list[float]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            sink.append(time.perf_counter() - start)

    return wrapper


def coordinator_overhead(storage: str, executor: Executor, study_name: str) -> dict[str, Any]:
    """Run a whole instant-trial beam search and split each trial's orchestration time."""
    loop, _ = open_search_study(study_settings(), storage, study_name)
    coord = Coordinator(loop, executor)
    sampler = loop.strategy.sampler
    asks: list[float] = []
    tells: list[float] = []
    plans: list[float] = []
    claims: list[float] = []
    afters: list[float] = []
    rounds: list[tuple[int, float, float]] = []  # (trials, plan s, map s)
    loop._ask_search = _timed(loop._ask_search, asks)  # type: ignore[method-assign]
    loop.tell = _timed(loop.tell, tells)  # type: ignore[method-assign]
    loop.plan = _timed(loop.plan, plans)  # type: ignore[method-assign]
    sampler.before_trial = _timed(sampler.before_trial, claims)  # type: ignore[method-assign]
    sampler.after_trial = _timed(sampler.after_trial, afters)  # type: ignore[method-assign]
    real_map = executor.map

    def timed_map(batch: Sequence[TrialSpec]) -> Iterator[TrialOutcome]:
        start = time.perf_counter()
        n_tells = len(tells)
        yield from real_map(batch)
        wall = time.perf_counter() - start - sum(tells[n_tells:])  # minus the tells done in between
        rounds.append((len(batch), plans[-1], wall))

    coord.executor = type("Timed", (), {"map": staticmethod(timed_map)})()  # type: ignore[assignment]
    start = time.perf_counter()
    while loop.phase == "search":  # the search's rounds (its final re-runs are not timed here)
        batch = loop.wave()
        if batch:
            coord._run_batch(batch)
    total = time.perf_counter() - start
    per_trial: list[float] = []
    parts: dict[str, list[float]] = {"plan": [], "ask": [], "executor": [], "tell": []}
    i = 0
    for n, plan_s, map_s in rounds:
        for _ in range(n):
            row = {"plan": plan_s / n, "ask": asks[i], "executor": map_s / n, "tell": tells[i]}
            for key, value in row.items():
                parts[key].append(value)
            per_trial.append(sum(row.values()))
            i += 1
    n_trials = len(per_trial)
    return {
        "trials": n_trials,
        "rounds": len(rounds),
        "round_sizes": [n for n, _, _ in rounds],
        "median_ms": 1000 * statistics.median(per_trial),
        "p95_ms": 1000 * pct(per_trial, 0.95),
        "mean_ms": 1000 * total / n_trials,
        "parts_median_ms": {k: 1000 * statistics.median(v) for k, v in parts.items()},
        "sampler_median_ms": {
            "claim (before_trial, in ask)": 1000 * statistics.median(claims),
            "after_trial (in tell)": 1000 * statistics.median(afters),
        },
    }


def optuna_floor(storage: str, round_sizes: Sequence[int]) -> dict[str, Any]:
    """Optuna's own cost of the same trials: ask, 3 suggests, one record attr, tell, in rounds of
    ``round_sizes`` (asked together, then told), with a RandomSampler (no claims, no round barrier)."""
    rdb = open_storage(storage, create=True)
    study = optuna.create_study(
        storage=rdb, study_name="floor", direction="maximize", sampler=optuna.samplers.RandomSampler(0)
    )
    body = {"role": "search", "round": 0, "config": {"rho": 1.0, "mu": 1.0, "gamma": 0.1}, "samples": 16}
    body |= {"seed": 0, "steps": 50, "metrics": {"validity": 0.5}, "wall_time_s": 0.0, "device": "cpu"}
    per_trial: list[float] = []
    for n in round_sizes:
        start = time.perf_counter()
        trials = []
        for _ in range(n):
            trial = study.ask()
            for name, low, high in (("rho", 0.25, 64.0), ("mu", 0.25, 64.0), ("gamma", 0.001, 1.0)):
                trial.suggest_float(name, low, high, log=True)
            trials.append(trial)
        for trial in trials:
            trial.set_user_attr("tfg_search:trial", body)
            study.tell(trial, 0.5)
        per_trial += [(time.perf_counter() - start) / n] * n
    return {"trials": len(per_trial), "median_ms": 1000 * statistics.median(per_trial)}


def claim_writes(storage: str, repeats: int = 40) -> dict[str, float]:
    """Median ms of a claim's three system-attribute writes, against one JSON attribute."""
    rdb = open_storage(storage, create=True)
    study = optuna.create_study(storage=rdb, study_name="claim-writes")
    store = optuna_internals.storage(study)
    trial_id = optuna_internals.trial_id(study.ask())
    three, one = [], []
    for i in range(repeats):
        start = time.perf_counter()
        store.set_trial_system_attr(trial_id, "TFGBeamSampler:space", '{"space": "x"}')
        store.set_trial_system_attr(trial_id, "TFGBeamSampler:round", i)
        store.set_trial_system_attr(trial_id, "TFGBeamSampler:key", [i, 0, 0])
        three.append(time.perf_counter() - start)
        start = time.perf_counter()
        store.set_trial_system_attr(
            trial_id, "TFGBeamSampler:claim", {"space": "x", "round": i, "key": [i, 0]}
        )
        one.append(time.perf_counter() - start)
    return {
        "three_attrs_ms": 1000 * statistics.median(three),
        "one_json_attr_ms": 1000 * statistics.median(one),
    }


def digits_weights() -> tuple[dict[str, str] | None, str]:
    """Task options for the digits task, and what weights they are.

    The shipped weights when present. Without a trained UNet (``tfg-search train digits`` not run yet) a
    stand-in folder gets the shipped guiding CNNs and a randomly initialised UNet of the shipped
    architecture: a trial then costs exactly what it costs with trained weights (same network, same
    steps), only its metrics mean nothing.
    """
    import torch as th
    from diffusers import UNet2DModel

    from tasks.training import DIGITS_UNET_CONFIG, SCHEDULER_CONFIG
    from tasks.weights import save_weights, weights_dir

    shipped = weights_dir("digits")
    if (shipped / "unet.safetensors").is_file():
        return None, "shipped (trained)"
    folder = Path(tempfile.mkdtemp(prefix="tfg-bench-digits-"))
    for name in ("classifier", "thickness"):
        for ext in ("safetensors", "json"):
            shutil.copy(shipped / f"{name}.{ext}", folder / f"{name}.{ext}")
    th.manual_seed(0)
    config = {k: list(v) if isinstance(v, tuple) else v for k, v in DIGITS_UNET_CONFIG.items()}
    unet = UNet2DModel(**config)
    save_weights(
        folder, "unet", unet.state_dict(), {"unet_config": config, "scheduler_config": SCHEDULER_CONFIG}
    )
    return {
        "weights": str(folder)
    }, "stand-in: shipped CNNs + randomly initialised UNet of the shipped architecture"


def digits_specs(options: dict[str, str] | None, n: int = 6, samples: int = 64) -> list[TrialSpec]:
    """``n`` configurations of the default digits lattice (start point, neighbours, then further out)."""
    from tasks import get_task

    task = get_task("digits", options)
    resolved = SearchSettings(task="digits", target="3", samples=samples, task_options=options).resolve(task)
    lattices = resolved.lattices()
    names = list(lattices)
    points = [dict.fromkeys(names, 0)]
    for step in (1, 2):
        for name in names:
            points.append({**dict.fromkeys(names, 0), name: step})
    specs = []
    for number, exps in enumerate(points[:n]):
        params = {k: lattices[k].init * lattices[k].factor ** exps[k] for k in names}
        config = resolved.config(params)
        spec = TrialSpec(number, "digits", "3", config, samples, resolved.seed, resolved.steps, "cpu")
        specs.append(dataclasses.replace(spec, task_options=options))
    return specs


def time_round(executor: Executor, specs: list[TrialSpec], repeats: int) -> dict[str, Any]:
    walls, trial_walls = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        outcomes = list(executor.map(specs))
        walls.append(time.perf_counter() - start)
        assert all(o.ok for o in outcomes), [o.error for o in outcomes if not o.ok]
        trial_walls += [o.wall_time_s for o in outcomes]
    return {"round_s": statistics.median(walls), "rounds_s": walls, "trial_s": statistics.median(trial_walls)}


def digits_round(repeats: int, batched: bool) -> dict[str, Any]:
    """Time a digits round on the local executor and on 2 Ray actors (models loaded)."""
    from tfg_search.run.executors.ray_pool import RayExecutor

    options, weights = digits_weights()
    specs = digits_specs(options)
    local = LocalExecutor(batch_size=1)
    list(local.map(specs[:1]))  # load the models in this process
    digits: dict[str, Any] = {"local": time_round(local, specs, repeats)}
    print(f"digits local {digits['local']['round_s']:.2f} s", flush=True)
    if batched:
        digits["local_batched"] = time_round(LocalExecutor(batch_size=len(specs)), specs, repeats)
        print(f"digits local batched {digits['local_batched']['round_s']:.2f} s", flush=True)
    start = time.perf_counter()
    with RayExecutor(num_workers=2, cpus_per_trial=1) as pool:
        list(pool.map(specs[:2]))  # both actors start and load their models
        digits["ray_warmup_s"] = time.perf_counter() - start
        digits["ray"] = time_round(pool, specs, repeats)
    print(f"digits ray (2 actors) {digits['ray']['round_s']:.2f} s", flush=True)
    if options:
        shutil.rmtree(options["weights"], ignore_errors=True)
    return {
        "digits_round": digits,
        "digits_weights": weights,
        "speedup_ray_over_local": digits["local"]["round_s"] / digits["ray"]["round_s"],
        "speedup_ray_over_local_batched": (
            digits["local_batched"]["round_s"] / digits["ray"]["round_s"] if batched else None
        ),
        "digits_trial_ms": 1000 * digits["local"]["trial_s"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--digits", action="store_true", help="also time a digits round (minutes)")
    parser.add_argument("--repeats", type=int, default=1, help="warm digits rounds per executor")
    parser.add_argument("--batched", action="store_true", help="also time LocalExecutor(batch_size=6)")
    parser.add_argument("--no-postgres", action="store_true", help="skip the PostgreSQL rows")
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray rows")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    began = time.perf_counter()
    load_at_start = os.getloadavg()

    pg = None
    folder = tempfile.mkdtemp(prefix="tfg-bench-")
    storages = {"sqlite": f"sqlite:///{folder}/bench.db"}
    if not args.no_postgres:
        from tests.helpers.pg import PostgresServer

        pg = PostgresServer.start()
        storages["postgresql"] = pg.create_database()
    executors: list[tuple[str, Executor]] = [("local", InstantLocal())]
    ray_pool = None
    if not args.no_ray:
        from tfg_search.run.executors.ray_pool import RayExecutor

        ray_pool = RayExecutor(num_workers=2, cpus_per_trial=1, trial_fn=instant_trial)
        ray_pool.workers_info()  # actors started before timing
        executors.append(("ray", ray_pool))
    overhead: list[dict[str, Any]] = []
    references: list[dict[str, Any]] = []
    try:
        for storage_name, url in storages.items():
            for executor_name, executor in executors:
                row = coordinator_overhead(url, executor, f"bench-{executor_name}")
                row.update(executor=executor_name, storage=storage_name)
                row["target_ms"] = TARGETS_MS[storage_name]
                overhead.append(row)
                print(
                    f"overhead {executor_name:5} {storage_name:10} median {row['median_ms']:.1f} ms "
                    f"({row['trials']} trials)",
                    flush=True,
                )
            floor = optuna_floor(url, overhead[-1]["round_sizes"])
            writes = claim_writes(url)
            references.append({"storage": storage_name, "optuna_floor": floor, "claim_writes": writes})
            print(f"optuna floor {storage_name:10} median {floor['median_ms']:.1f} ms; {writes}", flush=True)
    finally:
        if ray_pool is not None:
            ray_pool.close()
        if pg is not None:
            pg.stop()
        shutil.rmtree(folder, ignore_errors=True)

    previous: dict[str, Any] = {}
    if args.out.exists():
        previous = json.loads(args.out.read_text())
    if args.digits:
        digits = digits_round(args.repeats, args.batched)
        digits["digits_measured"] = "this run"
    else:
        keys = ("digits_round", "digits_weights", "speedup_ray_over_local", "speedup_ray_over_local_batched")
        digits = {k: previous[k] for k in (*keys, "digits_trial_ms") if k in previous}
        if digits:
            digits["digits_measured"] = "an earlier run (not re-run: no --digits)"

    import ray
    import torch

    result = {
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "ray": ray.__version__,
            "optuna": optuna.__version__,
            "load_average_at_start": load_at_start,
            "load_average_at_end": os.getloadavg(),
        },
        "study": {
            "settings": "gmm2d, rho/mu/gamma lattices of factor 1.1, top_k 8, rounds 14",
            "trial": "instant",
        },
        "overhead": overhead,
        "references": references,
        **digits,
        "benchmark_s": time.perf_counter() - began,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")

    print()
    print(
        f"{'executor':9} {'storage':11} {'trials':>6} {'median ms':>10} {'p95 ms':>8} {'mean ms':>8} "
        f"{'target':>7}"
    )
    for row in overhead:
        print(
            f"{row['executor']:9} {row['storage']:11} {row['trials']:>6} {row['median_ms']:>10.1f} "
            f"{row['p95_ms']:>8.1f} {row['mean_ms']:>8.1f} {row['target_ms']:>7.0f}"
        )
    print()
    print("median ms per trial: plan / ask (of which claim) / executor / tell (of which after_trial)")
    for row in overhead:
        p, s = row["parts_median_ms"], list(row["sampler_median_ms"].values())
        print(
            f"  {row['executor']:5} {row['storage']:10} {p['plan']:.1f} / {p['ask']:.1f} ({s[0]:.1f}) / "
            f"{p['executor']:.1f} / {p['tell']:.1f} ({s[1]:.1f})"
        )
    for ref in references:
        w = ref["claim_writes"]
        print(
            f"  {ref['storage']:10} optuna floor {ref['optuna_floor']['median_ms']:.1f} ms/trial; "
            f"claim writes 3 attrs {w['three_attrs_ms']:.1f} ms vs 1 JSON attr {w['one_json_attr_ms']:.1f} ms"
        )
    if "digits_round" in result:
        print(f"digits round ({result['digits_measured']}):")
        for name in ("local", "local_batched", "ray"):
            if name in result["digits_round"]:
                row = result["digits_round"][name]
                print(f"  {name:14} {row['round_s']:6.2f} s  (median trial {row['trial_s']:.2f} s)")
    print(f"took {result['benchmark_s']:.0f} s; wrote {args.out}")


if __name__ == "__main__":
    main()

"""Every option checked against what it will meet, before a study is created or opened for writing.

The commands that run guidance (``search``, ``evaluate``, ``sample``) call these checks right
after parsing their flags, so that a value no run can use is one line (exit 2) and nothing is
written: a seed outside what the random generators take, more DDIM steps than the model was
trained with, more threads than CPUs, a batch that cannot fit in memory (with the figure and the
flag that lowers it), counts a search cannot finish, an objective naming a metric twice, a device
index a CPU does not have, a target with spaces around it, a space that holds parameters at 0
without saying so. Each message names the flag (its library parameter's name, for the Python
API: :class:`~tfg_search.errors.SettingError`) and says what to give instead.

Example:
    >>> check_seed(2**32)
    Traceback (most recent call last):
    ...
    tfg_search.errors.SettingError: seed must be an integer in [0, 4294967295] (the random generators' \
range), got 4294967296
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tfg_search.errors import SettingError

MAX_SEED = 2**32 - 1
"""The largest seed: Optuna's samplers and numpy take seeds below 2**32 (torch's take more)."""
MAX_REPEATS = 100
"""The largest ``n_recur``, ``n_iter`` and ``n_mc``: each multiplies every step's passes (the
paper's settings use 1-4); above this one trial costs more than a hundred whole runs."""
MAX_LATTICE_POINTS = 100
"""The most values one lattice of ``--space`` may hold (the defaults hold 4-7): a search cannot
cover more (``rho=1e-300:2:8`` holds a thousand)."""
MEMORY_SHARE = 0.9
"""The share of the available memory one batch may take."""


def check_seed(seed: int, name: str = "seed") -> None:
    """``seed`` within what every random generator of a run takes ([0, 2**32 - 1])."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise SettingError(
            name, f"must be an integer in [0, {MAX_SEED}] (the random generators' range), got {seed!r}"
        )


def check_threads(threads: int | None, name: str = "threads") -> None:
    """At most one torch thread per CPU of this machine (more only contend: docs/benchmarks.md)."""
    cpus = os.cpu_count() or 1
    if threads is not None and threads > cpus:
        raise SettingError(
            name,
            f"{threads} is more than the {cpus} CPUs of this machine; give at most {cpus}, or leave it out",
        )


def check_device(device: str | None, name: str = "device") -> None:
    """A CPU has no index: ``cpu:1`` (torch accepts it and ignores the index) is refused."""
    if device is not None and device.strip().lower().startswith("cpu:") and device.strip()[4:] != "0":
        raise SettingError(name, f"{device!r} names a CPU by index; a CPU has none: give cpu")


def check_target(target: str, name: str = "target") -> None:
    """A target is stored as given: spaces around it would make a study apart from the bare one."""
    if target != target.strip():
        raise SettingError(name, f"{target!r} has spaces around it; give {target.strip()!r}")


def check_repeats(name: str, value: int | None) -> None:
    """``n_recur``, ``n_iter`` or ``n_mc`` within :data:`MAX_REPEATS`."""
    if value is not None and value > MAX_REPEATS:
        raise SettingError(
            name,
            f"{value} is more than {MAX_REPEATS}: each step would run the model {value} times and the "
            f"run could not finish; give at most {MAX_REPEATS}",
        )


def check_objective(objective: Sequence[str] | None) -> None:
    """Each metric once (a repeated one would weigh twice in the score, silently)."""
    seen: set[str] = set()
    for name in objective or ():
        if name in seen:
            raise SettingError("objective", f"names {name!r} twice; give each metric once")
        seen.add(name)


def check_steps(task: Any, steps: int | None, name: str = "steps") -> None:
    """At most the ``num_train_timesteps`` the task's model was trained with (DDIM takes steps
    among them); loads the task's models (on the CPU; cached)."""
    if steps is None:
        return
    _, scheduler = task.diffusion("cpu")
    trained = int(scheduler.config.num_train_timesteps)
    if steps > trained:
        raise SettingError(
            name,
            f"{steps} is more than the {trained} timesteps the model of task {task.name!r} was trained "
            f"with; give at most {trained}",
        )


def available_memory(device: Any) -> int:
    """Bytes free for a batch on ``device`` (a torch device): the GPU's free memory, or the
    machine's available memory (``MemAvailable`` of /proc/meminfo; else free physical pages)."""
    if device.type == "cuda":
        import torch

        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def check_batch_memory(
    task: Any,
    target: str,
    config: Any,
    sizes: dict[str, tuple[int, int]],
    device: Any,
    free: int | None = None,
    share: str = "",
) -> None:
    """Each size fits the memory of ``device`` by the task's estimate
    (:meth:`tasks.base.Task.batch_bytes`). ``sizes``: flag name -> (its value, the samples of the
    largest batch it makes); refused with the figure and about how much fits. ``free``: the bytes
    a batch may use (default: what ``device`` has available); ``share``: how that figure was
    shared out, for the message (a Ray actor's share, :func:`ray_actor_memory`)."""
    if free is None:
        free = available_memory(device)
    one = task.batch_bytes(1, config, 1, target)
    per_sample = max(task.batch_bytes(2, config, 1, target) - one, 1)
    for flag, (given, batch) in sizes.items():
        need = one + per_sample * (batch - 1)
        if need > MEMORY_SHARE * free:
            fits = max(int((MEMORY_SHARE * free - one) // per_sample) + 1, 0) * given // batch
            made = "" if batch == given else f" (its largest batch: {batch} samples)"
            raise SettingError(
                flag,
                f"{given} needs about {_size(need)} for one batch{made} on {device}, and {_size(free)} "
                f"is available{share}; lower it (about {fits} fit)",
            )


def ray_actor_memory(
    nodes: Sequence[dict[str, float]], cpus_per_trial: float, gpus_per_trial: float, workers: int | None
) -> tuple[int, str]:
    """The most memory one Ray actor of a search can count on for its batch, and how it was shared
    out (for the message of :func:`check_batch_memory`). ``nodes``: each node's ``CPU``, ``GPU``
    and ``memory`` (bytes free for batches); the actors a node runs at once (as many as its
    CPUs and GPUs fit, at most ``workers``) share its memory, and the node where an actor gets the
    most is taken (a batch that fits no actor anywhere cannot run); 0 when no node fits one.

    Example:
        >>> gib = 2**30
        >>> free, share = ray_actor_memory(
        ...     [{"CPU": 16, "memory": 64 * gib}, {"CPU": 4, "memory": 32 * gib}], 1, 0, None
        ... )
        >>> free // gib, share
        (8, ' to each of the 4 actors of a node (4 CPUs, --cpus-per-trial 1: fewer --workers or more \
--cpus-per-trial give each more)')
        >>> ray_actor_memory([{"CPU": 16, "memory": 64 * gib}], 1, 0, 2)[0] // gib
        32
    """
    from tfg_search.run.executors.ray_pool import default_num_workers

    best: tuple[int, str] = (0, "")
    for node in nodes:
        if node.get("CPU", 0) < cpus_per_trial or node.get("GPU", 0) < gpus_per_trial:
            continue  # no actor of the search runs there
        actors = default_num_workers(node, cpus_per_trial, gpus_per_trial)
        if workers is not None:
            actors = min(actors, workers)
        per_actor = int(node.get("memory", 0) // actors)
        if per_actor > best[0]:
            cpus = f"{node.get('CPU', 0):g} CPUs, --cpus-per-trial {cpus_per_trial:g}"
            more = "fewer --workers or more --cpus-per-trial give each more"
            best = (
                per_actor,
                f" to each of the {actors} actors of a node ({cpus}: {more})" if actors > 1 else "",
            )
    return best


def _size(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError


def check_run(
    task: Any,
    target: str,
    config: Any,
    samples: int,
    seed: int,
    steps: int | None,
    device: str | None,
    threads: int | None,
) -> None:
    """The checks of one guided run (``evaluate``, ``sample``): seed, threads, device, target,
    steps, repeats, the batch's memory."""
    from tfg_search.run.devices import resolve_device

    check_seed(seed)
    check_threads(threads)
    check_device(device)
    check_target(target)
    for name in ("n_recur", "n_iter", "n_mc"):
        check_repeats(name, getattr(config, name))
    check_steps(task, steps)
    check_batch_memory(
        task, target, config, {"samples": (samples, samples)}, resolve_device(device, default="cpu")
    )


def check_search(
    settings: Any, device: str | None, threads: int | None, local: bool, ray: RayActors | None = None
) -> None:
    """The checks of a search (``search``), before its study is opened: those of a run, the space,
    the objective, and counts it could not finish (``trials`` and ``wave`` beyond the points of
    its space). The memory of its largest evaluation (a final re-run, or the rung search's top
    rung) is checked on this machine's device when its trials run here (``local``), and against
    one actor's share of this machine when they run on a local Ray (``ray`` without an address;
    on a cluster :func:`check_cluster_memory` checks it once Ray is joined).

    Raises:
        SettingError: the first check that fails (the CLI names its flag).
    """
    from tasks import get_task
    from tfg_search.run.devices import resolve_device
    from tfg_search.run.settings import TFG_PARAMS

    check_seed(settings.seed)
    check_threads(threads)
    check_device(device)
    check_target(settings.target)
    check_objective(settings.objective)
    for name in ("n_recur", "n_iter", "n_mc"):
        check_repeats(name, getattr(settings, name))
    if settings.space is not None:
        for name, lattice in settings.space.items():
            if lattice.size > MAX_LATTICE_POINTS:
                raise SettingError(
                    "space",
                    f"{name}'s lattice holds {lattice.size} values, more than a search can cover "
                    f"({MAX_LATTICE_POINTS}); raise its first value or its factor",
                )
        left_out = [p for p in TFG_PARAMS if p not in settings.space]
        if settings.method == "tfg" and left_out:
            raise SettingError(
                "space",
                f"leaves out {', '.join(left_out)}, which would be held at 0 (not searched); give each "
                "a lattice (with a leading 0, e.g. mu=0,0.25:2:8, to let the search turn it off)",
            )
    task = get_task(settings.task, settings.task_options)
    check_steps(task, settings.steps)
    resolved = settings.resolve(task)
    points = math.prod(lattice.size for lattice in resolved.lattices().values())
    if resolved.trials is not None and resolved.trials > points:
        raise SettingError(
            "trials",
            f"{resolved.trials} is more than the {points} points of the space: the search would only "
            f"repeat points; give at most {points}",
        )
    if resolved.wave is not None and resolved.wave > points:
        raise SettingError(
            "wave", f"{resolved.wave} is more than the {points} points of the space; give at most {points}"
        )
    if local:
        check_batch_memory(task, resolved.target, *_largest_batches(resolved), resolve_device(device))
    elif ray is not None and ray.address is None:
        on = ray.device(device)
        free, share = ray_actor_memory(
            [ray.this_machine(on)], ray.cpus_per_trial, ray.gpus_per_trial, ray.workers
        )
        check_batch_memory(task, resolved.target, *_largest_batches(resolved), on, free, share)


def _largest_batches(resolved: Any) -> tuple[Any, dict[str, tuple[int, int]]]:
    """The configuration of a search's costliest point and its sizes: flag -> (value, the samples
    of its largest batch: a final re-run's, or the rung search's top rung's)."""
    from searchers.rungs import units

    schedule = resolved.rung_schedule()
    top = resolved.samples * (units(len(schedule.promote)) if schedule is not None else 1)
    point = {name: lattice.high for name, lattice in resolved.lattices().items()}
    sizes = {"samples": (resolved.samples, top), "final_samples": (resolved.final_samples,) * 2}
    return resolved.config(point), sizes


@dataclass(frozen=True)
class RayActors:
    """Where a search's Ray actors run (the flags of ``--executor ray``)."""

    address: str | None
    workers: int | None
    cpus_per_trial: float
    gpus_per_trial: float

    def device(self, device: str | None) -> Any:
        """An actor's device: ``device``, else a GPU when it asks for one and torch has CUDA."""
        import torch

        if device is None and self.gpus_per_trial > 0 and torch.cuda.is_available():
            device = "cuda"
        return torch.device(device or "cpu")

    def this_machine(self, on: Any) -> dict[str, float]:
        """This machine as a node of a local Ray: its CPUs, GPUs and the memory its actors share
        (on a GPU: the free memory of one GPU per ``1 / gpus_per_trial`` actors)."""
        import torch

        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        memory = available_memory(on)
        if on.type == "cuda":
            memory = int(memory * max(gpus, 1))
        return {"CPU": float(os.cpu_count() or 1), "GPU": float(gpus), "memory": float(memory)}


def check_cluster_memory(settings: Any, device: str | None, ray: RayActors) -> None:
    """On a Ray cluster just joined: the largest batch against the memory one CPU actor gets on
    the node where it gets the most (each node's ``memory`` resource shared by the actors it
    runs). An actor on a GPU is not checked here: Ray does not report its GPU's memory."""
    import ray as ray_module

    from tasks import get_task

    on = ray.device(device)
    if on.type != "cpu":
        return
    nodes = [n["Resources"] for n in ray_module.nodes() if n.get("Alive")]
    free, share = ray_actor_memory(nodes, ray.cpus_per_trial, ray.gpus_per_trial, ray.workers)
    task = get_task(settings.task, settings.task_options)
    resolved = settings.resolve(task)
    check_batch_memory(task, resolved.target, *_largest_batches(resolved), on, free, share)

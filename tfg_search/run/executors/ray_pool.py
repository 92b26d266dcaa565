"""The Ray executor: a pool of warm Ray actors that evaluate trial specs (docs/ray.md).

Each actor is one worker process that keeps the task's models loaded (the tasks cache them per
process), so only the first trial an actor runs pays for loading. A round is dispatched at once:
every idle actor gets a spec, and as each result arrives (``ray.wait``) it is yielded to the
coordinator and the actor gets the next spec.

Resources: every actor requests ``num_cpus=cpus_per_trial`` and ``num_gpus=gpus_per_trial``
(fractional GPUs pack several actors per GPU); an actor with a GPU evaluates on ``"cuda"`` (Ray sets
``CUDA_VISIBLE_DEVICES``) when its torch has CUDA, else (no GPU, or a GPU that Ray was told of but
torch cannot use) on ``"cpu"``, unless the spec or the executor names a device.

Modules of the working folder: a task option that names ``module:function`` (the custom task's
``predictor`` and ``evaluator``) whose module is a file ``module.py`` or a folder ``module/`` in the
coordinator's working folder, and is not importable otherwise, reaches the actors through the job's
Ray ``runtime_env`` (``py_modules``: Ray uploads it to the cluster and each node unpacks it before
its workers start), so workers on other machines, where that folder does not exist, import it as
the coordinator does (:func:`working_modules`; docs/ray.md).

Output: Ray prints what the actors print on the coordinator's stdout and stderr, each line after a
``(_TrialWorker pid=...)`` prefix in colour; off a terminal (a CI log, ``ray job logs``, a pipe)
the prefix comes without ANSI escapes (:func:`plain_worker_output`).

Faults: when an actor dies mid-trial (killed, out of memory, its node lost), the trial is retried
once on a fresh actor (``outcome.attempts == 2``); if that actor dies too the trial is reported
failed, with an error saying the actor died. The search goes on either way.

Example:
    >>> from tfg_search.run.executors.ray_pool import RayExecutor  # doctest: +SKIP
    >>> with RayExecutor(num_workers=2) as pool:  # doctest: +SKIP
    ...     outcomes = list(pool.map(specs))
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import logging
import math
import os
import re
import socket
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tfg_search.errors import TFGSearchError
from tfg_search.run.executors.base import Executor
from tfg_search.run.worker import run_trial
from tfg_search.trial import FAILURE_ENVIRONMENT, TrialOutcome, TrialSpec

MAX_ATTEMPTS = 2
"""A trial whose actor dies is run at most this many times in all."""

ENV_PREFIXES = ("TFG_",)
"""Environment variables of the coordinator passed on to the actors (merged with the job's)."""

TrialFn = Callable[[TrialSpec], TrialOutcome]


class _TrialWorker:
    """The body of one Ray actor: evaluates specs one at a time with warm task models."""

    def __init__(self, cpus: float, device: str | None, trial_fn: TrialFn | None) -> None:
        import ray
        import torch

        torch.set_num_threads(max(1, int(cpus)))  # its CPU share, not every core of the node
        # a GPU share only where this torch can use it: a declared GPU without CUDA runs on the CPU
        self._device = device or ("cuda" if ray.get_gpu_ids() and torch.cuda.is_available() else "cpu")
        self._trial_fn = trial_fn or run_trial
        node_id = ray.get_runtime_context().get_node_id()
        self._node = f"{socket.gethostname()}/{node_id[:12]}"

    def info(self) -> dict[str, Any]:
        """Where this actor runs: process id, node ("hostname/ray-node-id") and default device."""
        return {"pid": os.getpid(), "node": self._node, "device": self._device}

    def run(self, spec: TrialSpec, attempt: int) -> TrialOutcome:
        """Evaluate one spec (on the actor's device unless the spec names one)."""
        if spec.device is None:
            spec = replace(spec, device=self._device)
        outcome = self._trial_fn(spec)
        outcome.node = self._node
        outcome.attempts = attempt
        return outcome


@dataclass
class _Worker:
    handle: Any  # ray.actor.ActorHandle
    info: Any  # ObjectRef of _TrialWorker.info()
    node: str | None = None  # known once the actor has started (info resolved)


def default_num_workers(resources: dict[str, float], cpus_per_trial: float, gpus_per_trial: float) -> int:
    """How many actors fit the cluster's resources (at least 1).

    Example:
        >>> default_num_workers({"CPU": 16.0, "GPU": 2.0}, 1.0, 0.5)
        4
        >>> default_num_workers({"CPU": 2.0}, 1.0, 0.0)
        2
    """
    fits = math.floor(resources.get("CPU", 0.0) / cpus_per_trial + 1e-9)
    if gpus_per_trial > 0:
        fits = min(fits, math.floor(resources.get("GPU", 0.0) / gpus_per_trial + 1e-9))
    return max(1, fits)


_SPEC = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(?:\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][\w.]*$")
"""A ``module:function`` option value; group 1 is the top-level module."""


def working_modules(
    options: Iterable[Mapping[str, str] | None], folder: str | Path | None = None
) -> list[str]:
    """The paths of the modules that task options name as ``module:function`` and that only the
    working folder provides: the top-level module is ``folder/NAME.py`` or ``folder/NAME/`` and
    is not importable from ``sys.path`` without that folder (an installed package of the same name
    wins, as it does for :func:`tasks.registry.load_object`). Sorted, each path once.

    Example:
        >>> import tempfile
        >>> here = Path(tempfile.mkdtemp())
        >>> _ = (here / "my_guides.py").write_text("def log_f(x, t): ...")
        >>> options = [{"predictor": "my_guides:log_f", "evaluator": "tasks.base:Task", "model": "m"}]
        >>> [Path(p).name for p in working_modules(options, here)]
        ['my_guides.py']
    """
    root = Path(folder or os.getcwd()).resolve()
    elsewhere = [p for p in sys.path if p and Path(p).resolve() != root]
    found: set[str] = set()
    for opts in options:
        for value in (opts or {}).values():
            match = _SPEC.match(str(value).strip())
            if match is None:
                continue
            name = match.group(1)
            path = root / f"{name}.py" if (root / f"{name}.py").is_file() else root / name
            if not path.exists() or importlib.machinery.PathFinder.find_spec(name, elsewhere) is not None:
                continue
            found.add(str(path))
    return sorted(found)


def _check_reachable(address: str, timeout: float = 10.0) -> None:
    """Fail fast (Ray itself retries for minutes) when nothing listens at ``host:port``."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise TFGSearchError(f"--ray-address must be auto or host:port, got {address!r}")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as err:
        raise TFGSearchError(
            f"no Ray cluster answers at {address} ({err.strerror or type(err).__name__}); "
            "start one with `ray start --head --port PORT` or check --ray-address"
        ) from None


COLOR_ENV = "RAY_COLOR_PREFIX"
"""Ray's switch for the colour of the prefix of the workers' lines ("0": none), read at each line."""


def plain_worker_output() -> None:
    """Ray prints the workers' lines without colour (``RAY_COLOR_PREFIX=0``) when this process's
    stdout or stderr is not a terminal; a value the user set is kept."""
    if not (sys.stdout.isatty() and sys.stderr.isatty()):
        os.environ.setdefault(COLOR_ENV, "0")


def init_ray(address: str | None, py_modules: Sequence[str] = ()) -> bool:
    """Join the cluster at ``address`` ("auto", "host:port"), or start a local Ray on every core;
    ``py_modules`` (local paths) go to every worker of the job (Ray's ``runtime_env``).

    Returns:
        True when a local Ray was started (the caller shuts it down), False when a cluster was joined.

    Raises:
        TFGSearchError: the cluster cannot be reached (one line, what to check).
    """
    import ray

    plain_worker_output()
    for name in ("ray", "ray.tune", "ray.train", "ray.data"):
        logging.getLogger(name).setLevel(logging.WARNING)
    common: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": True}
    if py_modules:
        common["runtime_env"] = {"py_modules": list(py_modules)}
    if address and address != "auto" and "://" not in address:
        _check_reachable(address)
    try:
        if address:
            ray.init(address=address, **common)
        else:
            ray.init(num_cpus=os.cpu_count(), include_dashboard=False, **common)
    except (ConnectionError, RuntimeError, ValueError, ray.exceptions.RayError) as err:
        where = f"the Ray cluster at {address}" if address else "a local Ray"
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise TFGSearchError(
            f"cannot start or join {where}: {first}; check --ray-address "
            "(auto inside `ray job submit`, or host:port of the head's GCS)"
        ) from None
    return not address


class RayExecutor(Executor):
    """Evaluate trials on a pool of Ray actors kept warm across rounds.

    Args:
        address: ``"auto"`` or ``"host:port"`` of a running cluster (also what ``ray job submit``
            gives its entry point); ``None`` starts a local Ray on this machine's cores, shut down
            at :meth:`close`. If Ray is already initialised in this process it is used as is.
        num_workers: actors in the pool (default: what the cluster's resources allow).
        gpus_per_trial: GPUs each actor requests (fractional packs several actors per GPU).
        cpus_per_trial: CPUs each actor requests (also its torch thread count).
        device: device for specs that name none (default: "cuda" on an actor with a GPU, else "cpu").
        trial_fn: what an actor runs per spec (default :func:`~tfg_search.run.worker.run_trial`); must be
            importable on the workers (a module-level function or a ``functools.partial`` of one).
        task_options: the search's task options: the working folder's modules they name
            (:func:`working_modules`) go to the workers with the job's ``runtime_env`` when this
            executor starts or joins Ray (a Ray already initialised in this process keeps its own).

    Raises:
        TFGSearchError: bad resource numbers, or a cluster that cannot be reached.
    """

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        num_workers: int | None = None,
        gpus_per_trial: float = 0.0,
        cpus_per_trial: float = 1.0,
        device: str | None = None,
        trial_fn: TrialFn | None = None,
        task_options: Mapping[str, str] | None = None,
    ) -> None:
        if gpus_per_trial < 0 or cpus_per_trial <= 0 or (num_workers is not None and num_workers < 1):
            raise TFGSearchError("gpus_per_trial must be >= 0, cpus_per_trial > 0 and num_workers >= 1")
        import ray

        self._ray = ray
        self.gpus_per_trial = float(gpus_per_trial)
        self.cpus_per_trial = float(cpus_per_trial)
        self.device = device
        self._trial_fn = trial_fn
        self._owns_ray = False
        self._closed = False
        self._workers: list[_Worker] = []
        self.py_modules = working_modules([task_options])
        plain_worker_output()  # (also on a Ray this process started before)
        if not ray.is_initialized():
            self._owns_ray = init_ray(address, self.py_modules)
        self.num_workers = num_workers or default_num_workers(
            ray.cluster_resources(), self.cpus_per_trial, self.gpus_per_trial
        )
        env = {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIXES)}
        options: dict[str, Any] = {
            "num_cpus": self.cpus_per_trial,
            "num_gpus": self.gpus_per_trial,
            "max_restarts": 0,
            "max_task_retries": 0,
        }
        if env:
            options["runtime_env"] = {"env_vars": env}  # merged with the job's (its py_modules)
        self._actor_class = ray.remote(_TrialWorker).options(**options)

    # -- the pool -----------------------------------------------------------------------------
    def _new_worker(self) -> _Worker:
        handle = self._actor_class.remote(self.cpus_per_trial, self.device, self._trial_fn)
        return _Worker(handle, handle.info.remote())

    def _discard(self, worker: _Worker) -> None:
        if worker in self._workers:
            self._workers.remove(worker)
        with contextlib.suppress(Exception):  # already gone
            self._ray.kill(worker.handle, no_restart=True)

    def _grow(self, wanted: int) -> None:
        while len(self._workers) < min(wanted, self.num_workers):
            self._workers.append(self._new_worker())

    def workers_info(self, timeout: float = 60.0) -> list[dict[str, Any]]:
        """Process id, node and default device of each live actor (starting them as needed)."""
        self._grow(self.num_workers)
        return self._ray.get([w.info for w in self._workers], timeout=timeout)

    # -- Executor ------------------------------------------------------------------------------
    def map(self, specs: Sequence[TrialSpec]) -> Iterator[TrialOutcome]:
        """Dispatch every spec at once over the pool; yield each outcome as it arrives."""
        if self._closed:
            raise TFGSearchError("this Ray executor is closed")
        ray = self._ray
        queue: deque[tuple[TrialSpec, int]] = deque((spec, 1) for spec in specs)
        self._grow(len(queue))
        # An actor gets work once it has started and said where it runs, so that a trial whose
        # actor dies still records its node.
        idle = [w for w in self._workers if w.node is not None]
        starting = {w.info: w for w in self._workers if w.node is None}
        running: dict[Any, tuple[_Worker, TrialSpec, int, float]] = {}
        failed_starts = 0
        try:
            while queue or running:
                while queue and idle:
                    spec, attempt = queue.popleft()
                    worker = idle.pop(0)
                    ref = worker.handle.run.remote(spec, attempt)
                    running[ref] = (worker, spec, attempt, time.perf_counter())
                (ref,), _ = ray.wait([*running, *starting], num_returns=1)
                if ref in starting:
                    worker = starting.pop(ref)
                    try:
                        worker.node = str(ray.get(ref)["node"])
                        idle.append(worker)
                    except ray.exceptions.RayError as err:
                        self._discard(worker)
                        failed_starts += 1
                        if failed_starts > 2 * self.num_workers + 2:
                            raise TFGSearchError(
                                f"Ray actors keep dying as they start: {_first_line(err)}"
                            ) from None
                        fresh = self._new_worker()
                        self._workers.append(fresh)
                        starting[fresh.info] = fresh
                    continue
                worker, spec, attempt, started = running.pop(ref)
                try:
                    outcome = ray.get(ref)
                except ray.exceptions.RayActorError as err:
                    node = worker.node or "unknown"
                    self._discard(worker)
                    replacement = self._new_worker()
                    self._workers.append(replacement)
                    starting[replacement.info] = replacement
                    if attempt < MAX_ATTEMPTS:
                        queue.appendleft((spec, attempt + 1))
                        continue
                    outcome = TrialOutcome(
                        spec.number,
                        None,
                        f"the Ray actor evaluating trial {spec.number} died ({attempt} attempts, last on "
                        f"{node}): {_first_line(err)}",
                        time.perf_counter() - started,
                        spec.device or self.device or "unknown",
                        node,
                        attempts=attempt,
                        failure=FAILURE_ENVIRONMENT,
                    )
                except ray.exceptions.RayError as err:  # e.g. a spec or result that cannot be pickled
                    idle.append(worker)
                    outcome = TrialOutcome(
                        spec.number,
                        None,
                        f"Ray could not run trial {spec.number}: {_first_line(err)}",
                        time.perf_counter() - started,
                        spec.device or self.device or "unknown",
                        worker.node or "unknown",
                        attempts=attempt,
                        failure=FAILURE_ENVIRONMENT,
                    )
                else:
                    idle.append(worker)
                yield outcome
        finally:
            for worker, *_ in running.values():  # abandoned mid-round (Ctrl-C): stop their work
                self._discard(worker)

    def close(self) -> None:
        """Stop the actors, and the local Ray this executor started (idempotent)."""
        if self._closed:
            return
        self._closed = True
        for worker in list(self._workers):
            self._discard(worker)
        if self._owns_ray and self._ray.is_initialized():
            self._ray.shutdown()


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")

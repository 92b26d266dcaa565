"""The in-process executor: trials run in the coordinator's process, a round batched where it can.

Specs that share task, target, sample count, steps, device and structure (n_recur, n_iter, n_mc,
eta) run as one sampling batch (:mod:`tfg_search.batching`), each with the samples it would get
alone. ``batch_size`` caps how many candidates share a batch (1 turns batching off).
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator, Sequence

from tfg_search.config import TFGConfig
from tfg_search.executors.base import Executor
from tfg_search.worker import TrialOutcome, TrialSpec, describe_error, pick_device, run_trial


def batch_key(spec: TrialSpec) -> str:
    """Specs with equal keys can share one sampling batch."""
    cfg = TFGConfig.from_dict(spec.config)
    from tfg_search.batching import structure_key

    return json.dumps(
        [spec.task, spec.target, spec.task_options or {}, spec.samples, spec.steps, spec.device,
         spec.keep_samples, structure_key(cfg)],
        sort_keys=True,
    )  # fmt: skip


def group(specs: Sequence[TrialSpec], batch_size: int) -> list[list[TrialSpec]]:
    """Batches of at most ``batch_size`` specs with equal :func:`batch_key`, in first-seen order."""
    groups: dict[str, list[list[TrialSpec]]] = {}
    order: list[list[TrialSpec]] = []
    for spec in specs:
        chunks = groups.setdefault(batch_key(spec), [])
        if not chunks or len(chunks[-1]) >= batch_size:
            chunks.append([])
            order.append(chunks[-1])
        chunks[-1].append(spec)
    return order


def run_batch(specs: Sequence[TrialSpec]) -> list[TrialOutcome]:
    """Evaluate specs of one batch key together; falls back to one by one for a single spec."""
    if len(specs) == 1:
        return [run_trial(specs[0])]
    from tasks import get_task
    from tfg_search.batching import evaluate_batch

    first = specs[0]
    device = pick_device(first.device)
    node = socket.gethostname()
    start = time.perf_counter()
    try:
        task = get_task(first.task, first.task_options)
        results = evaluate_batch(
            task,
            first.target,
            [TFGConfig.from_dict(s.config) for s in specs],
            first.samples,
            [s.seed for s in specs],
            device=device,
            num_inference_steps=first.steps,
            return_samples=first.keep_samples,
        )
    except Exception as err:  # the whole batch failed (e.g. models missing): report each
        wall = (time.perf_counter() - start) / len(specs)
        return [TrialOutcome(s.number, None, describe_error(err), wall, str(device), node) for s in specs]
    outcomes = []
    for spec, res in zip(specs, results, strict=True):
        if isinstance(res, Exception):
            outcomes.append(
                TrialOutcome(spec.number, None, f"{type(res).__name__}: {res}", 0.0, str(device), node)
            )
        else:
            outcomes.append(
                TrialOutcome(
                    spec.number, dict(res.metrics), None, res.wall_time_s, str(device), node, res.samples
                )
            )
    return outcomes


class LocalExecutor(Executor):
    """Evaluate in this process; task models are loaded once and stay warm.

    Args:
        batch_size: most candidates evaluated in one sampling batch (1: one at a time).
    """

    name = "local"

    def __init__(self, batch_size: int = 1) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size

    def map(self, specs: Sequence[TrialSpec]) -> Iterator[TrialOutcome]:
        for batch in group(specs, self.batch_size):
            yield from run_batch(batch)

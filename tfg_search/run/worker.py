"""What a worker does with trials: task + config + n samples + seed -> metrics (or an error).

The same functions run in-process (the local executor) and inside Ray actors; task models are
loaded once per process (the tasks cache them) and reused for every trial. :func:`run_batch` is the
one evaluation path (specs of one :meth:`~tfg_search.trial.TrialSpec.batch_key` sampled together,
each as it would be alone); :func:`run_trial` is its one-spec case.
"""

from __future__ import annotations

import dataclasses
import socket
import time
from collections.abc import Sequence

from tfg_search.trial import TrialOutcome, TrialSpec, failed


def run_batch(specs: Sequence[TrialSpec]) -> list[TrialOutcome]:
    """Evaluate specs that share one :meth:`TrialSpec.batch_key` in one sampling batch.

    Any exception becomes the outcome's ``error`` (the search stores the trial as FAIL): one
    candidate's failure (e.g. non-finite samples) is its own; a failure of the whole batch (e.g.
    missing weights, a bad device) is reported for each spec.
    """
    from tasks import get_task
    from tfg_search.run.devices import resolve_device
    from tfg_search.run.evaluation import evaluate_batch

    if len({s.batch_key() for s in specs}) > 1:
        raise ValueError("run_batch needs specs with one batch_key (group them first)")
    first = specs[0]
    start = time.perf_counter()
    device = first.device or "default"
    node = socket.gethostname()
    try:
        dev = resolve_device(first.device)
        device = str(dev)
        task = get_task(first.task, first.task_options)
        results = evaluate_batch(
            task,
            first.target,
            [s.config for s in specs],
            first.samples,
            [s.seed for s in specs],
            device=dev,
            num_inference_steps=first.steps,
            return_samples=first.keep_samples,
        )
    except Exception as err:  # the whole batch failed: report it for each spec
        wall = (time.perf_counter() - start) / len(specs)
        return [failed(s.number, err, wall, device, node) for s in specs]
    share = (time.perf_counter() - start) / len(specs)
    outcomes = []
    for spec, result in zip(specs, results, strict=True):
        if isinstance(result, BaseException):
            outcomes.append(failed(spec.number, result, share, device, node))
        else:
            kept = result.samples.cpu() if spec.keep_samples and result.samples is not None else None
            outcomes.append(dataclasses.replace(result, number=spec.number, node=node, samples=kept))
    return outcomes


def run_trial(spec: TrialSpec) -> TrialOutcome:
    """Evaluate one spec (:func:`run_batch` of one)."""
    return run_batch([spec])[0]

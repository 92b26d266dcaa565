"""Evaluate a whole round in one batch.

Candidates of a round differ only in scalars (rho, mu, gamma and schedule structures). When they
share n_recur, n_iter, n_mc, eta, the step count, the sample count and the task, they run as one
batch whose samples carry their own rho_i, mu_i, sigma_i, each candidate drawing from its own
generator seeded as it would be alone, so every candidate gets the samples it would get alone (to
float tolerance: batched matrix products may round differently). Metrics are then computed per
candidate.

Example:
    >>> from tasks import get_task  # doctest: +SKIP
    >>> results = evaluate_batch(get_task("digits"), "3", configs, 64, [0] * len(configs))  # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch

from tfg_search.config import TFGConfig
from tfg_search.errors import TFGSearchError
from tfg_search.evaluation import TrialResult
from tfg_search.guidance import guided_sample_many


def structure_key(config: TFGConfig) -> tuple[int, int, int, float]:
    """What configurations must share to run in one batch (besides task, samples and steps)."""
    return (config.n_recur, config.n_iter, config.n_mc, config.eta)


def evaluate_batch(
    task: object,
    target: str,
    configs: Sequence[TFGConfig],
    n_samples: int,
    seeds: Sequence[int],
    *,
    device: torch.device | str | None = None,
    num_inference_steps: int | None = None,
    return_samples: bool = False,
) -> list[TrialResult | Exception]:
    """Like :func:`tfg_search.evaluation.evaluate` for each config, in one sampling batch.

    Returns, per configuration, its :class:`TrialResult` (``wall_time_s`` is its share of the batch)
    or the exception it raised (e.g. :class:`~tfg_search.errors.NonFiniteSampleError`).
    """
    if len(configs) != len(seeds) or not configs:
        raise TFGSearchError("evaluate_batch needs one seed per configuration")
    task.parse_target(target)  # type: ignore[attr-defined]
    steps = num_inference_steps or task.num_inference_steps  # type: ignore[attr-defined]
    dev = torch.device(device or "cpu")
    runs = [c.replace(clip_x0=task.clip_x0) for c in configs]  # type: ignore[attr-defined]
    start = time.perf_counter()
    model, scheduler = task.diffusion(dev)  # type: ignore[attr-defined]
    log_f = task.log_f(target, dev)  # type: ignore[attr-defined]
    generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
    shape = (n_samples, *task.sample_shape)  # type: ignore[attr-defined]
    samples, errors = guided_sample_many(
        model, scheduler, log_f, runs, shape, generators, num_inference_steps=steps, device=dev
    )
    sampled = time.perf_counter() - start
    results: list[TrialResult | Exception] = []
    for cfg, part, err in zip(runs, samples, errors, strict=True):
        if err is not None:
            results.append(err)
            continue
        t0 = time.perf_counter()
        part = part.detach().cpu()
        try:
            metrics = task.compute_metrics(part, target)  # type: ignore[attr-defined]
        except Exception as exc:  # reported per candidate, like a failing evaluate()
            results.append(exc)
            continue
        wall = sampled / len(runs) + time.perf_counter() - t0
        results.append(TrialResult(metrics, part if return_samples else None, wall, str(dev), cfg))
    return results

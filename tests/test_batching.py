"""A round evaluated in one batch gives each candidate the samples and metrics it gets alone."""

from __future__ import annotations

import pytest
import torch

from tasks import get_task
from tfg_search import NonFiniteSampleError, TFGConfig
from tfg_search.run.evaluation import evaluate, evaluate_batch
from tfg_search.run.executors import LocalExecutor
from tfg_search.run.executors.local import group
from tfg_search.trial import TrialSpec

CONFIGS = [
    TFGConfig(rho=0.01, mu=0.02, gamma=0.01, n_iter=2),
    TFGConfig(rho=0.02, mu=0.02, gamma=0.01, n_iter=2),
    TFGConfig(rho=0.01, mu=0.04, gamma=0.1, n_iter=2, mu_schedule="decrease"),
]


@pytest.mark.parametrize("task_name", ["gmm2d", "digits"])
def test_batch_equals_separate_runs(task_name: str) -> None:
    task = get_task(task_name)
    seeds = [0, 0, 7]
    batch = evaluate_batch(task, "3", CONFIGS, 16, seeds, num_inference_steps=8, return_samples=True)
    for cfg, seed, got in zip(CONFIGS, seeds, batch, strict=True):
        assert not isinstance(got, Exception)
        alone = evaluate(task, "3", cfg, 16, seed, num_inference_steps=8, return_samples=True)
        torch.testing.assert_close(got.samples, alone.samples, rtol=1e-4, atol=1e-4)
        for name, value in alone.metrics.items():
            assert got.metrics[name] == pytest.approx(value, rel=1e-3, abs=1e-3), name


def test_a_failing_candidate_does_not_spoil_the_batch() -> None:
    task = get_task("gmm2d")
    configs = [CONFIGS[0], TFGConfig(rho=1e300, n_iter=0, mu=0.0, gamma=0.0)]
    configs = [c.replace(n_iter=0, mu=0.0, gamma=0.0) for c in configs]
    out = evaluate_batch(task, "3", configs, 8, [0, 0], num_inference_steps=6)
    assert not isinstance(out[0], Exception) and 0 <= out[0].metrics["validity"] <= 1
    assert isinstance(out[1], NonFiniteSampleError)


def _spec(number: int, cfg: TFGConfig, samples: int = 16) -> TrialSpec:
    return TrialSpec(number, "gmm2d", "3", cfg, samples, 0, 8, "cpu")


def test_grouping_respects_structure_and_batch_size() -> None:
    specs = [
        _spec(0, CONFIGS[0]),
        _spec(1, CONFIGS[1]),
        _spec(2, CONFIGS[0].replace(n_recur=2)),
        _spec(3, CONFIGS[2]),
        _spec(4, CONFIGS[2], samples=32),
    ]
    assert [[s.number for s in g] for g in group(specs, 8)] == [[0, 1, 3], [2], [4]]
    assert [[s.number for s in g] for g in group(specs, 2)] == [[0, 1], [2], [3], [4]]


def test_local_executor_batched_matches_one_by_one() -> None:
    specs = [_spec(i, c) for i, c in enumerate(CONFIGS)]
    one = {o.number: o for o in LocalExecutor(batch_size=1).map(specs)}
    many = {o.number: o for o in LocalExecutor(batch_size=8).map(specs)}
    assert set(one) == set(many) == {0, 1, 2}
    for n in one:
        assert one[n].ok and many[n].ok
        for name, value in one[n].metrics.items():
            assert many[n].metrics[name] == pytest.approx(value, rel=1e-3, abs=1e-3)

"""Fractional GPUs on Ray (docs/ray.md, docs/cluster.md): four actors at 0.25 GPU share one GPU.

This machine has no GPU, so the local Ray declares one (``ray.init(num_gpus=1)``): Ray schedules a
declared resource as it schedules a real one, and hands each actor that GPU's id (it sets
``CUDA_VISIBLE_DEVICES``). The placement is read from Ray itself: what each actor was assigned and
what the cluster has left, while four actors run at the same time.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from tfg_search.guidance.config import TFGConfig
from tfg_search.run.worker import run_trial
from tfg_search.trial import TrialOutcome, TrialSpec

ray = pytest.importorskip("ray")

from tfg_search.run.executors.ray_pool import RayExecutor  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.slow]

GPU_FRACTION = 0.25
CPU_FRACTION = 0.5  # 4 actors x 0.5 CPU = the 2 CPUs of the local Ray below


def placement_trial(marker_dir: str, together: int, spec: TrialSpec) -> TrialOutcome:
    """Write what Ray assigned to this actor, wait until ``together`` actors have written theirs (so
    that they are alive and holding their resources at once), then evaluate the spec for real."""
    folder = Path(marker_dir)
    record = {
        "pid": os.getpid(),
        "gpu_ids": [str(i) for i in ray.get_gpu_ids()],
        "assigned": ray.get_runtime_context().get_assigned_resources(),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }
    tmp = folder / f".actor-{spec.number}.tmp"
    tmp.write_text(json.dumps(record))
    tmp.rename(folder / f"actor-{spec.number}.json")
    deadline = time.monotonic() + 120
    while len(list(folder.glob("actor-*.json"))) < together and time.monotonic() < deadline:
        time.sleep(0.05)
    return run_trial(spec)


@pytest.fixture(scope="module")
def ray_with_one_gpu() -> Iterator[None]:
    """A local Ray of 2 CPUs and one declared GPU, for the module."""
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, logging_level="WARNING")
    try:
        yield
    finally:
        ray.shutdown()


def specs(n: int, device: str | None = None) -> list[TrialSpec]:
    config = TFGConfig(rho=0.25, mu=0.25, gamma=0.001)
    return [TrialSpec(i, "gmm2d", "3", config, 16, 0, 6, device=device) for i in range(n)]


def free_gpu() -> float:
    return ray.available_resources().get("GPU", 0.0)


def test_four_actors_share_one_declared_gpu_at_a_quarter_each(ray_with_one_gpu: None, tmp_path: Path) -> None:
    assert ray.cluster_resources()["GPU"] == 1.0
    trial_fn = functools.partial(placement_trial, str(tmp_path), 4)
    with RayExecutor(
        gpus_per_trial=GPU_FRACTION, cpus_per_trial=CPU_FRACTION, device="cpu", trial_fn=trial_fn
    ) as pool:
        assert pool.num_workers == 4  # what one GPU allows at 0.25 (and 2 CPUs at 0.5)
        outcomes = list(pool.map(specs(4)))
        # Ray's own books: the four live actors hold the whole GPU between them.
        assert free_gpu() == pytest.approx(0.0)
        infos = pool.workers_info()
    records = [json.loads((tmp_path / f"actor-{i}.json").read_text()) for i in range(4)]
    assert len({r["pid"] for r in records}) == 4 == len({i["pid"] for i in infos})
    for r in records:  # each its quarter of the same GPU, which Ray made the actor's visible device
        assert r["assigned"] == {"CPU": CPU_FRACTION, "GPU": GPU_FRACTION}
        assert r["gpu_ids"] == ["0"] and r["cuda_visible_devices"] == "0"
    for o in outcomes:  # and each evaluated its trial, on the device the executor names
        assert o.ok, o.error
        assert o.device == "cpu" and o.metrics["validity"] >= 0
    deadline = time.monotonic() + 30
    while free_gpu() < 1.0 and time.monotonic() < deadline:  # released when the pool closes
        time.sleep(0.1)
    assert free_gpu() == pytest.approx(1.0)


def test_a_spec_that_names_a_device_runs_there_on_an_actor_with_a_gpu_share(ray_with_one_gpu: None) -> None:
    with RayExecutor(num_workers=2, gpus_per_trial=GPU_FRACTION, cpus_per_trial=CPU_FRACTION) as pool:
        outcomes = list(pool.map(specs(2, device="cpu")))
    for o in outcomes:
        assert o.ok, o.error
        assert o.device == "cpu"


def test_an_actor_with_a_gpu_share_but_no_cuda_evaluates_on_the_cpu(ray_with_one_gpu: None) -> None:
    """With no device named anywhere, an actor uses its GPU where CUDA has one, else the CPU."""
    with RayExecutor(num_workers=2, gpus_per_trial=GPU_FRACTION, cpus_per_trial=CPU_FRACTION) as pool:
        outcomes = list(pool.map(specs(2)))
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    for o in outcomes:
        assert o.ok, o.error
        assert o.device.split(":")[0] == expected

"""The Ray executor on a real local Ray: warm actors across rounds, resources, faults, a whole search."""

from __future__ import annotations

import functools
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest

from tfg_search.guidance.config import TFGConfig
from tfg_search.run.worker import run_trial
from tfg_search.trial import TrialOutcome, TrialSpec

ray = pytest.importorskip("ray")

from tfg_search.errors import TFGSearchError  # noqa: E402
from tfg_search.run.executors.ray_pool import RayExecutor, default_num_workers, init_ray  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.slow]


# -- trial functions the actors run (pickled by value: see the fixture) ------------------------------
def quick_trial(spec: TrialSpec) -> TrialOutcome:
    """A trivial evaluation (no models): the metrics echo the spec."""
    return TrialOutcome(spec.number, {"validity": spec.number / 10}, None, 0.001, spec.device or "?", "?")


def dying_trial(
    marker_dir: str, die_once: frozenset[int], die_always: frozenset[int], spec: TrialSpec
) -> TrialOutcome:
    """Kill this actor's process (SIGKILL) on the trials named; ``die_once`` only on the first attempt."""
    marker = Path(marker_dir) / f"died-{spec.number}"
    if spec.number in die_always or (spec.number in die_once and not marker.exists()):
        marker.touch()
        os.kill(os.getpid(), signal.SIGKILL)
    return run_trial(spec)


def slow_trial(marker_dir: str, spec: TrialSpec) -> TrialOutcome:
    """Write ``started-<n>`` (holding this process id), then take 3 s the first time, 0 s later."""
    marker = Path(marker_dir) / f"started-{spec.number}"
    first = not marker.exists()
    marker.write_text(str(os.getpid()))
    if first:
        time.sleep(3)
    return quick_trial(spec)


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """One local Ray (2 CPUs) for the module; executors made inside reuse it and leave it running."""
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    try:
        yield
    finally:
        ray.shutdown()


def specs(n: int, task: str = "gmm2d", start: int = 0) -> list[TrialSpec]:
    config = TFGConfig(rho=0.25, mu=0.25, gamma=0.001)
    return [TrialSpec(start + i, task, "3", config, 16, 0, 10) for i in range(n)]


def test_default_num_workers() -> None:
    assert default_num_workers({"CPU": 2.0}, 1.0, 0.0) == 2
    assert default_num_workers({"CPU": 2.0}, 4.0, 0.0) == 1
    assert default_num_workers({"CPU": 64.0, "GPU": 2.0}, 1.0, 0.25) == 8
    assert default_num_workers({"CPU": 64.0}, 1.0, 1.0) == 1  # no GPU in the cluster: still one
    assert default_num_workers({"CPU": 3.0}, 1.5, 0.0) == 2


def test_unreachable_cluster_fails_fast_in_one_line() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens on it once closed
    start = time.monotonic()
    with pytest.raises(TFGSearchError, match=f"no Ray cluster answers at 127.0.0.1:{port}"):
        init_ray(f"127.0.0.1:{port}")
    assert time.monotonic() - start < 15
    with pytest.raises(TFGSearchError, match="auto or host:port"):
        init_ray("not-an-address")


def test_pool_runs_rounds_on_warm_actors(local_ray: None) -> None:
    with RayExecutor(cpus_per_trial=1) as pool:
        assert pool.num_workers == 2
        first = list(pool.map(specs(3)))
        pids = {w["pid"] for w in pool.workers_info()}
        second = list(pool.map(specs(4, start=3)))
        assert {w["pid"] for w in pool.workers_info()} == pids  # same processes: models stay loaded
    assert sorted(o.number for o in first) == [0, 1, 2]
    assert sorted(o.number for o in second) == [3, 4, 5, 6]
    for o in first + second:
        assert o.ok, o.error
        assert o.device == "cpu" and o.attempts == 1
        assert o.node.startswith(os.uname().nodename + "/")
    assert first[0].metrics == second[0].metrics  # same config and seed: same result
    assert ray.is_initialized()  # an executor that found Ray running leaves it running


def test_actor_killed_mid_trial_is_retried_on_a_fresh_actor(local_ray: None, tmp_path: Path) -> None:
    with RayExecutor(num_workers=2, trial_fn=functools.partial(slow_trial, str(tmp_path))) as pool:
        outcomes: list[TrialOutcome] = []
        thread = threading.Thread(target=lambda: outcomes.extend(pool.map(specs(3, "none"))))
        thread.start()
        marker = tmp_path / "started-0"
        deadline = time.monotonic() + 60
        while not (marker.exists() and marker.read_text()) and time.monotonic() < deadline:
            time.sleep(0.02)
        victim = int(marker.read_text())
        os.kill(victim, signal.SIGKILL)
        thread.join(timeout=90)
        assert not thread.is_alive()
        assert victim not in {w["pid"] for w in pool.workers_info()}
        assert len(pool.workers_info()) == 2
    by_number = {o.number: o for o in outcomes}
    assert sorted(by_number) == [0, 1, 2]
    assert by_number[0].ok and by_number[0].attempts == 2
    assert by_number[1].attempts == by_number[2].attempts == 1


def test_a_search_stops_on_actors_that_keep_dying_and_the_rerun_finishes_it(
    local_ray: None, tmp_path: Path, tmp_storage_url: str
) -> None:
    """A trial whose actor dies once is retried on a new actor; one whose actors keep dying is a
    machine failure: the search stops once its batch is told (the trial stays RUNNING with the
    reason), and the same search run again on a healthy machine re-runs it in place."""
    from tfg_search.errors import TFGSearchError
    from tfg_search.run.coordinator import run_search
    from tfg_search.run.executors import LocalExecutor
    from tfg_search.run.settings import SearchSettings
    from tfg_search.store.studies import load_search

    settings = SearchSettings(
        task="gmm2d",
        target="3",
        samples=16,
        final_samples=16,
        final_top=1,
        rounds=1,
        steps=10,
        search="beam",
    )
    trial_fn = functools.partial(dying_trial, str(tmp_path), frozenset({1}), frozenset({2}))
    stops = pytest.raises(TFGSearchError, match=r"1 evaluation\(s\) failed for a reason of the machine")
    with RayExecutor(num_workers=2, trial_fn=trial_fn) as pool, stops:
        run_search(settings, tmp_storage_url, "faults", pool)
    records = load_search(tmp_storage_url, "faults").records()
    trials = {r.number: r for r in records if r.role == "search"}
    assert trials[1].state == optuna.trial.TrialState.COMPLETE and trials[1].attempts == 2
    assert trials[2].state == optuna.trial.TrialState.RUNNING and trials[2].attempts == 2
    assert "died" in trials[2].error and trials[2].failure == "environment"
    for r in records:
        if r.state == optuna.trial.TrialState.COMPLETE:
            assert r.node.startswith(os.uname().nodename + "/") and r.device == "cpu"
    report = run_search(settings, tmp_storage_url, "faults", LocalExecutor())
    records = load_search(tmp_storage_url, "faults").records()
    assert all(r.state.is_finished() for r in records) and report.n_final == 1
    trials = {r.number: r for r in records if r.role == "search"}
    assert trials[2].ok and trials[2].interruptions == 1 and trials[2].failure is None
    assert report.counts.environment == 0 and report.counts.interrupted == 1


def test_the_default_rung_search_runs_on_ray_as_it_runs_locally(
    local_ray: None, tmp_storage_url: str
) -> None:
    """Ray workers draw each trial's own sample count and rung seed: the same study as in-process."""
    from tfg_search.run.coordinator import run_search
    from tfg_search.run.executors import LocalExecutor
    from tfg_search.run.settings import SearchSettings
    from tfg_search.store.studies import load_search

    settings = SearchSettings(task="gmm2d", target="3", samples=8, final_samples=16, final_top=1, steps=6)
    with RayExecutor(num_workers=2) as pool:
        run_search(settings, tmp_storage_url, "on-ray", pool)
    run_search(settings, tmp_storage_url, "local", LocalExecutor(batch_size=1))

    def trials(name: str) -> list[tuple]:
        records = load_search(tmp_storage_url, name).records()
        return sorted(
            (
                r.role,
                r.round,
                tuple(sorted(r.params.items())),
                tuple((e["rung"], e["samples"], e["seed"]) for e in r.evaluations or []),
                r.value,
            )
            for r in records
        )

    on_ray, local = trials("on-ray"), trials("local")
    assert [t[:4] for t in on_ray] == [t[:4] for t in local]
    assert [t[4] for t in on_ray] == pytest.approx([t[4] for t in local], rel=1e-5)
    # rung 0 on the search seed, rung 1 on seed + 2, rung 2 on twice the samples and seed + 3
    evaluations = {e[1:] for t in on_ray if t[0] == "search" for e in t[3]}
    assert evaluations == {(8, 0), (8, 2), (16, 3)}

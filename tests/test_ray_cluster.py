"""A real two-node Ray cluster on loopback (separate `ray start` processes) runs a CLI search.

The cluster is private to the test: its own ports, temp folder and authentication token; it is torn
down by signalling the process groups this test started (never `ray stop`, which would also stop
every other Ray on the machine).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest

from tfg_search.store.studies import load_search

pytest.importorskip("ray")

pytestmark = [pytest.mark.ray, pytest.mark.slow]

BIN = Path(sys.executable).parent


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """End a `ray start --block` that this test started: SIGTERM to it (it stops its Ray processes),
    then SIGKILL to whatever is left of its process group."""
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=15)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


def _wait_for(log: Path, text: str, proc: subprocess.Popen[bytes], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and text in log.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    raise AssertionError(f"ray start did not come up:\n{log.read_text(errors='replace')[-3000:]}")


@pytest.fixture
def ray_cluster() -> Iterator[tuple[str, dict[str, str]]]:
    """A head and one worker node (1 CPU each) on 127.0.0.1; yields (GCS address, env to reach it)."""
    root = Path(tempfile.mkdtemp(prefix="tfg-ray-"))  # short: Ray's socket paths must stay < 108 bytes
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    ports = free_ports(11)
    address = f"127.0.0.1:{ports[0]}"
    common = ["--block", "--num-cpus", "1", "--node-ip-address", "127.0.0.1", "--disable-usage-stats"]

    def agent_ports(p: list[int]) -> list[str]:
        return [
            "--dashboard-agent-listen-port", str(p[0]),
            "--dashboard-agent-grpc-port", str(p[1]),
            "--metrics-export-port", str(p[2]),
            "--runtime-env-agent-port", str(p[3]),
        ]  # fmt: skip

    procs: list[subprocess.Popen[bytes]] = []
    try:
        head_log = root / "head.log"
        head = [str(BIN / "ray"), "start", "--head", "--port", str(ports[0]), "--temp-dir", str(root / "t")]
        head += ["--include-dashboard", "false", "--dashboard-port", str(ports[1]), *common]
        with open(head_log, "wb") as out:
            cmd = head + agent_ports(ports[2:6])
            procs.append(subprocess.Popen(cmd, env=env, stdout=out, stderr=out, start_new_session=True))
        _wait_for(head_log, "Ray runtime started", procs[0])
        worker_log = root / "worker.log"
        worker = [str(BIN / "ray"), "start", "--address", address, *common, *agent_ports(ports[6:10])]
        with open(worker_log, "wb") as out:
            procs.append(subprocess.Popen(worker, env=env, stdout=out, stderr=out, start_new_session=True))
        _wait_for(worker_log, "Ray runtime started", procs[1])
        yield address, env
    finally:
        for proc in reversed(procs):
            _stop(proc)
        shutil.rmtree(root, ignore_errors=True)


def test_cli_search_on_a_two_node_cluster(
    ray_cluster: tuple[str, dict[str, str]], tmp_path: Path, tmp_storage_url: str
) -> None:
    address, env = ray_cluster
    cmd = [str(BIN / "tfg-search"), "search", "--task", "gmm2d", "--target", "2", "--samples", "16"]
    cmd += [
        "--final-samples",
        "16",
        "--final-top",
        "1",
        "--steps",
        "10",
        "--rounds",
        "2",
        "--search",
        "beam",
        "--study",
        "c",
    ]
    cmd += ["--storage", tmp_storage_url, "--executor", "ray", "--ray-address", address, "--workers", "2"]
    cmd += ["--json", "--quiet", "--out-dir", str(tmp_path / "out")]
    run = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-3000:]
    trials = load_search(tmp_storage_url, "c").records()
    assert trials and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    nodes = {t.node for t in trials}
    assert all(n.startswith(socket.gethostname() + "/") for n in nodes)
    assert len(nodes) == 2  # one 1-CPU actor on each node: both nodes evaluated trials
    assert {t.device for t in trials} == {"cpu"}


@pytest.fixture
def ray_head_with_dashboard() -> Iterator[tuple[int, dict[str, str]]]:
    """A 2-CPU head with the dashboard (the job server) on 127.0.0.1; yields (dashboard port, env)."""
    pytest.importorskip(
        "aiohttp", reason="ray job submit needs ray[default] (pip install tfg-search[cluster])"
    )
    root = Path(tempfile.mkdtemp(prefix="tfg-rj-"))
    env = {
        **os.environ,
        # As from an activated virtual environment: the job's entry point finds `tfg-search`.
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    ports = free_ports(7)
    head = [str(BIN / "ray"), "start", "--head", "--port", str(ports[0]), "--temp-dir", str(root / "t")]
    head += [
        "--include-dashboard",
        "true",
        "--dashboard-host",
        "127.0.0.1",
        "--dashboard-port",
        str(ports[1]),
    ]
    head += ["--block", "--num-cpus", "2", "--node-ip-address", "127.0.0.1", "--disable-usage-stats"]
    head += ["--dashboard-agent-listen-port", str(ports[2]), "--dashboard-agent-grpc-port", str(ports[3])]
    head += ["--metrics-export-port", str(ports[4]), "--runtime-env-agent-port", str(ports[5])]
    log = root / "head.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(head, env=env, stdout=out, stderr=out, start_new_session=True)
    try:
        _wait_for(log, "Ray runtime started", proc)
        yield ports[1], env
    finally:
        _stop(proc)
        shutil.rmtree(root, ignore_errors=True)


def test_ray_job_submit_runs_a_search(
    ray_head_with_dashboard: tuple[int, dict[str, str]], tmp_path: Path
) -> None:
    """The documented cluster job: `ray job submit -- tfg-search search ... --ray-address auto`."""
    port, env = ray_head_with_dashboard
    db = tmp_path / "jobs.db"
    cmd = [str(BIN / "ray"), "job", "submit", "--address", f"http://127.0.0.1:{port}", "--"]
    cmd += ["tfg-search", "search", "--task", "gmm2d", "--target", "4", "--samples", "16", "--steps", "10"]
    cmd += [
        "--rounds",
        "2",
        "--search",
        "beam",
        "--final-samples",
        "16",
        "--final-top",
        "1",
        "--study",
        "job",
    ]
    cmd += ["--executor", "ray", "--ray-address", "auto", "--storage", f"sqlite:///{db}"]
    cmd += ["--quiet", "--json", "--out-dir", str(tmp_path / "out")]
    run = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and "succeeded" in run.stdout + run.stderr, (run.stdout + run.stderr)[-3000:]
    finals = [r for r in load_search(f"sqlite:///{db}", "job").records() if r.role == "final"]
    assert len(finals) == 1 and finals[0].state == optuna.trial.TrialState.COMPLETE

"""Load, nothing lost: 2 coordinators x 4 Ray workers on one PostgreSQL database, dashboards reading.

Two coordinator processes (``run_search`` with a :class:`RayExecutor` of 4 actors each, on one private
8-CPU Ray head) each run two searches one after the other, on PostgreSQL, while two optuna-dashboard
WSGI apps poll the database. Trials cost milliseconds (:func:`cheap_trial`: metrics computed from the
configuration, no model). The first searches (A, B) run undisturbed; during the second ones (C, D)
one Ray worker of the first coordinator and then the second coordinator itself are killed with
SIGKILL; the second coordinator is started again and resumes D.

Checked for every search: no configuration evaluated twice, nothing lost (the completed search
configurations and the final re-runs are exactly those of a serial run with the same seed), no trial
left RUNNING, and the same best as the serial run; for D, the trials the killed coordinator left
RUNNING ended FAIL "interrupted" and their configurations were evaluated again.

With ``TFG_WRITE_LOAD_RESULTS=1`` the figures (trials/s, failures survived, duplicates, lost) go to
``benchmarks/results/scale.json`` under ``"load"``.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.load import SEARCHES, WORKERS_PER_COORDINATOR, cheap_trial, load_settings
from tfg_search.run.executors import Executor
from tfg_search.trial import TrialOutcome, TrialSpec

pytest.importorskip("ray")

pytestmark = [pytest.mark.ray, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
RESULTS = REPO / "benchmarks" / "results" / "scale.json"


class SerialExecutor(Executor):
    """:func:`cheap_trial` in this process, one spec after the other (the serial reference)."""

    name = "serial"

    def __init__(self, markers: str) -> None:
        self.markers = markers

    def map(self, specs: Sequence[TrialSpec]) -> Iterator[TrialOutcome]:
        for spec in specs:
            yield cheap_trial(self.markers, spec)


COORDINATOR = """
import functools, json, os, sys, time
import ray
from tests.helpers import load
ray.cloudpickle.register_pickle_by_value(load)  # the workers get cheap_trial by value
from tfg_search.run.executors.ray_pool import RayExecutor
from tfg_search.run.coordinator import run_search

url, address, markers, gates = sys.argv[1:5]
plan = json.loads(sys.argv[5])
trial_fn = functools.partial(load.cheap_trial, markers)
with RayExecutor(address=address, num_workers=load.WORKERS_PER_COORDINATOR, trial_fn=trial_fn) as pool:
    for i, name in enumerate(plan):
        while i and not os.path.exists(os.path.join(gates, name)):  # later searches wait for the test
            time.sleep(0.05)
        began = time.time()
        report = run_search(load.load_settings(*load.SEARCHES[name]), url, name, pool)
        print(json.dumps({"study": name, "began": began, "ended": time.time(), "resumed": report.resumed}),
              flush=True)
"""


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _end(proc: subprocess.Popen[Any], group: bool = False) -> None:
    """Stop a process this test started: SIGTERM, then SIGKILL (to its process group if it has one)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=15)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if group:
            os.killpg(proc.pid, signal.SIGKILL)
        elif proc.poll() is None:
            proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


@pytest.fixture
def ray_head() -> Iterator[tuple[str, dict[str, str]]]:
    """A private 8-CPU Ray head on 127.0.0.1 (its own ports, folder and token); yields (address, env).

    Torn down by signalling the process group it runs in (never ``ray stop``, which would stop
    every Ray on the machine)."""
    root = Path(tempfile.mkdtemp(prefix="tfg-rl-"))  # short: Ray's socket paths must stay < 108 bytes
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
        "RAY_USAGE_STATS_ENABLED": "0",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
    }
    ports = _free_ports(6)
    cmd = [str(BIN / "ray"), "start", "--head", "--port", str(ports[0]), "--temp-dir", str(root / "t")]
    cmd += ["--include-dashboard", "false", "--dashboard-port", str(ports[1]), "--block"]
    cmd += ["--num-cpus", str(2 * WORKERS_PER_COORDINATOR), "--node-ip-address", "127.0.0.1"]
    cmd += ["--disable-usage-stats", "--dashboard-agent-listen-port", str(ports[2])]
    cmd += ["--dashboard-agent-grpc-port", str(ports[3]), "--metrics-export-port", str(ports[4])]
    cmd += ["--runtime-env-agent-port", str(ports[5])]
    log = root / "head.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=out, start_new_session=True)
    try:
        _wait(lambda: "Ray runtime started" in log.read_text(errors="replace") or proc.poll() is not None, 90)
        assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
        yield f"127.0.0.1:{ports[0]}", env
    finally:
        _end(proc, group=True)
        shutil.rmtree(root, ignore_errors=True)


def _wait(predicate: Callable[[], bool], timeout: float, what: str = "a condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@dataclass
class Coordinator:
    """A coordinator process running searches one after the other; its report lines, as they come."""

    proc: subprocess.Popen[str]
    log: Path
    lines: list[dict[str, Any]] = field(default_factory=list)
    reader: threading.Thread | None = None

    @classmethod
    def start(
        cls, url: str, address: str, env: dict[str, str], markers: Path, gates: Path, plan: list[str]
    ) -> Coordinator:
        """Start ``plan``'s searches in a new process (each after the first waits for ``gates/NAME``);
        its stderr (Ray's worker logs too) goes to a file, so that no pipe fills up."""
        markers.mkdir(exist_ok=True)
        log = markers.parent / f"coordinator-{len(list(markers.parent.glob('coordinator-*')))}.log"
        cmd = [sys.executable, "-c", COORDINATOR, url, address, str(markers), str(gates), json.dumps(plan)]
        with open(log, "w") as err:
            proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=err, text=True)
        coordinator = cls(proc, log)
        coordinator.reader = threading.Thread(target=coordinator._read, daemon=True)
        coordinator.reader.start()
        return coordinator

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with contextlib.suppress(json.JSONDecodeError):
                self.lines.append(json.loads(line))

    def done(self, study: str) -> bool:
        """Whether the process reported ``study`` finished (AssertionError if it failed)."""
        if any(line["study"] == study for line in self.lines):
            return True
        if self.proc.poll() is not None:
            raise AssertionError(f"coordinator exited with {self.proc.returncode}: {self.tail()}")
        return False

    def finish(self, timeout: float = 120) -> None:
        """Wait for the process to end well."""
        self.proc.wait(timeout=timeout)
        assert self.proc.returncode == 0, self.tail()
        if self.reader is not None:
            self.reader.join(timeout=5)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


@dataclass
class Readers:
    """optuna-dashboard WSGI apps polling the database from threads, as dashboards would."""

    url: str
    n: int = 2
    polls: int = 0
    errors: list[str] = field(default_factory=list)
    seen: dict[str, int] = field(default_factory=dict)  # study -> most trials a reader saw
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Readers:
        self.threads = [threading.Thread(target=self._poll, args=(i,), daemon=True) for i in range(self.n)]
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)

    def _poll(self, index: int) -> None:
        import optuna
        import webtest
        from optuna_dashboard import wsgi

        app = webtest.TestApp(wsgi(optuna.storages.RDBStorage(self.url)))
        turn = index
        while not self.stop.is_set():
            try:
                studies = app.get("/api/studies").json["study_summaries"]
                if studies:  # one study's detail (all its trials) per poll, in turn
                    s = studies[turn % len(studies)]
                    detail = app.get(f"/api/studies/{s['study_id']}").json
                    name = s["study_name"]
                    self.seen[name] = max(self.seen.get(name, 0), len(detail["trials"]))
                    turn += 1
                self.polls += 1
            except Exception as err:  # a failed read is what this test is about: keep it
                self.errors.append(f"{type(err).__name__}: {err}"[:300])
            self.stop.wait(0.3)


def _states(url: str, study: str) -> dict[str, list[int]]:
    """Trial numbers of a study by state, straight from the database (cheap enough to poll)."""
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT t.number, t.state FROM trials t JOIN studies s ON s.study_id = t.study_id "
            "WHERE s.study_name = %s",
            (study,),
        ).fetchall()
    out: dict[str, list[int]] = {}
    for number, state in rows:
        out.setdefault(str(getattr(state, "name", state)), []).append(number)
    return out


def _search_configs(records: Sequence[Any]) -> list[tuple[tuple[str, Any], ...]]:
    from optuna.trial import TrialState

    return [
        tuple(sorted(r.params.items()))
        for r in records
        if r.role == "search" and r.state == TrialState.COMPLETE
    ]


def _check_search(url: str, name: str, serial: dict[str, Any]) -> dict[str, int]:
    """No trial RUNNING, no configuration twice, nothing lost, the serial run's best; the counts."""
    from optuna.trial import TrialState

    from tfg_search.store.query import load_best
    from tfg_search.store.studies import load_search

    records = load_search(url, name).records()
    running = [r.number for r in records if not r.state.is_finished()]
    assert running == [], f"search {name}: trials left unfinished: {running}"
    searched = _search_configs(records)
    duplicates = len(searched) - len(set(searched))
    assert duplicates == 0, f"search {name}: a configuration was evaluated twice"
    lost = len(set(serial["search"]) - set(searched)) + len(set(searched) - set(serial["search"]))
    assert lost == 0, f"search {name}: search configurations differ from the serial run's"
    finals = [r for r in records if r.role == "final" and r.state == TrialState.COMPLETE]
    sources = sorted(tuple(sorted(r.params.items())) for r in finals)
    assert sources == serial["finals"], f"search {name}: other final re-runs than the serial run"
    config, metrics = load_best(url, name)
    assert (config, metrics) == serial["best"], f"search {name}: another best than the serial run"
    return {"trials": len(records), "duplicates": duplicates, "lost": lost, "running": len(running)}


def _serial(tmp_path: Path, name: str) -> dict[str, Any]:
    """The reference: the same search with the same seed, one trial at a time, in this process."""
    from optuna.trial import TrialState

    from tfg_search.run.coordinator import run_search
    from tfg_search.store.query import load_best
    from tfg_search.store.studies import load_search

    url = f"sqlite:///{tmp_path}/serial-{name}.db"
    markers = tmp_path / "serial-markers"
    markers.mkdir(exist_ok=True)
    run_search(load_settings(*SEARCHES[name]), url, "serial", SerialExecutor(str(markers)))
    records = load_search(url, "serial").records()
    finals = [r for r in records if r.role == "final" and r.state == TrialState.COMPLETE]
    return {
        "search": _search_configs(records),
        "finals": sorted(tuple(sorted(r.params.items())) for r in finals),
        "best": load_best(url, "serial"),
    }


def _span(url: str, names: Sequence[str]) -> tuple[int, float]:
    """Trials of these searches (search trials and finals) and the seconds from the first start to the
    last end."""
    import optuna

    from tfg_search.store.layout import search_study_name

    trials = [
        t
        for name in names
        for study in (name, search_study_name(name))
        for t in optuna.load_study(study_name=study, storage=url).trials
    ]
    start = min(t.datetime_start for t in trials if t.datetime_start)
    end = max(t.datetime_complete for t in trials if t.datetime_complete)
    return len(trials), (end - start).total_seconds()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_two_coordinators_eight_workers_and_dashboards_lose_nothing(
    fresh_postgres_url: str, ray_head: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    import optuna
    from optuna.trial import TrialState

    from tfg_search.store.studies import load_search

    began = time.monotonic()
    url = fresh_postgres_url
    address, env = ray_head
    optuna.storages.RDBStorage(url)  # Optuna's tables, created once (as a deployment does)
    first_markers, second_markers, gates = tmp_path / "m1", tmp_path / "m2", tmp_path / "gates"
    gates.mkdir()
    with Readers(url) as readers:
        first = Coordinator.start(url, address, env, first_markers, gates, ["A", "C"])
        second = Coordinator.start(url, address, env, second_markers, gates, ["B", "D"])
        coordinators = [first, second]
        try:
            # Phase 1, undisturbed: A and B run side by side.
            _wait(lambda: first.done("A") and second.done("B"), 150, "searches A and B")
            phase1_done = time.monotonic()
            (gates / "C").touch()
            (gates / "D").touch()

            # Phase 2, faults: kill one worker of the first coordinator while it runs C, then the
            # second coordinator while it runs D's search (some trials done, some running).
            def count(study: str, state: str) -> int:
                return len(_states(url, study).get(state, []))

            _wait(lambda: count("C:search", "COMPLETE") >= 3, 60, "C under way")
            victims = [int(p.name) for p in first_markers.iterdir() if _alive(int(p.name))]
            assert victims, "the first coordinator's workers should be running"
            os.kill(victims[0], signal.SIGKILL)
            _wait(
                lambda: count("D:search", "COMPLETE") >= 8 and count("D:search", "RUNNING") >= 1,
                60,
                "D's search under way",
            )
            os.kill(second.proc.pid, signal.SIGKILL)
            second.proc.wait(timeout=30)
            left_running = _states(url, "D:search").get("RUNNING", [])
            assert left_running, "the killed coordinator should leave RUNNING trials"
            restarted = Coordinator.start(url, address, env, second_markers, gates, ["D"])
            coordinators.append(restarted)
            first.finish()
            restarted.finish()
            assert [line["resumed"] for line in restarted.lines] == [True]
        finally:
            for c in coordinators:
                _end(c.proc)
    faults_done = time.monotonic()
    phase1_trials, phase1_s = _span(url, ["A", "B"])

    assert readers.errors == [], readers.errors[:3]
    assert readers.polls >= 10 and set(readers.seen) >= {"A", "B"}, (readers.polls, readers.seen)

    serial = {"A": _serial(tmp_path, "A"), "B": _serial(tmp_path, "B")}
    serial_done = time.monotonic()
    reference = {"A": "A", "B": "B", "C": "A", "D": "B"}  # C and D repeat A's and B's settings
    counts = {name: _check_search(url, name, serial[reference[name]]) for name in SEARCHES}

    records_c = load_search(url, "C").records()
    retried = [r.number for r in records_c if r.attempts == 2]
    assert retried, "a trial of the killed worker should have been run again on a fresh actor"
    assert all(r.state == TrialState.COMPLETE for r in records_c if r.attempts == 2)
    records_d = {r.number: r for r in load_search(url, "D").records() if r.role == "search"}
    # what the killed coordinator was evaluating is re-run in place by the restarted one (0.3:
    # exact resume), each in its own trial, with its own configuration, counted as an interruption
    interrupted = sorted(n for n, r in records_d.items() if r.interruptions)
    assert interrupted == sorted(left_running)
    claims = {
        t.number: (t.system_attrs.get("TFGBeamSampler:claim") or {}).get("key")
        for t in optuna.load_study(study_name="D:search", storage=url).trials
    }
    for n in interrupted:
        assert records_d[n].ok
        same = [r.number for r in records_d.values() if claims[r.number] == claims[n] and r.ok]
        assert same == [n]  # evaluated once: in its own trial, not again in a later one

    figures = {
        "what": "tests/test_load.py: 2 coordinator processes x 4 Ray workers (8 in all, one Ray head), "
        "PostgreSQL, 2 optuna-dashboard readers polling; trials of ~10 ms (no model)",
        "searches": len(SEARCHES),
        "trials": sum(c["trials"] for c in counts.values()),
        "undisturbed": {
            "searches": ["A", "B"],
            "trials": phase1_trials,
            "span_s": round(phase1_s, 2),
            "trials_per_s": round(phase1_trials / phase1_s, 2),
        },
        "dashboard": {"readers": readers.n, "polls": readers.polls, "errors": len(readers.errors)},
        "failures_survived": {
            "ray_worker_kill9": 1,
            "trials_rerun_on_a_fresh_worker": len(retried),
            "coordinator_kill9": 1,
            "trials_interrupted_and_rerun_in_place": len(interrupted),
        },
        "duplicates": sum(c["duplicates"] for c in counts.values()),
        "lost": sum(c["lost"] for c in counts.values()),
        "running_left": sum(c["running"] for c in counts.values()),
        "same_best_as_serial": True,
        "wall_s": {
            "start_and_undisturbed": round(phase1_done - began, 1),
            "faults_and_resume": round(faults_done - phase1_done, 1),
            "serial_references": round(serial_done - faults_done, 1),
            "test_body": round(time.monotonic() - began, 1),
        },
        "load_average": os.getloadavg(),
    }
    if os.environ.get("TFG_WRITE_LOAD_RESULTS", "").strip() not in ("", "0"):
        data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
        data["load"] = figures
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(data, indent=2) + "\n")

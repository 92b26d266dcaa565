"""The study lease: refuse a live holder, take over a dead one (same host: process gone; else stale)."""

from __future__ import annotations

import subprocess
import sys
import time

import optuna
import pytest

from tfg_search.errors import TFGSearchError
from tfg_search.store.lease import LEASE_ATTR, StudyLease, read_lease


@pytest.fixture
def study(tmp_storage_url: str) -> optuna.Study:
    return optuna.create_study(storage=tmp_storage_url, study_name="leased")


def _fake(study: optuna.Study, host: str, pid: int, heartbeat: float) -> None:
    study._storage.set_study_system_attr(
        study._study_id,
        LEASE_ATTR,
        {
            "holder": "other",
            "host": host,
            "pid": pid,
            "since": "2026-01-01T00:00:00+00:00",
            "heartbeat": heartbeat,
        },
    )


def test_second_holder_is_refused_and_release_frees(study: optuna.Study) -> None:
    first = StudyLease(study, settle=0.01).acquire()
    with pytest.raises(TFGSearchError, match=r"is being run by process \d+ on .* since "):
        StudyLease(study, settle=0.01).acquire()
    first.release()
    assert read_lease(study) is None
    with StudyLease(study, settle=0.01) as second:
        assert second.holds() and second.previous is None


def test_dead_local_process_is_taken_over_at_once(study: optuna.Study) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # a pid that no longer runs
    _fake(study, __import__("socket").gethostname(), proc.pid, time.time())
    with StudyLease(study, settle=0.01) as lease:
        assert lease.previous is not None and lease.previous.pid == proc.pid


def test_other_host_is_live_until_its_heartbeat_is_stale(study: optuna.Study) -> None:
    _fake(study, "elsewhere", 1, time.time())
    with pytest.raises(TFGSearchError, match="on elsewhere since 2026-01-01"):
        StudyLease(study, ttl=30, settle=0.01).acquire()
    _fake(study, "elsewhere", 1, time.time() - 31)
    with StudyLease(study, ttl=30, settle=0.01) as lease:
        assert lease.previous is not None and lease.previous.host == "elsewhere"


def test_heartbeat_advances(study: optuna.Study) -> None:
    with StudyLease(study, ttl=0.3, settle=0.01) as lease:
        first = read_lease(study).heartbeat
        time.sleep(0.35)
        assert read_lease(study).heartbeat > first and lease.holds()

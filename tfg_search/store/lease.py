"""A study lease: one live launcher per study, across processes and machines.

The holder writes ``{holder, host, pid, since, heartbeat}`` into a study system attr and refreshes
the heartbeat from a background thread. Another launcher refuses while the holder is alive, saying
who holds it and since when. A holder is dead when its heartbeat is older than ``ttl`` seconds, or
(on the same host) when its process no longer exists, so a launcher killed with ``kill -9`` is
taken over at once by the next one started on the same machine.

Acquiring writes, waits ``settle`` seconds and reads back: of two launchers that start together,
the later writer keeps the lease and the other refuses.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import optuna

from searchers import optuna_internals
from tfg_search.errors import TFGSearchError

LEASE_ATTR = "tfg_search:lease"


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (killed, not yet reaped) is dead for our purposes
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


@dataclass(frozen=True)
class LeaseInfo:
    """Who holds a study."""

    holder: str
    host: str
    pid: int
    since: str
    heartbeat: float

    def alive(self, ttl: float, now: float | None = None) -> bool:
        """Whether the holder still runs (fresh heartbeat, and its process exists if local)."""
        now = time.time() if now is None else now
        if now - self.heartbeat > ttl:
            return False
        if self.host == socket.gethostname():
            return _process_alive(self.pid)
        return True

    def describe(self) -> str:
        return f"process {self.pid} on {self.host} since {self.since}"


def read_lease(study: optuna.Study) -> LeaseInfo | None:
    """The lease stored in the study, if any."""
    raw: Any = optuna_internals.study_system_attrs(study).get(LEASE_ATTR)
    if not isinstance(raw, dict) or not raw.get("holder"):
        return None
    return LeaseInfo(raw["holder"], raw["host"], int(raw["pid"]), raw["since"], float(raw["heartbeat"]))


class StudyLease:
    """Hold a study while a launcher runs it (a context manager).

    Args:
        study: the study to hold.
        ttl: seconds without heartbeat after which a holder counts as dead.
        settle: seconds to wait between writing the lease and confirming it.

    Attributes:
        previous: the dead holder taken over, if any (its RUNNING trials are stale).
    """

    def __init__(self, study: optuna.Study, ttl: float = 30.0, settle: float = 0.2) -> None:
        self.study = study
        self.ttl = ttl
        self.settle = settle
        self.previous: LeaseInfo | None = None
        now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()
        self.info = LeaseInfo(uuid.uuid4().hex, socket.gethostname(), os.getpid(), now, time.time())
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _write(self, info: LeaseInfo | None) -> None:
        value = None if info is None else dict(info.__dict__)
        optuna_internals.set_study_system_attr(self.study, LEASE_ATTR, value)

    def acquire(self) -> StudyLease:
        """Take the lease, or raise TFGSearchError naming the live holder."""
        current = read_lease(self.study)
        if current is not None and current.holder != self.info.holder and current.alive(self.ttl):
            raise TFGSearchError(
                f"study {self.study.study_name!r} is being run by {current.describe()}; "
                "wait for it to finish or stop it (a dead holder is taken over automatically)"
            )
        self.previous = current
        self._write(self._beat())
        time.sleep(self.settle)
        confirmed = read_lease(self.study)
        if confirmed is None or confirmed.holder != self.info.holder:
            who = confirmed.describe() if confirmed else "another launcher"
            raise TFGSearchError(f"study {self.study.study_name!r} was just taken by {who}; try again later")
        self._thread = threading.Thread(target=self._run, name="tfg-lease", daemon=True)
        self._thread.start()
        return self

    def _beat(self) -> LeaseInfo:
        self.info = LeaseInfo(self.info.holder, self.info.host, self.info.pid, self.info.since, time.time())
        return self.info

    def _run(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                current = read_lease(self.study)
                if current is None or current.holder != self.info.holder:
                    return  # taken over (we were presumed dead); the coordinator will find out
                self._write(self._beat())
            except Exception:  # a transient database error: try again at the next beat
                continue

    def holds(self) -> bool:
        """Whether this launcher still holds the lease."""
        current = read_lease(self.study)
        return current is not None and current.holder == self.info.holder

    def release(self) -> None:
        """Stop the heartbeat and clear the lease (if still ours)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            if self.holds():
                self._write(None)
        except Exception:
            pass

    def __enter__(self) -> StudyLease:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

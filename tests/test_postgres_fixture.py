"""The throwaway PostgreSQL fixtures: Optuna studies on them, two processes sharing one, real auth."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import optuna
import psycopg
import pytest
import sqlalchemy as sa

from tests.helpers.pg import PostgresServer

pytestmark = pytest.mark.postgres

_WORKER = textwrap.dedent(
    """
    import sys
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name="shared", storage=sys.argv[1])
    study.optimize(lambda t: (t.suggest_float("x", -1.0, 1.0) - 0.25) ** 2, n_trials=int(sys.argv[2]))
    """
)


def test_url_shape(postgres_server: PostgresServer, postgres_url: str) -> None:
    url = sa.make_url(postgres_url)
    assert url.drivername == "postgresql+psycopg"
    assert (url.host, url.port, url.database) == ("127.0.0.1", postgres_server.port, "tfg")
    assert url.password == postgres_server.password and len(postgres_server.password) >= 16
    assert postgres_server.password not in repr(postgres_server)


def test_optuna_study_round_trip(fresh_postgres_url: str) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="round-trip", storage=fresh_postgres_url, direction="minimize")
    study.optimize(lambda t: t.suggest_float("x", 0.0, 1.0) ** 2, n_trials=5)
    loaded = optuna.load_study(study_name="round-trip", storage=fresh_postgres_url)
    assert len(loaded.trials) == 5
    assert loaded.best_value == min(t.value for t in study.trials)


def test_two_processes_share_a_study(fresh_postgres_url: str) -> None:
    optuna.create_study(study_name="shared", storage=fresh_postgres_url)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, fresh_postgres_url, "6"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    trials = optuna.load_study(study_name="shared", storage=fresh_postgres_url).trials
    assert len(trials) == 12
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert sorted(t.number for t in trials) == list(range(12))


def test_fresh_databases_are_distinct_and_empty(postgres_server: PostgresServer) -> None:
    first, second = postgres_server.create_database(), postgres_server.create_database()
    assert first != second
    optuna.create_study(study_name="only-in-first", storage=first)
    assert optuna.get_all_study_names(storage=first) == ["only-in-first"]
    assert optuna.get_all_study_names(storage=second) == []


def test_password_is_enforced(postgres_server: PostgresServer) -> None:
    kwargs = {"host": postgres_server.host, "port": postgres_server.port, "dbname": "tfg"}
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(user=postgres_server.user, password="wrong", **kwargs).close()
    with psycopg.connect(user=postgres_server.user, password=postgres_server.password, **kwargs) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == ("tfg",)

"""Shared pytest fixtures: study storage URLs (SQLite in tmp_path, a throwaway PostgreSQL server).

PostgreSQL fixtures start one private server per test session on first use (about a second; see
tests/helpers/pg.py). Without server binaries those tests are skipped, or fail when
``TFG_REQUIRE_POSTGRES=1`` (as ``make test`` sets). Tests marked ``cuda`` are skipped where torch has no
CUDA device (``benchmarks/gpu_check.py`` runs them on a GPU machine).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.pg import PostgresServer, PostgresUnavailable, postgres_required

_POSTGRES_FIXTURES = frozenset({"postgres_server", "postgres_url", "fresh_postgres_url"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark tests that use a PostgreSQL fixture with ``postgres``, so ``-m "not postgres"`` skips them;
    skip the tests marked ``cuda`` where this torch has no CUDA device."""
    for item in items:
        if _POSTGRES_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.postgres)
    cuda_tests = [item for item in items if item.get_closest_marker("cuda") is not None]
    if cuda_tests:
        import torch

        if not torch.cuda.is_available():
            skip = pytest.mark.skip(reason="needs a CUDA device (benchmarks/gpu_check.py on a GPU machine)")
            for item in cuda_tests:
                item.add_marker(skip)


@pytest.fixture
def tmp_storage_url(tmp_path: Path) -> str:
    """An Optuna storage URL of a new SQLite file: ``sqlite:///<tmp_path>/studies.db``."""
    return f"sqlite:///{tmp_path}/studies.db"


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """The session's private PostgreSQL server (``.url()``, ``.create_database()``, ``.password``)."""
    try:
        server = PostgresServer.start()
    except PostgresUnavailable as err:
        if postgres_required():
            pytest.fail(f"TFG_REQUIRE_POSTGRES=1 but PostgreSQL could not be started: {err}", pytrace=False)
        pytest.skip(f"PostgreSQL not available: {err}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_url(postgres_server: PostgresServer) -> str:
    """``postgresql+psycopg://tfg_test:<password>@127.0.0.1:<port>/tfg``, shared by the whole session."""
    return postgres_server.url()


@pytest.fixture
def fresh_postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A new empty database on the session's server for one test (about 30 ms); dropped afterwards."""
    url = postgres_server.create_database()
    yield url
    postgres_server.drop_database(url.rsplit("/", 1)[1], wait=False)

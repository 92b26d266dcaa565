"""Where studies live: SQLAlchemy URLs opened as Optuna RDB storage, and queries of the results.

Default: an SQLite file ``tfg-studies.db`` in the current folder; ``--storage`` or the environment
variable ``TFG_SEARCH_STORAGE`` give another URL (e.g. ``postgresql+psycopg://user:pw@host/db``).
URLs are only ever shown through :func:`redact` (no password). The database is plain Optuna: the
optuna CLI and optuna-dashboard read it unchanged. The URL handling and the checked connection
are in :mod:`tfg_search.store.database` (without Optuna; re-exported here), the query commands' direct
reads in :mod:`tfg_search.store.query`.

Example:
    >>> redact("postgresql+psycopg://tfg:secret@db:5432/tfg")
    'postgresql+psycopg://tfg:***@db:5432/tfg'
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import optuna
import sqlalchemy

from tfg_search.errors import TFGSearchError
from tfg_search.guidance.config import TFGConfig
from tfg_search.store.database import (
    DEFAULT_STORAGE,
    MAX_STUDY_NAME,
    STORAGE_ENV,
    check_study_name,
    connection,
    is_sqlite_file,
    redact,
    resolve_storage,
)
from tfg_search.store.record import (
    BEAM,
    FINAL,
    LAYOUT,
    SEARCH_SUFFIX,
    STUDY_ATTR,
    TrialRecord,
    best,
    read_all,
    search_study_name,
)

__all__ = [
    "DEFAULT_STORAGE",
    "MAX_STUDY_NAME",
    "STORAGE_ENV",
    "SearchStudies",
    "check_study_name",
    "list_searches",
    "load_best",
    "load_search",
    "load_study",
    "open_storage",
    "redact",
    "resolve_storage",
    "study_info",
]


def open_storage(url: str | None, *, create: bool) -> optuna.storages.RDBStorage:
    """Open the study database.

    Args:
        url: an SQLAlchemy URL (None: :func:`resolve_storage`).
        create: create the database and Optuna's tables if missing (the launcher); False for
            commands that only read, which then refuse a missing database or one without
            Optuna's tables, writing nothing.

    Raises:
        TFGSearchError: malformed URL, missing driver, unreachable server, a file that is not a
            database, or (create=False) a database that holds no studies.
    """
    with connection(url, create=create):  # the checks, and their messages
        pass
    raw = resolve_storage(url)
    shown = redact(raw)
    for attempt in range(3):
        try:
            # Reading commands skip Optuna's schema check: it imports alembic (a third of a query's
            # start-up); the launcher (create=True) still checks before it writes.
            storage = optuna.storages.RDBStorage(
                raw, skip_table_creation=not create, skip_compatibility_check=not create
            )
            break
        except Exception as err:
            # Two launchers creating Optuna's tables in an empty database at once collide on
            # PostgreSQL (a unique violation); the loser finds the tables on a second try.
            if attempt == 2:
                raise TFGSearchError(
                    f"cannot open storage {shown} as an Optuna database: {type(err).__name__}"
                ) from None
            time.sleep(0.2 * (attempt + 1))
    if is_sqlite_file(raw):
        _tune_sqlite(storage)
    return storage


def _tune_sqlite(storage: optuna.storages.RDBStorage) -> None:
    """Write-ahead logging: commits cost a fraction of the rollback journal's, and readers (the
    dashboard, ``tfg-search best``) never block the launcher. ``synchronous=NORMAL`` keeps the
    file consistent on power loss; at worst the last trials are lost, and a resumed search
    evaluates them again."""

    def pragmas(dbapi_conn: Any, _record: Any) -> None:
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    sqlalchemy.event.listen(storage.engine, "connect", pragmas)
    storage.engine.dispose()  # connections opened before the listener get it when reopened


def load_study(storage: optuna.storages.BaseStorage | str | None, study_name: str) -> optuna.Study:
    """An existing study, or a TFGSearchError listing the studies that exist."""
    if not isinstance(storage, optuna.storages.BaseStorage):
        storage = open_storage(storage, create=False)
    try:
        return optuna.load_study(
            study_name=study_name, storage=storage, sampler=optuna.samplers.RandomSampler()
        )
    except KeyError:
        names = [s.study_name for s in storage.get_all_studies() if not s.study_name.endswith(SEARCH_SUFFIX)]
        listed = ", ".join(names) if names else "none"
        raise TFGSearchError(f"no study named {study_name!r} in this storage; studies: {listed}") from None


def study_info(study: optuna.Study) -> dict[str, Any]:
    """What a tfg-search study is (task, target, method, settings); refuses foreign studies."""
    info = study.user_attrs.get(STUDY_ATTR)
    if not isinstance(info, dict) or "settings" not in info:
        raise TFGSearchError(
            f"study {study.study_name!r} was not made by tfg-search (no {STUDY_ATTR!r} attr)"
        )
    return info


@dataclass
class SearchStudies:
    """The studies of one search: ``main`` holds the answer (final re-runs), ``search`` the beam.

    For a study written before layout 2 (:mod:`tfg_search.store.record`) both are the same study.
    """

    main: optuna.Study
    search: optuna.Study

    @property
    def name(self) -> str:
        return self.main.study_name

    @property
    def legacy(self) -> bool:
        """One study holds beam and final trials (written before layout 2)."""
        return self.main is self.search

    @property
    def info(self) -> dict[str, Any]:
        return study_info(self.main)

    def records(self) -> list[TrialRecord]:
        """Every trial of the search: beam trials first, then the final re-runs."""
        if self.legacy:
            return read_all(self.main)
        return read_all(self.search, role=BEAM) + read_all(self.main, role=FINAL)

    def best(self) -> TrialRecord:
        """The reported best (:func:`tfg_search.store.record.best`), or TFGSearchError before any result."""
        found = best(self.records())
        if found is None:
            raise TFGSearchError(f"study {self.name!r} has no completed trial yet")
        return found


def load_search(
    storage: optuna.storages.BaseStorage | str | None,
    study_name: str,
    sampler: optuna.samplers.BaseSampler | None = None,
) -> SearchStudies:
    """The studies of the search ``study_name`` (the name of its main study, or of its search study).

    ``sampler`` is given to the search study (the coordinator's beam sampler; default random: reading).

    Raises:
        TFGSearchError: no such study, or one not made by tfg-search.
    """
    if not isinstance(storage, optuna.storages.BaseStorage):
        storage = open_storage(storage, create=False)
    main = load_study(storage, study_name)
    info = study_info(main)
    if info.get("role") == "search" and info.get("main_study"):
        main = load_study(storage, info["main_study"])
        info = study_info(main)
    if info.get("layout", 1) < LAYOUT:
        if sampler is not None:
            main = optuna.load_study(study_name=main.study_name, storage=storage, sampler=sampler)
        return SearchStudies(main, main)
    search = optuna.load_study(
        study_name=search_study_name(main.study_name),
        storage=storage,
        sampler=sampler or optuna.samplers.RandomSampler(),
    )
    return SearchStudies(main, search)


def load_best(storage: str | None, study_name: str) -> tuple[TFGConfig, dict[str, float]]:
    """The best configuration of a study and its metrics (from the final re-run when there is one).

    Example:
        >>> cfg, metrics = load_best("sqlite:///tfg-studies.db", "digits-3-tfg-1a2b3c4d")  # doctest: +SKIP
        >>> metrics["validity"]  # doctest: +SKIP
        0.92
    """
    found = load_search(storage, study_name).best()
    return found.tfg_config(), dict(found.metrics or {})


def list_searches(storage: optuna.storages.BaseStorage) -> list[dict[str, Any]]:
    """One row per search in ``storage``: study, task, target, method, trials, best score, finished.

    Search studies (``N:search``) are listed with their main study, not on their own; studies not
    made by tfg-search are listed with empty fields. Few queries per study (the best and the trial
    counts come from the database, not from reading every trial), so this stays fast for many and
    large studies.
    """
    summaries = storage.get_all_studies()
    ids = {s.study_name: storage.get_study_id_from_name(s.study_name) for s in summaries}
    rows = []
    for s in summaries:
        info = s.user_attrs.get(STUDY_ATTR)
        if isinstance(info, dict) and info.get("role") == "search":
            continue
        if not isinstance(info, dict) or "settings" not in info:
            rows.append(
                {
                    "study": s.study_name,
                    "task": None,
                    "target": None,
                    "method": None,
                    "trials": storage.get_n_trials(ids[s.study_name]),
                    "best": None,
                    "finished": False,
                }
            )
            continue
        if info.get("layout", 1) >= LAYOUT:
            main_id, search_id = ids[s.study_name], ids.get(search_study_name(s.study_name))
            n = storage.get_n_trials(main_id) + (
                storage.get_n_trials(search_id) if search_id is not None else 0
            )
            best_value = _best_value(storage, main_id)
            finished = best_value is not None
            if best_value is None and search_id is not None:
                best_value = _best_value(storage, search_id)
        else:
            records = read_all(load_study(storage, s.study_name))
            n = len(records)
            found = best(records)
            best_value = found.value if found is not None else None
            finished = found is not None and found.role == FINAL
        rows.append(
            {
                "study": s.study_name,
                "task": info.get("task"),
                "target": info.get("target"),
                "method": info.get("method"),
                "trials": n,
                "best": best_value,
                "finished": finished,
            }
        )
    return rows


def _best_value(storage: optuna.storages.BaseStorage, study_id: int) -> float | None:
    try:
        return float(storage.get_best_trial(study_id).value)  # type: ignore[arg-type]
    except ValueError:  # no completed trial yet
        return None

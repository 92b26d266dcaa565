"""The two Optuna studies of a search, on the study database opened as Optuna RDB storage.

Default storage: an SQLite file ``tfg-studies.db`` in the current folder; ``--storage`` or the
environment variable ``TFG_SEARCH_STORAGE`` give another URL (e.g.
``postgresql+psycopg://user:pw@host/db``). URLs are only ever shown through
:func:`~tfg_search.store.database.redact` (no password). The database is plain Optuna: the optuna
CLI and optuna-dashboard read it unchanged. The URL handling and the checked connection are in
:mod:`tfg_search.store.database` (without Optuna); reading results is :mod:`tfg_search.store.query`.

Example:
    >>> studies = load_search("sqlite:///tfg-studies.db", "digits-3-tfg-1a2b3c4d")  # doctest: +SKIP
    >>> studies.best().tfg_config()  # doctest: +SKIP
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import optuna
import sqlalchemy

from tfg_search.errors import TFGSearchError
from tfg_search.store.database import check_file, connection, is_sqlite_file, redact, resolve_storage
from tfg_search.store.layout import (
    FINAL,
    SEARCH,
    SEARCH_SUFFIX,
    STUDY_ATTR,
    SUMMARY_ATTR,
    StudyInfo,
    search_study_name,
)
from tfg_search.store.record import TrialRecord, read_all
from tfg_search.store.summary import migrate_hint

__all__ = ["SearchStudies", "load_search", "load_study", "open_storage", "save_info", "study_info"]


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
    raw = resolve_storage(url)
    shown = redact(raw)
    if not create:  # reading: one engine, no write (the checks run only to say why it failed)
        check_file(url, create=False)
        try:
            return optuna.storages.RDBStorage(raw, skip_table_creation=True, skip_compatibility_check=True)
        except Exception:
            with connection(url, create=False):  # raises with the reason, when there is one
                pass
            raise TFGSearchError(f"cannot open storage {shown} as an Optuna database") from None
    with connection(url, create=create):  # the checks, and their messages
        pass
    for attempt in range(3):
        try:
            storage = optuna.storages.RDBStorage(raw)
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


def study_info(study: optuna.Study) -> StudyInfo:
    """What a tfg-search study is (:class:`~tfg_search.store.layout.StudyInfo`); refuses foreign studies."""
    info = StudyInfo.of(study)
    if info is None:
        raise TFGSearchError(
            f"study {study.study_name!r} was not made by tfg-search (no {STUDY_ATTR!r} attr)"
        )
    return info


def save_info(study: optuna.Study, info: StudyInfo) -> None:
    """Store what ``study`` is: its short :data:`~tfg_search.store.layout.SUMMARY_ATTR` user attr,
    then the info itself as its :data:`~tfg_search.store.layout.STUDY_ATTR` system attr (last: a
    study with its info is made). A study of tfg-search 0.1-0.3 keeps its own user attr of the
    info as it was (nothing a user stored is rewritten); it is read no more once this one is
    written."""
    from searchers import optuna_internals  # (the writers' import: the read-only commands skip it)

    study.set_user_attr(SUMMARY_ATTR, info.summary())
    optuna_internals.set_study_system_attr(study, STUDY_ATTR, info.attr())


@dataclass
class SearchStudies:
    """The studies of one search: ``main`` holds the answer (final re-runs), ``search`` the search;
    ``engine``: the database's, where the search's summary row is written (None: a storage in
    memory, which keeps none)."""

    main: optuna.Study
    search: optuna.Study
    engine: sqlalchemy.Engine | None = None

    @property
    def name(self) -> str:
        return self.main.study_name

    @property
    def info(self) -> StudyInfo:
        return study_info(self.main)

    def parts(self) -> list[tuple[optuna.Study, str]]:
        """Each study of the search with the role of its trials, in record order."""
        return [(self.search, SEARCH), (self.main, FINAL)]

    def records(self) -> list[TrialRecord]:
        """Every trial of the search: the search's trials first, then the final re-runs."""
        return [r for study, role in self.parts() for r in read_all(study, role=role)]

    def __getstate__(self) -> dict[str, Any]:
        # An engine does not pickle (Ray Tune pickles its searcher, which holds these studies):
        # its URL travels instead, as Optuna's RDBStorage pickles its own.
        state = dict(self.__dict__)
        engine = state.pop("engine")
        state["engine_url"] = None if engine is None else engine.url.render_as_string(hide_password=False)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        url = state.pop("engine_url")
        self.__dict__.update(state)
        self.engine = (
            None if url is None else sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
        )


def load_search(
    storage: optuna.storages.BaseStorage | str | None,
    study_name: str,
    sampler: optuna.samplers.BaseSampler | None = None,
) -> SearchStudies:
    """The studies of the search ``study_name`` (the name of its main study, or of its search study).

    ``sampler`` is given to the search study (the search's sampler; default random: reading).

    Raises:
        TFGSearchError: no such study, one not made by tfg-search, or one of tfg-search 0.1 (not
            migrated: the message says to run ``tfg-search migrate``).
    """
    if not isinstance(storage, optuna.storages.BaseStorage):
        storage = open_storage(storage, create=False)
    main = load_study(storage, study_name)
    info = study_info(main)
    if info.is_search_study and info.main_study:
        main = load_study(storage, info.main_study)
        info = study_info(main)
    if info.layout < 2:
        raise TFGSearchError(migrate_hint(main.study_name, info.layout, None))
    search = optuna.load_study(
        study_name=search_study_name(main.study_name),
        storage=storage,
        sampler=sampler or optuna.samplers.RandomSampler(),
    )
    return SearchStudies(main, search, getattr(storage, "engine", None))

"""Where studies live: SQLAlchemy URLs opened as Optuna RDB storage, and queries of the results.

Default: an SQLite file ``tfg-studies.db`` in the current folder; ``--storage`` or the environment
variable ``TFG_SEARCH_STORAGE`` give another URL (e.g. ``postgresql+psycopg://user:pw@host/db``).
URLs are only ever shown through :func:`redact` (no password). The database is plain Optuna: the
optuna CLI and optuna-dashboard read it unchanged.

Example:
    >>> redact("postgresql+psycopg://tfg:secret@db:5432/tfg")
    'postgresql+psycopg://tfg:***@db:5432/tfg'
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from sqlalchemy.engine import make_url

from tfg_search.errors import TFGSearchError
from tfg_search.guidance.config import TFGConfig

DEFAULT_STORAGE = "sqlite:///tfg-studies.db"
STORAGE_ENV = "TFG_SEARCH_STORAGE"

STUDY_ATTR = "tfg_search"
"""Study user attr: what the study is (task, target, method, fixed settings, versions)."""
ROLE_ATTR = "role"
"""Trial user attr: "beam" (a search evaluation) or "final" (a re-run of a top configuration)."""


def resolve_storage(url: str | None) -> str:
    """The storage URL to use: the given one, else $TFG_SEARCH_STORAGE, else the SQLite default."""
    return url or os.environ.get(STORAGE_ENV) or DEFAULT_STORAGE


def redact(url: str) -> str:
    """The URL with its password replaced by ``***`` (safe to print or log)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable storage URL>"


def _sqlite_path(url: sqlalchemy.engine.URL) -> Path | None:
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return Path(url.database)


def _check_sqlite_file(path: Path, shown: str) -> None:
    with open(path, "rb") as fh:
        head = fh.read(16)
    if head and head != b"SQLite format 3\x00":
        raise TFGSearchError(f"{path} is not an SQLite database (storage {shown}); pass another --storage")


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
    try:
        parsed = make_url(raw)
    except Exception:
        raise TFGSearchError(
            "malformed storage URL; expected e.g. sqlite:///tfg-studies.db or "
            "postgresql+psycopg://user:password@host:5432/db"
        ) from None
    shown = redact(raw)
    path = _sqlite_path(parsed)
    if path is not None:
        if path.exists():
            if path.is_dir():
                raise TFGSearchError(f"{path} is a folder, not a database file (storage {shown})")
            _check_sqlite_file(path, shown)
        elif not create:
            raise TFGSearchError(
                f"no study database at {path}; run `tfg-search search` first or pass --storage"
            )
        elif not path.parent.exists():
            raise TFGSearchError(f"folder {path.parent} does not exist (storage {shown})")
    try:
        engine = sqlalchemy.create_engine(raw, poolclass=sqlalchemy.pool.NullPool)
    except ModuleNotFoundError as err:
        raise TFGSearchError(
            f"the database driver {err.name!r} is not installed for storage {shown}; "
            "for PostgreSQL install tfg-search[postgres]"
        ) from None
    except Exception as err:
        raise TFGSearchError(f"cannot use storage {shown}: {type(err).__name__}") from None
    try:
        with engine.connect() as conn:
            has_tables = sqlalchemy.inspect(conn).has_table("studies")
    except Exception as err:
        reason = str(getattr(err, "orig", err)).splitlines()[0] if str(err) else type(err).__name__
        if parsed.password:
            reason = reason.replace(parsed.password, "***")
        raise TFGSearchError(f"cannot connect to storage {shown}: {reason}") from None
    finally:
        engine.dispose()
    if not has_tables and not create:
        raise TFGSearchError(f"storage {shown} holds no tfg-search studies; run `tfg-search search` first")
    for attempt in range(3):
        try:
            storage = optuna.storages.RDBStorage(raw, skip_table_creation=not create)
            break
        except Exception as err:
            # Two launchers creating Optuna's tables in an empty database at once collide on
            # PostgreSQL (a unique violation); the loser finds the tables on a second try.
            if attempt == 2:
                raise TFGSearchError(
                    f"cannot open storage {shown} as an Optuna database: {type(err).__name__}"
                ) from None
            time.sleep(0.2 * (attempt + 1))
    if path is not None:
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
        names = [s.study_name for s in storage.get_all_studies()]
        listed = ", ".join(names) if names else "none"
        raise TFGSearchError(f"no study named {study_name!r} in this storage; studies: {listed}") from None


def study_info(study: optuna.Study) -> dict[str, Any]:
    """What a tfg-search study is (task, target, method, settings); refuses foreign studies."""
    info = study.user_attrs.get(STUDY_ATTR)
    if not isinstance(info, dict):
        raise TFGSearchError(
            f"study {study.study_name!r} was not made by tfg-search (no {STUDY_ATTR!r} attr)"
        )
    return info


def _ranked(trials: list[optuna.trial.FrozenTrial], maximize: bool) -> list[optuna.trial.FrozenTrial]:
    ok = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE and t.value is not None]
    return sorted(ok, key=lambda t: ((-t.value if maximize else t.value), t.number))


def ranked_trials(study: optuna.Study, role: str) -> list[optuna.trial.FrozenTrial]:
    """Completed trials of a role ("beam" or "final"), best first (ties: earlier trial first)."""
    trials = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get(ROLE_ATTR) == role]
    return _ranked(trials, study.direction == optuna.study.StudyDirection.MAXIMIZE)


def best_trial(study: optuna.Study) -> tuple[optuna.trial.FrozenTrial, str]:
    """The reported best: the best final re-run, else (search not finished) the best beam trial.

    Returns:
        (trial, role) where role is "final" or "beam".
    """
    for role in ("final", "beam"):
        ranked = ranked_trials(study, role)
        if ranked:
            return ranked[0], role
    raise TFGSearchError(f"study {study.study_name!r} has no completed trial yet")


def load_best(storage: str | None, study_name: str) -> tuple[TFGConfig, dict[str, float]]:
    """The best configuration of a study and its metrics (from the final re-run when there is one).

    Example:
        >>> cfg, metrics = load_best("sqlite:///tfg-studies.db", "digits-3-tfg-1a2b3c4d")  # doctest: +SKIP
        >>> metrics["validity"]  # doctest: +SKIP
        0.92
    """
    study = load_study(storage, study_name)
    study_info(study)
    trial, _ = best_trial(study)
    return TFGConfig.from_dict(trial.user_attrs["config"]), dict(trial.user_attrs["metrics"])

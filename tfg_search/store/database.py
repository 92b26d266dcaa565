"""The study database without Optuna: storage URLs (which one, shown without its password, study
names it can hold) and a checked connection (SQLAlchemy, imported only where a function needs it).

:mod:`tfg_search.store.studies` opens the database as Optuna's storage on top of these checks; the query
commands read it through :func:`connection` directly (:mod:`tfg_search.store.query`), so that they answer
without importing Optuna.

Example:
    >>> redact("postgresql+psycopg://tfg:secret@db:5432/tfg")
    'postgresql+psycopg://tfg:***@db:5432/tfg'
"""

from __future__ import annotations

import contextlib
import os
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from tfg_search.errors import SettingError, TFGSearchError
from tfg_search.store.layout import SEARCH_SUFFIX

if TYPE_CHECKING:
    import sqlalchemy

DEFAULT_STORAGE = "sqlite:///tfg-studies.db"
STORAGE_ENV = "TFG_SEARCH_STORAGE"

MAX_STUDY_NAME = 512 - len(SEARCH_SUFFIX)
"""The longest study name: Optuna's study table holds names of up to 512 characters
(PostgreSQL and MySQL enforce it, SQLite does not), and a search also writes study ``N:search``."""


def resolve_storage(url: str | None) -> str:
    """The storage URL to use: the given one, else $TFG_SEARCH_STORAGE, else the SQLite default.

    An empty (or blank) ``$TFG_SEARCH_STORAGE`` counts as unset; an empty ``url`` is an error.

    Raises:
        SettingError: ``url`` is empty or blank.
    """
    if url is not None and not url.strip():
        raise SettingError(
            "storage",
            f"is empty; pass a URL such as {DEFAULT_STORAGE}, or leave it out for the default "
            f"(${STORAGE_ENV}, else {DEFAULT_STORAGE})",
        )
    return url or os.environ.get(STORAGE_ENV, "").strip() or DEFAULT_STORAGE


def check_study_name(name: str) -> str:
    """``name`` if every storage can hold it as a study name, exactly as given.

    Any printable text is kept as it is (slashes, ``..``, quotes, non-ASCII: a name is data; its
    output folder comes from :func:`tfg_search.paths.safe_name`). Refused: an empty name, control
    characters (NUL, which PostgreSQL cannot store, newline, tab, ...: a name is shown on one
    line), text that is not valid Unicode (lone surrogates, from undecodable bytes on a command
    line), and more than :data:`MAX_STUDY_NAME` characters.

    Example:
        >>> check_study_name("../Zürich/a b")
        '../Zürich/a b'

    Raises:
        SettingError: (param ``study``) one of the cases above.
    """
    if not isinstance(name, str) or not name.strip():
        raise SettingError("study", "is empty; give a study name")
    for i, ch in enumerate(name):
        kind = unicodedata.category(ch)
        if kind == "Cc":
            raise SettingError(
                "study",
                f"contains the control character U+{ord(ch):04X} at position {i}; study names are "
                "one line of printable text (PostgreSQL cannot store NUL); choose another name",
            )
        if kind == "Cs":
            raise SettingError(
                "study", f"is not valid UTF-8 text (undecodable byte at position {i}); choose another name"
            )
    if len(name) > MAX_STUDY_NAME:
        raise SettingError(
            "study",
            f"is {len(name)} characters long; at most {MAX_STUDY_NAME} fit in Optuna's study table "
            f"(512, less {SEARCH_SUFFIX!r} for the search's own study); choose a shorter name",
        )
    return name


def redact(url: str) -> str:
    """The URL with its password replaced by ``***`` (safe to print or log)."""
    from sqlalchemy.engine import make_url  # here: the query commands never import SQLAlchemy

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable storage URL>"


def is_sqlite_file(url: str) -> bool:
    """Whether ``url`` names an SQLite database file (not in memory)."""
    from sqlalchemy.engine import make_url

    return _sqlite_path(make_url(url)) is not None


def _sqlite_path(url: sqlalchemy.engine.URL) -> Path | None:
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return Path(url.database)


def _check_sqlite_file(path: Path, shown: str) -> None:
    with open(path, "rb") as fh:
        head = fh.read(16)
    if head and head != b"SQLite format 3\x00":
        raise TFGSearchError(f"{path} is not an SQLite database (storage {shown}); pass another --storage")


def check_file(url: str | None, *, create: bool) -> None:
    """The checks of an SQLite database file (no connection): that it is an SQLite file, not a
    folder, and (``create`` False) that it exists; any other URL passes.

    Raises:
        TFGSearchError: a malformed URL, or one of the cases above.
    """
    from sqlalchemy.engine import make_url

    raw = resolve_storage(url)
    try:
        parsed = make_url(raw)
    except Exception:
        source = f" (from ${STORAGE_ENV})" if not url and raw != DEFAULT_STORAGE else ""
        raise TFGSearchError(
            f"malformed storage URL{source}; expected e.g. sqlite:///tfg-studies.db or "
            "postgresql+psycopg://user:password@host:5432/db"
        ) from None
    path = _sqlite_path(parsed)
    if path is None:
        return
    shown = redact(raw)
    if path.exists():
        if path.is_dir():
            raise TFGSearchError(f"{path} is a folder, not a database file (storage {shown})")
        _check_sqlite_file(path, shown)
    elif not create:
        raise TFGSearchError(f"no study database at {path}; run `tfg-search search` first or pass --storage")
    elif not path.parent.exists():
        raise TFGSearchError(f"folder {path.parent} does not exist (storage {shown})")


@contextlib.contextmanager
def connection(url: str | None, *, create: bool) -> Iterator[sqlalchemy.engine.Connection]:
    """A connection to the study database, after checking that it can be one.

    Args:
        url: an SQLAlchemy URL (None: :func:`resolve_storage`).
        create: the caller will create the database and Optuna's tables if missing (the
            launcher); False for commands that only read, which then refuse a missing database or
            one without Optuna's tables, writing nothing.

    Raises:
        TFGSearchError: malformed URL, missing driver, unreachable server, a file that is not a
            database, or (create=False) a database that holds no studies. No message shows the
            password.
    """
    import sqlalchemy
    from sqlalchemy.engine import make_url

    check_file(url, create=create)
    raw = resolve_storage(url)
    parsed = make_url(raw)
    shown = redact(raw)
    try:
        engine = sqlalchemy.create_engine(raw, poolclass=sqlalchemy.pool.NullPool)
    except ModuleNotFoundError as err:
        raise TFGSearchError(
            f"the database driver {err.name!r} is not installed for storage {shown}; "
            "for PostgreSQL install tfg-search[postgres]"
        ) from None
    except Exception as err:
        raise TFGSearchError(f"cannot use storage {shown}: {type(err).__name__}") from None

    def unreachable(err: Exception) -> TFGSearchError:
        reason = str(getattr(err, "orig", err)).splitlines()[0] if str(err) else type(err).__name__
        if parsed.password:
            reason = reason.replace(parsed.password, "***")
        return TFGSearchError(f"cannot connect to storage {shown}: {reason}")

    try:
        try:
            conn = engine.connect()
        except Exception as err:
            raise unreachable(err) from None
        with conn:
            try:
                has_tables = sqlalchemy.inspect(conn).has_table("studies")
            except Exception as err:
                raise unreachable(err) from None
            if not has_tables and not create:
                raise TFGSearchError(
                    f"storage {shown} holds no tfg-search studies; run `tfg-search search` first"
                )
            yield conn
    finally:
        engine.dispose()

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
import re
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote, unquote, unquote_plus

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
    return sqlite_options(_check_user_info(url or os.environ.get(STORAGE_ENV, "").strip() or DEFAULT_STORAGE))


def _check_user_info(url: str) -> str:
    """``url``, unless its password holds a character a URL must escape (``@``, ``/``, ``?``, ``#``):
    its driver would read part of the password as the host and print it in its error. (An ``@`` in
    a query value after a password reads the same: written as %40 it is read as ``@``.)"""
    info = (_split(url) or ("", None, ""))[1]
    user, colon, password = (info or "").partition(":")
    if colon and not any(c in user for c in "/?#") and any(c in password for c in "@/?#"):
        raise TFGSearchError(
            f"storage {redact(url)}: the password holds an unescaped '@', '/', '?' or '#'; "
            "write them as %40, %2F, %3F and %23"
        )
    return url


SQLITE_URI_OPTIONS = {
    "mode": ("ro", "rw", "rwc"),
    "immutable": ("0", "1"),
    "nolock": ("0", "1"),
    "cache": None,
}
"""SQLite's own URI options (https://www.sqlite.org/uri.html) that a storage URL may carry, with the
values accepted (None: any); ``mode=memory`` is refused (a search in memory is lost)."""
SQLITE_DRIVER_OPTIONS = (
    "uri",
    "timeout",
    "isolation_level",
    "detect_types",
    "check_same_thread",
    "cached_statements",
)
"""The options SQLAlchemy's SQLite driver takes from the query string itself."""


def sqlite_options(url: str) -> str:
    """``url`` as SQLAlchemy must be given it for its SQLite options to act: a file URL with SQLite
    URI options (``sqlite:///x.db?mode=ro``, with or without ``uri=true``) becomes SQLite's URI form
    ``sqlite:///file:x.db?mode=ro&uri=true`` (else SQLite would open a new file literally named
    ``x.db?mode=ro``, or SQLAlchemy drop the option with a warning). Other URLs are returned as given
    (a malformed one is reported by :func:`check_file`).

    Example:
        >>> sqlite_options("sqlite:///x.db?mode=ro")
        'sqlite:///file:x.db?mode=ro&uri=true'

    Raises:
        TFGSearchError: an option neither SQLite nor its driver takes, a value SQLite does not
            accept, ``mode=memory``, or a ``file:`` name without ``uri=true``.
    """
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:
        return url
    if parsed.get_backend_name() != "sqlite" or not parsed.query:
        return url
    query = {k: (v if isinstance(v, str) else v[-1]) for k, v in parsed.query.items()}
    shown = redact(url)
    known = sorted([*SQLITE_URI_OPTIONS, *SQLITE_DRIVER_OPTIONS])
    for key, value in query.items():
        if key not in SQLITE_URI_OPTIONS and key not in SQLITE_DRIVER_OPTIONS:
            raise TFGSearchError(
                f"storage {shown}: SQLite takes no option {key!r}; use one of {', '.join(known)} "
                "(e.g. ?mode=ro to read without writing)"
            )
        allowed = SQLITE_URI_OPTIONS.get(key)
        if allowed is not None and value not in allowed:
            raise TFGSearchError(
                f"storage {shown}: {key}={value} is not an option of a study database; "
                f"give {key}={' or '.join(allowed)}"
            )
    uri = query.get("uri", "").lower() in ("1", "true", "yes", "on")
    database = parsed.database or ""
    if database.startswith("file:"):
        if not uri:
            raise TFGSearchError(
                f"storage {shown} names an SQLite URI ({database.split('?')[0]}) without uri=true; "
                "add &uri=true, or give the file name without file:"
            )
        return url
    if not set(query) & set(SQLITE_URI_OPTIONS):
        return url
    if database in ("", ":memory:"):
        raise TFGSearchError(f"storage {shown}: SQLite options apply to a database file; give one")
    name = quote("file:" + quote(database, safe="/"), safe="/:")  # SQLAlchemy unquotes once, SQLite once
    options = "&".join(f"{quote(k)}={quote(v)}" for k, v in {**query, "uri": "true"}.items())
    return f"{parsed.drivername}:///{name}?{options}"


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


SECRET_KEYS = ("password", "passwd", "pwd", "secret", "token")
"""Query parameters whose value :func:`redact` hides: any key containing one of these (``password``,
``sslpassword``, ``auth_token``, ...)."""

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")


def _split(url: str) -> tuple[str, str | None, str] | None:
    """``(scheme://, user info or None, the rest)``, read as text: the user info runs to the *last*
    ``@`` (a password may hold an unescaped ``@``, ``/``, ``?`` or ``:``); None without ``scheme://``."""
    found = _SCHEME.match(url)
    if found is None:
        return None
    rest = url[found.end() :]
    if "@" not in rest:
        return found.group(0), None, rest
    info, _, after = rest.rpartition("@")
    return found.group(0), info, after


def _hide_query(rest: str) -> str:
    """``rest`` with the value of every secret query parameter (:data:`SECRET_KEYS`) as ``***``."""
    if "?" not in rest:
        return rest
    head, _, query = rest.partition("?")
    parts = []
    for item in query.split("&"):
        key, eq, _value = item.partition("=")
        secret = eq and any(word in unquote(key).lower() for word in SECRET_KEYS)
        parts.append(f"{key}=***" if secret else item)
    return head + "?" + "&".join(parts)


def redact(url: str) -> str:
    """The URL with every password it carries replaced by ``***`` (safe to print or log): the user
    info's (also when the password holds an unescaped ``@``) and query parameters such as
    ``?password=``; text that is not a URL is not shown at all.

    Example:
        >>> redact("postgresql+psycopg://u@db/tfg?password=s3cret&sslmode=require")
        'postgresql+psycopg://u@db/tfg?password=***&sslmode=require'
        >>> redact("postgresql://u:p@ss@db/tfg")
        'postgresql://u:***@db/tfg'
    """
    parts = _split(url)
    if parts is None:
        return "<unparseable storage URL>"
    scheme, info, rest = parts
    if info is not None:
        user, colon, _password = info.partition(":")
        info = f"{user}:***@" if colon else f"{info}@"
    return scheme + (info or "") + _hide_query(rest)


def secrets_of(url: str) -> list[str]:
    """Every password ``url`` carries, as given and unquoted (what :func:`scrub` removes)."""
    found: list[str] = []
    _scheme, info, rest = _split(url) or ("", url.rpartition("@")[0] if "@" in url else None, url)
    if info is not None and ":" in info:
        found.append(info.partition(":")[2])
    for item in rest.partition("?")[2].split("&"):
        key, eq, value = item.partition("=")
        if eq and any(word in unquote(key).lower() for word in SECRET_KEYS):
            found.append(value)
    return [s for v in found for s in {v, unquote(v), unquote_plus(v)} if s]


def scrub(text: str, url: str) -> str:
    """``text`` (e.g. a driver's error message) with every password of ``url`` as ``***``."""
    for secret in sorted(secrets_of(url), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def is_sqlite_file(url: str) -> bool:
    """Whether ``url`` names an SQLite database file (not in memory)."""
    from sqlalchemy.engine import make_url

    return _sqlite_path(make_url(url)) is not None


def _sqlite_path(url: sqlalchemy.engine.URL) -> Path | None:
    """The database file of an SQLite URL (its path also when given as SQLite's ``file:`` URI),
    None for a database in memory or another backend."""
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    name = url.database
    if name.startswith("file:") and str(url.query.get("uri", "")).lower() in ("1", "true", "yes", "on"):
        name = name[len("file:") :]
        if name.startswith("//"):  # file://host/path: the authority is empty or localhost
            name = "/" + name[2:].partition("/")[2]
        name = unquote(name)
        if name in ("", ":memory:") or url.query.get("mode") == "memory":
            return None
    return Path(name)


def is_read_only(url: str) -> bool:
    """Whether an SQLite URL opens its file read-only (``mode=ro`` or ``immutable=1``)."""
    from sqlalchemy.engine import make_url

    query = make_url(url).query
    return query.get("mode") == "ro" or query.get("immutable") == "1"


NAME_MAX = 255
"""The longest file name (one path component, in bytes) of Linux's file systems."""


def _check_name(path: Path, shown: str) -> None:
    """Refuse a database path the file system cannot hold (``File name too long``)."""
    for part in path.parts:
        if len(os.fsencode(part)) > NAME_MAX:
            raise TFGSearchError(
                f"the database file name {part[:24]}... is {len(os.fsencode(part))} bytes long, more than "
                f"the {NAME_MAX} a file system allows (storage {shown[:60]}...); choose a shorter --storage"
            )
    if len(os.fsencode(str(path.absolute()))) >= 4096:
        raise TFGSearchError(
            "the database path is longer than the 4096 bytes a path may have; choose a shorter --storage"
        )


def check_writable(url: str | None) -> None:
    """For a search (which writes): refuse an SQLite URL opened read-only and an SQLite file, or its
    folder, that this process cannot write (read-only permissions, an immutable file, a read-only
    file system), before anything is written. Other URLs pass (the server says).

    Raises:
        TFGSearchError: one of the cases above, in one line saying how to fix it.
    """
    from sqlalchemy.engine import make_url

    raw = resolve_storage(url)
    try:
        path = _sqlite_path(make_url(raw))
    except Exception:
        return  # check_file says why
    if path is None:
        return
    shown = redact(raw)
    if is_read_only(raw):
        raise TFGSearchError(
            f"storage {shown} is read-only; a search writes its trials: drop mode=ro / immutable=1 "
            "(best, studies and export read such a URL), or pass another --storage"
        )
    _check_name(path, shown)
    fix = "make it writable, or copy the database and pass the copy as --storage"
    for side in (path, *(path.with_name(path.name + s) for s in ("-wal", "-shm", "-journal"))):
        if side.exists() and not os.access(side, os.W_OK):
            raise TFGSearchError(
                f"{side} is not writable (read-only permissions, an immutable file or a read-only "
                f"file system) and a search writes its trials there; {fix}"
            )
    folder = path.parent
    if folder.is_dir() and not os.access(folder, os.W_OK | os.X_OK):
        raise TFGSearchError(
            f"folder {folder} is not writable and SQLite keeps its journal beside the database; {fix}"
        )


def _check_sqlite_file(path: Path, shown: str) -> None:
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
    except OSError as err:
        raise TFGSearchError(f"cannot read {path}: {err.strerror}; pass another --storage") from None
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
    _check_name(path, shown)
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

    check_file(url, create=create)
    if create:
        check_writable(url)
    raw = resolve_storage(url)
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
        return TFGSearchError(f"cannot connect to storage {shown}: {scrub(reason, raw)}")

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

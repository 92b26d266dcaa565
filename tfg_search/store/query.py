"""The query commands' reads, straight from the database, without importing Optuna or SQLAlchemy.

``tfg-search studies``, ``best`` and ``export`` are the main use of a study database and should
answer at once; importing Optuna (0.3 s) and SQLAlchemy (0.15 s) costs more than the answer
itself. This module reads the few rows each answer needs from Optuna's tables with the database's
own driver (``sqlite3`` for ``sqlite:///FILE``, psycopg for ``postgresql+psycopg://...``; the URL
parsed as SQLAlchemy parses it) and decodes them as Optuna and :mod:`tfg_search.store.record` do, so that
its answers are those of
:func:`tfg_search.store.studies.list_searches` and of ``load_search(...).best()``
(tests/test_query.py compares both paths on SQLite and PostgreSQL: searches finished and not, failed
trials, foreign studies, a tfg-search 0.1 study). Where it cannot be sure of answering the same (a
URL of another form or driver, a database it cannot open: the Optuna path then says why; a schema
version it does not know, a distribution it does not decode, a multi-objective study, a search
without its beam study) it raises :class:`Unanswered` and the caller asks Optuna.

Example:
    >>> rows = list_searches("sqlite:///tfg-studies.db")  # doctest: +SKIP
    >>> best_payload("sqlite:///tfg-studies.db", rows[0]["study"])["config"]  # doctest: +SKIP
    {'rho': 0.5, 'mu': 1.0, ...}
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote

from tfg_search.errors import TFGSearchError
from tfg_search.store.database import resolve_storage
from tfg_search.store.layout import (
    BEAM,
    FINAL,
    LAYOUT,
    SEARCH_SUFFIX,
    STUDY_ATTR,
    TRIAL_ATTR,
    record_fields,
    search_study_name,
)

__all__ = ["SCHEMAS", "Unanswered", "best_payload", "list_searches", "payload"]

SCHEMAS = frozenset({"v3.0.0.d", "v3.2.0.a"})
"""Optuna schema revisions (``alembic_version``) read here: since v3.0.0.d, infinite values are a
``value_type`` next to the value (Optuna 3.0 to 5.1 write v3.2.0.a)."""


class Unanswered(Exception):
    """This database holds something the direct reads do not decode; ask Optuna instead."""


# SQLAlchemy's URL pattern (sqlalchemy.engine.url._parse_url), so that a URL means the same here.
_URL = re.compile(
    r"""
        (?P<name>[\w\+]+)://
        (?:
            (?P<username>[^:/]*)
            (?::(?P<password>[^@]*))?
        @)?
        (?:
            (?:
                \[(?P<ipv6host>[^/\?]+)\] |
                (?P<ipv4host>[^/:\?]+)
            )?
            (?::(?P<port>[^/\?]*))?
        )?
        (?:/(?P<database>[^\?]*))?
        (?:\?(?P<query>.*))?
    """,
    re.X,
)


def _target(url: str) -> tuple[str, Any] | None:
    """("sqlite", file path) or ("psycopg", connect kwargs, as SQLAlchemy's psycopg dialect makes
    them) for the URLs read directly; None for any other."""
    m = _URL.match(url)
    if m is None:
        return None
    parts = m.groupdict()
    if parts["name"] == "sqlite":
        database = parts["database"]
        if parts["query"] is not None or parts["username"] or parts["ipv4host"] or parts["ipv6host"]:
            return None
        if database in (None, "", ":memory:") or "%" in database or database.startswith("file:"):
            return None
        return "sqlite", Path(database)
    if parts["name"] != "postgresql+psycopg":
        return None
    kwargs: dict[str, Any] = {}
    for key, name in (("username", "user"), ("password", "password"), ("database", "dbname")):
        if parts[key]:
            kwargs[name] = unquote(parts[key])
    host = parts["ipv4host"] or parts["ipv6host"]
    if host:
        kwargs["host"] = host
    if parts["port"]:
        if not parts["port"].isdigit():
            return None
        kwargs["port"] = int(parts["port"])
    query = parse_qsl(parts["query"] or "")
    if len({key for key, _ in query}) != len(query) or any(
        key in kwargs or key == "host" for key, _ in query
    ):
        return None  # repeated keys, or hosts given in the query: SQLAlchemy's multi-host forms
    kwargs.update(query)
    return "psycopg", kwargs


class _Reader:
    """Rows from an open DB-API connection; SQL with ``:name`` parameters (a list expands to a
    parenthesised list of values)."""

    def __init__(self, conn: Any, style: str, errors: tuple[type[BaseException], ...]) -> None:
        self.conn = conn
        self.style = style
        self.errors = errors

    def rows(self, sql: str, **params: Any) -> list[tuple[Any, ...]]:
        values: dict[str, Any] = {}

        def place(m: re.Match[str]) -> str:
            name, value = m.group(1), params[m.group(1)]
            names = [name] if not isinstance(value, list) else [f"{name}_{i}" for i in range(len(value))]
            for key, item in zip(names, [value] if not isinstance(value, list) else value, strict=True):
                values[key] = item
            marks = [f":{key}" if self.style == "sqlite" else f"%({key})s" for key in names]
            return marks[0] if not isinstance(value, list) else "(" + ", ".join(marks) + ")"

        statement = re.sub(r"(?<![\w:]):(\w+)", place, sql)
        try:
            return list(self.conn.execute(statement, values).fetchall())
        except self.errors as err:
            raise Unanswered(f"{type(err).__name__} reading the database") from None


@contextlib.contextmanager
def _open(url: str | None) -> Iterator[_Reader]:
    """A reader of the database at ``url`` (None: :func:`~tfg_search.store.database.resolve_storage`)
    whose schema is one of :data:`SCHEMAS`; :class:`Unanswered` when it is not one to read here
    or does not open (the Optuna path then opens it, or says why it cannot)."""
    target = _target(resolve_storage(url))
    if target is None:
        raise Unanswered("a URL not read directly")
    kind, where = target
    try:
        if kind == "sqlite":
            with open(where, "rb") as fh:
                if fh.read(16) != b"SQLite format 3\x00":
                    raise Unanswered("not an SQLite file")
            # mode=rw: never create a file (the Optuna path refuses a missing one)
            conn: Any = sqlite3.connect(where.absolute().as_uri() + "?mode=rw", uri=True)
            reader = _Reader(conn, "sqlite", (sqlite3.Error,))
        else:
            import psycopg

            conn = psycopg.connect(**where, autocommit=True)
            reader = _Reader(conn, "psycopg", (psycopg.Error,))
    except Unanswered:
        raise
    except Exception as err:
        raise Unanswered(f"cannot open the database directly ({type(err).__name__})") from None
    try:
        _check_schema(reader)
        yield reader
    finally:
        conn.close()


@dataclass(frozen=True)
class _Candidate:
    """A COMPLETE trial with a finite value, as ranked for the reported best."""

    trial_id: int
    number: int
    value: float
    position: int  # its study's place in the search's records (beam study first)
    role: str | None  # the study's default role
    body: str | None  # the JSON of its TRIAL_ATTR
    legacy_role: str | None  # the JSON of its layout-1 "role" attr


def payload(
    study: str,
    info: Mapping[str, Any],
    *,
    role: str | None,
    trial: int,
    score: float | None,
    params: Mapping[str, Any],
    config: Any,
    metrics: Mapping[str, float] | None,
    samples: int | None,
) -> dict[str, Any]:
    """What ``tfg-search best --json`` prints (and ``export`` writes) for a search's best trial."""
    return {
        "study": study,
        "task": info["task"],
        "target": info["target"],
        "method": info["method"],
        "task_options": info["settings"].get("task_options", {}),
        "steps": info["settings"]["steps"],
        "role": role,
        "trial": trial,
        "score": score,
        "params": dict(params),
        "config": config,
        "metrics": metrics or {},
        "samples": samples,
    }


def list_searches(url: str | None) -> list[dict[str, Any]]:
    """:func:`tfg_search.store.studies.list_searches` of the database at ``url``, in a few queries.

    Raises:
        TFGSearchError: the database cannot be read (as :func:`tfg_search.store.studies.open_storage`).
        Unanswered: see the module docstring.
    """
    with _open(url) as db:
        studies = [(int(i), str(n)) for i, n in db.rows(_STUDIES)]
        ids = {name: study_id for study_id, name in studies}
        infos = _study_attrs(db, STUDY_ATTR)
        counts = {int(i): int(n) for i, n in db.rows(_COUNTS)}
        values = _best_values(db)
        rows = []
        for study_id, name in studies:
            info = infos.get(study_id)
            if isinstance(info, dict) and info.get("role") == "search":
                continue
            row: dict[str, Any] = {"study": name, "task": None, "target": None, "method": None}
            if not isinstance(info, dict) or "settings" not in info:
                rows.append({**row, "trials": counts.get(study_id, 0), "best": None, "finished": False})
                continue
            if info.get("layout", 1) >= LAYOUT:
                search_id = ids.get(search_study_name(name))
                n = counts.get(study_id, 0) + (counts.get(search_id, 0) if search_id is not None else 0)
                best_value = values(study_id)
                finished = best_value is not None
                if best_value is None and search_id is not None:
                    best_value = values(search_id)
            else:
                n = counts.get(study_id, 0)
                found = _best(db, [(study_id, None)])
                best_value = found.value if found is not None else None
                finished = found is not None and _role(found) == FINAL
            row.update(task=info.get("task"), target=info.get("target"), method=info.get("method"))
            rows.append({**row, "trials": n, "best": best_value, "finished": finished})
        return rows


def best_payload(url: str | None, study_name: str) -> dict[str, Any]:
    """:func:`payload` of the reported best of search ``study_name`` (its main study, or its search
    study): the best final re-run, else the best beam trial, as ``load_search(...).best()``.

    Raises:
        TFGSearchError: no such study, not a tfg-search study, no completed trial yet (the same
            messages as the Optuna path), or the database cannot be read.
        Unanswered: see the module docstring.
    """
    with _open(url) as db:
        name, study_id, info = _search(db, study_name)
        if info.get("layout", 1) < LAYOUT:
            studies = [(study_id, None)]
        else:
            search_id = _study_id(db, search_study_name(name))
            if search_id is None:
                raise Unanswered(f"no beam study {search_study_name(name)!r}")
            studies = [(search_id, BEAM), (study_id, FINAL)]
        found = _best(db, studies)
        if found is None:
            raise TFGSearchError(f"study {name!r} has no completed trial yet")
        attrs = {key: json.loads(value) for key, value in db.rows(_TRIAL_ATTRS, id=found.trial_id)}
        fields = record_fields(attrs, failed=False, role=found.role)
        params = _params(db.rows(_PARAMS, id=found.trial_id))
        return payload(
            name,
            info,
            role=fields["role"],
            trial=found.number,
            score=found.value,
            params=params,
            config=fields["config"],
            metrics=fields["metrics"],
            samples=fields["samples"],
        )


# ------------------------------------------------------------------------------------ queries

_STUDIES = "SELECT study_id, study_name FROM studies ORDER BY study_id"
_COUNTS = "SELECT study_id, count(trial_id) FROM trials GROUP BY study_id"
_BEST_VALUES = (
    "SELECT t.study_id, v.value_type, max(v.value), min(v.value) FROM trials t "
    "JOIN trial_values v ON v.trial_id = t.trial_id "
    "WHERE t.state = 'COMPLETE' AND v.objective = 0 GROUP BY t.study_id, v.value_type"
)
_CANDIDATES = (
    "SELECT t.trial_id, t.number, t.study_id, v.value, a.value_json, r.value_json FROM trials t "
    "JOIN trial_values v ON v.trial_id = t.trial_id "
    "LEFT JOIN trial_user_attributes a ON a.trial_id = t.trial_id AND a.key = :body "
    "LEFT JOIN trial_user_attributes r ON r.trial_id = t.trial_id AND r.key = 'role' "
    "WHERE t.study_id IN :ids AND t.state = 'COMPLETE' AND v.objective = 0 AND v.value_type = 'FINITE'"
)
_TRIAL_ATTRS = "SELECT key, value_json FROM trial_user_attributes WHERE trial_id = :id"
_PARAMS = (
    "SELECT param_name, param_value, distribution_json FROM trial_params WHERE trial_id = :id "
    "ORDER BY param_id"
)


def _check_schema(db: _Reader) -> None:
    versions = {row[0] for row in db.rows("SELECT version_num FROM alembic_version")}
    if len(versions) != 1 or not versions <= SCHEMAS:
        raise Unanswered(f"schema {sorted(versions)} is not one of {sorted(SCHEMAS)}")


def _study_id(db: _Reader, name: str) -> int | None:
    rows = db.rows("SELECT study_id FROM studies WHERE study_name = :name", name=name)
    return int(rows[0][0]) if rows else None


def _study_attrs(db: _Reader, key: str, study_id: int | None = None) -> dict[int, Any]:
    """A study user attr, decoded, of every study (or of one)."""
    query = "SELECT study_id, value_json FROM study_user_attributes WHERE key = :key"
    if study_id is None:
        rows = db.rows(query, key=key)
    else:
        rows = db.rows(query + " AND study_id = :id", key=key, id=study_id)
    return {int(i): json.loads(value) for i, value in rows}


def _load(db: _Reader, name: str) -> tuple[int, dict[str, Any]]:
    """The id and tfg-search info of study ``name``, with the messages of
    :func:`tfg_search.store.studies.load_study` and :func:`tfg_search.store.studies.study_info`."""
    study_id = _study_id(db, name)
    if study_id is None:
        names = [n for _, n in db.rows(_STUDIES) if not n.endswith(SEARCH_SUFFIX)]
        listed = ", ".join(names) if names else "none"
        raise TFGSearchError(f"no study named {name!r} in this storage; studies: {listed}")
    info = _study_attrs(db, STUDY_ATTR, study_id).get(study_id)
    if not isinstance(info, dict) or "settings" not in info:
        raise TFGSearchError(f"study {name!r} was not made by tfg-search (no {STUDY_ATTR!r} attr)")
    return study_id, info


def _search(db: _Reader, name: str) -> tuple[str, int, dict[str, Any]]:
    """The main study of search ``name`` (given by its main or its search study's name)."""
    study_id, info = _load(db, name)
    if info.get("role") == "search" and info.get("main_study"):
        name = info["main_study"]
        study_id, info = _load(db, name)
    return name, study_id, info


def _best_values(db: _Reader) -> Any:
    """A function of a study id: Optuna's best value of that study (``get_best_trial(...).value``:
    the highest, or lowest when minimizing, first value of its COMPLETE trials, infinities
    included), or None when it has no completed trial."""
    directions: dict[int, list[str]] = {}
    for study_id, direction in db.rows("SELECT study_id, direction FROM study_directions"):
        directions.setdefault(int(study_id), []).append(str(getattr(direction, "name", direction)))
    found: dict[int, dict[str, tuple[float | None, float | None]]] = {}
    for study_id, kind, high, low in db.rows(_BEST_VALUES):
        found.setdefault(int(study_id), {})[str(getattr(kind, "name", kind))] = (high, low)

    def value(study_id: int) -> float | None:
        kinds = found.get(study_id)
        if not kinds:
            return None
        if len(directions.get(study_id, [])) != 1:
            raise Unanswered(f"study {study_id} does not have one objective")
        if directions[study_id][0] == "MAXIMIZE":
            order = (("INF_POS", math.inf), ("FINITE", None), ("INF_NEG", -math.inf))
            pick = 0
        else:
            order = (("INF_NEG", -math.inf), ("FINITE", None), ("INF_POS", math.inf))
            pick = 1
        for kind, infinite in order:
            if kind in kinds:
                return infinite if infinite is not None else float(kinds[kind][pick])  # type: ignore[arg-type]
        raise Unanswered(f"value types {sorted(kinds)}")

    return value


def _best(db: _Reader, studies: Sequence[tuple[int, str | None]]) -> _Candidate | None:
    """The reported best (:func:`tfg_search.store.record.best`) of the trials of ``studies`` (each a study
    id with the role its trials have when they do not say), in the search's record order."""
    ids = [study_id for study_id, _ in studies]
    count = db.rows("SELECT count(*) FROM study_directions WHERE study_id IN :ids", ids=ids)[0][0]
    if count != len(ids):
        raise Unanswered("a study without exactly one objective")
    position = {study_id: i for i, (study_id, _) in enumerate(studies)}
    default = dict(studies)
    candidates = []
    for trial_id, number, study_id, value, body, legacy_role in db.rows(
        _CANDIDATES, ids=ids, body=TRIAL_ATTR
    ):
        if value is None or not math.isfinite(float(value)):
            continue
        study_id = int(study_id)
        candidates.append(
            _Candidate(
                int(trial_id),
                int(number),
                float(value),
                position[study_id],
                default[study_id],
                body,
                legacy_role,
            )
        )
    candidates.sort(key=lambda c: (-c.value, c.number, c.position))
    first_beam = None
    for candidate in candidates:  # decoded in rank order, until the first final re-run
        role = _role(candidate)
        if role == FINAL:
            return candidate
        if role == BEAM and first_beam is None:
            first_beam = candidate
    return first_beam


def _role(candidate: _Candidate) -> str | None:
    """A candidate's role, decoded as :func:`tfg_search.store.layout.record_fields` decodes it."""
    attrs: dict[str, Any] = {}
    if candidate.body is not None:
        attrs[TRIAL_ATTR] = json.loads(candidate.body)
    if candidate.legacy_role is not None:
        attrs["role"] = json.loads(candidate.legacy_role)
    return record_fields(attrs, failed=False, role=candidate.role)["role"]


def _params(rows: Iterable[Any]) -> dict[str, Any]:
    """A trial's parameters in their external form, in Optuna's order (``param_id``), decoded as
    ``optuna.distributions.json_to_distribution(...).to_external_repr`` decodes them."""
    params: dict[str, Any] = {}
    for name, value, distribution_json in rows:
        distribution = json.loads(distribution_json)
        kind = distribution.get("name") or distribution.get("type")
        attributes = distribution.get("attributes", distribution)
        if kind in ("FloatDistribution", "float"):
            params[name] = value
        elif kind in ("IntDistribution", "int"):
            params[name] = int(value)
        elif kind in ("CategoricalDistribution", "categorical"):
            params[name] = attributes["choices"][int(value)]
        else:
            raise Unanswered(f"distribution {kind!r}")
    return params

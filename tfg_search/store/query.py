"""The read path of a study database: what the query commands and the Python API answer.

``tfg-search studies``, ``best`` and ``export``, and :func:`load_best` / :func:`best_payload` /
:func:`list_searches` in Python, all read studies through the functions of this module. They are
the main use of a study database and should answer at once: importing Optuna (0.3 s) and
SQLAlchemy (0.15 s) costs more than the answer itself. So each function first reads the few rows
it needs from Optuna's tables with the database's own driver (``sqlite3`` for ``sqlite:///FILE``,
psycopg for ``postgresql+psycopg://...``; the URL parsed as SQLAlchemy parses it), decoded as
Optuna and :mod:`tfg_search.store.layout` decode them; where it cannot be sure of answering as
Optuna would (a URL of another form or driver, a database it cannot open: the Optuna path then
says why; a schema version it does not know, a distribution it does not decode, a multi-objective
study, a search without its beam study) it asks Optuna instead (:mod:`tfg_search.store.studies`).
``via="direct"`` / ``via="optuna"`` take one path only (tests/test_query.py checks that both give
the same answers on SQLite and PostgreSQL: searches finished and not, failed trials, foreign
studies, a tfg-search 0.1 study). Nothing here imports torch.

Example:
    >>> rows = list_searches("sqlite:///tfg-studies.db")  # doctest: +SKIP
    >>> best_payload("sqlite:///tfg-studies.db", rows[0]["study"])["config"]  # doctest: +SKIP
    {'rho': 0.5, 'mu': 1.0, ...}
    >>> config, metrics = load_best("sqlite:///tfg-studies.db", rows[0]["study"])  # doctest: +SKIP
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
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote

from tfg_search.errors import TFGSearchError
from tfg_search.store.database import resolve_storage
from tfg_search.store.layout import (
    FINAL,
    LEGACY_ROLE_ATTR,
    SEARCH,
    SEARCH_SUFFIX,
    STUDY_ATTR,
    TRIAL_ATTR,
    StudyInfo,
    compute,
    record_fields,
)

if TYPE_CHECKING:
    from tfg_search.guidance.config import TFGConfig

__all__ = ["SCHEMAS", "VIA", "Unanswered", "best_payload", "list_searches", "load_best", "payload"]

VIA = ("auto", "direct", "optuna")
"""How to read: the direct reads with Optuna as the fallback (default), or one path only."""

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
    info: StudyInfo,
    *,
    role: str | None,
    trial: int,
    score: float | None,
    params: Mapping[str, Any],
    config: Any,
    metrics: Mapping[str, float] | None,
    samples: int | None,
    compute: Mapping[str, Any],
) -> dict[str, Any]:
    """What ``tfg-search best --json`` prints (and ``export`` writes) for a search's best trial,
    with what the whole search spent (:func:`tfg_search.store.layout.compute`)."""
    return {
        "study": study,
        "task": info.task,
        "target": info.target,
        "method": info.method,
        "task_options": info.settings.get("task_options", {}),
        "steps": info.settings["steps"],
        "role": role,
        "trial": trial,
        "score": score,
        "params": dict(params),
        "config": config,
        "metrics": metrics or {},
        "samples": samples,
        "compute": dict(compute),
    }


def _check_via(via: str) -> None:
    if via not in VIA:
        raise ValueError(f"via must be one of {', '.join(VIA)}, got {via!r}")


def list_searches(storage: str | None = None, *, via: str = "auto") -> list[dict[str, Any]]:
    """One row per search in the database at ``storage``: study, task, target, method, trials,
    best score, finished.

    Search studies (``N:search``) are listed with their main study, not on their own; studies not
    made by tfg-search are listed with empty fields. A few queries in all, whatever the number and
    size of the studies.

    Raises:
        TFGSearchError: the database cannot be read (the message says why).
        Unanswered: ``via="direct"`` and the direct reads cannot answer.
    """
    _check_via(via)
    if via != "optuna":
        try:
            return _direct_list(storage)
        except Unanswered:
            if via == "direct":
                raise
    return _optuna_list(storage)


def best_payload(storage: str | None, study_name: str, *, via: str = "auto") -> dict[str, Any]:
    """:func:`payload` of the reported best of search ``study_name`` (its main study, or its search
    study): the best final re-run, else (search not finished) the best beam trial.

    Raises:
        TFGSearchError: no such study, not a tfg-search study, no completed trial yet, or the
            database cannot be read.
        Unanswered: ``via="direct"`` and the direct reads cannot answer.
    """
    _check_via(via)
    if via != "optuna":
        try:
            return _direct_best(storage, study_name)
        except Unanswered:
            if via == "direct":
                raise
    return _optuna_best(storage, study_name)


def load_best(storage: str | None, study_name: str) -> tuple[TFGConfig, dict[str, float]]:
    """The best configuration of a search and its metrics (from its final re-run when it has one).

    Example:
        >>> cfg, metrics = load_best("sqlite:///tfg-studies.db", "digits-3-tfg-1a2b3c4d")  # doctest: +SKIP
        >>> metrics["validity"]  # doctest: +SKIP
        0.92
    """
    from tfg_search.guidance.config import TFGConfig

    found = best_payload(storage, study_name)
    return TFGConfig.from_dict(found["config"]), dict(found["metrics"])


def _optuna_list(storage: str | None) -> list[dict[str, Any]]:
    """:func:`list_searches` through Optuna (a few queries per study)."""
    from tfg_search.store.record import best
    from tfg_search.store.studies import load_search, open_storage

    rdb = open_storage(storage, create=False)
    summaries = rdb.get_all_studies()
    ids = {s.study_name: rdb.get_study_id_from_name(s.study_name) for s in summaries}
    rows = []
    for s in summaries:
        info = StudyInfo.of(s.user_attrs)
        if info is not None and info.is_search_study:
            continue
        row: dict[str, Any] = {"study": s.study_name, "task": None, "target": None, "method": None}
        if info is None:
            n = rdb.get_n_trials(ids[s.study_name])
            rows.append({**row, "trials": n, "best": None, "finished": False})
            continue
        parts = [(ids.get(name), role) for name, role in info.trial_studies(s.study_name)]
        n = sum(rdb.get_n_trials(i) for i, _ in parts if i is not None)
        if all(role is not None for _, role in parts):  # one role per study: Optuna's best of each
            by_role = {role: _optuna_best_value(rdb, i) for i, role in parts if i is not None}
            best_value, finished = by_role.get(FINAL), by_role.get(FINAL) is not None
            if best_value is None:
                best_value = by_role.get(SEARCH)
        else:
            found = best(load_search(rdb, s.study_name).records())
            best_value = found.value if found is not None else None
            finished = found is not None and found.role == FINAL
        row.update(task=info.task, target=info.target, method=info.method)
        rows.append({**row, "trials": n, "best": best_value, "finished": finished})
    return rows


def _optuna_best_value(rdb: Any, study_id: int) -> float | None:
    try:
        return float(rdb.get_best_trial(study_id).value)
    except ValueError:  # no completed trial yet
        return None


def _optuna_best(storage: str | None, study_name: str) -> dict[str, Any]:
    """:func:`best_payload` through Optuna."""
    from tfg_search.store.studies import load_search

    studies = load_search(storage, study_name)
    records = studies.records()
    found = studies.best()
    return payload(
        studies.name,
        studies.info,
        role=found.role,
        trial=found.number,
        score=found.value,
        params=found.params,
        config=found.config,
        metrics=found.metrics,
        samples=found.samples,
        compute=compute(vars(r) for r in records),
    )


def _direct_list(url: str | None) -> list[dict[str, Any]]:
    """:func:`list_searches` by the direct reads."""
    with _open(url) as db:
        studies = [(int(i), str(n)) for i, n in db.rows(_STUDIES)]
        ids = {name: study_id for study_id, name in studies}
        infos = {i: StudyInfo.of({STUDY_ATTR: raw}) for i, raw in _study_attrs(db, STUDY_ATTR).items()}
        counts = {int(i): int(n) for i, n in db.rows(_COUNTS)}
        values = _best_values(db)
        rows = []
        for study_id, name in studies:
            info = infos.get(study_id)
            if info is not None and info.is_search_study:
                continue
            row: dict[str, Any] = {"study": name, "task": None, "target": None, "method": None}
            if info is None:
                rows.append({**row, "trials": counts.get(study_id, 0), "best": None, "finished": False})
                continue
            parts = [(ids.get(n), role) for n, role in info.trial_studies(name)]
            n = sum(counts.get(i, 0) for i, _ in parts if i is not None)
            if all(role is not None for _, role in parts):  # one role per study: its best value
                by_role = {role: values(i) for i, role in parts if i is not None}
                best_value, finished = by_role.get(FINAL), by_role.get(FINAL) is not None
                if best_value is None:
                    best_value = by_role.get(SEARCH)
            else:
                found = _best(db, [(i, role) for i, role in parts if i is not None])
                best_value = found.value if found is not None else None
                finished = found is not None and _role(found) == FINAL
            row.update(task=info.task, target=info.target, method=info.method)
            rows.append({**row, "trials": n, "best": best_value, "finished": finished})
        return rows


def _direct_best(url: str | None, study_name: str) -> dict[str, Any]:
    """:func:`best_payload` by the direct reads."""
    with _open(url) as db:
        name, _, info = _search(db, study_name)
        parts = []
        for part, role in info.trial_studies(name):
            part_id = _study_id(db, part)
            if part_id is None:
                raise Unanswered(f"no study {part!r} of search {name!r}")
            parts.append((part_id, role))
        found = _best(db, parts)
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
            compute=compute(_all_fields(db, parts)),
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
    "LEFT JOIN trial_user_attributes r ON r.trial_id = t.trial_id AND r.key = :legacy_role "
    "WHERE t.study_id IN :ids AND t.state = 'COMPLETE' AND v.objective = 0 AND v.value_type = 'FINITE'"
)
_TRIAL_ATTRS = "SELECT key, value_json FROM trial_user_attributes WHERE trial_id = :id"
_ALL_ATTRS = (
    "SELECT t.trial_id, t.study_id, t.state, a.key, a.value_json FROM trials t "
    "LEFT JOIN trial_user_attributes a ON a.trial_id = t.trial_id WHERE t.study_id IN :ids "
    "ORDER BY t.trial_id"
)
_PARAMS = (
    "SELECT param_name, param_value, distribution_json FROM trial_params WHERE trial_id = :id "
    "ORDER BY param_id"
)


def _all_fields(db: _Reader, parts: Sequence[tuple[int, str | None]]) -> list[dict[str, Any]]:
    """The record fields of every trial of the studies ``parts`` (study id, default role), decoded
    as :func:`tfg_search.store.record.read` decodes them, in one query."""
    roles = dict(parts)
    attrs: dict[int, dict[str, Any]] = {}
    meta: dict[int, tuple[int, bool]] = {}
    for trial_id, study_id, state, key, value in db.rows(_ALL_ATTRS, ids=list(roles)):
        meta[int(trial_id)] = (int(study_id), str(getattr(state, "name", state)) == "FAIL")
        if key is not None:
            attrs.setdefault(int(trial_id), {})[str(key)] = json.loads(value)
    return [
        record_fields(attrs.get(trial_id, {}), failed=failed, role=roles[study_id])
        for trial_id, (study_id, failed) in meta.items()
    ]


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


def _load(db: _Reader, name: str) -> tuple[int, StudyInfo]:
    """The id and tfg-search info of study ``name``, with the messages of
    :func:`tfg_search.store.studies.load_study` and :func:`tfg_search.store.studies.study_info`."""
    study_id = _study_id(db, name)
    if study_id is None:
        names = [n for _, n in db.rows(_STUDIES) if not n.endswith(SEARCH_SUFFIX)]
        listed = ", ".join(names) if names else "none"
        raise TFGSearchError(f"no study named {name!r} in this storage; studies: {listed}")
    info = StudyInfo.of({STUDY_ATTR: _study_attrs(db, STUDY_ATTR, study_id).get(study_id)})
    if info is None:
        raise TFGSearchError(f"study {name!r} was not made by tfg-search (no {STUDY_ATTR!r} attr)")
    return study_id, info


def _search(db: _Reader, name: str) -> tuple[str, int, StudyInfo]:
    """The main study of search ``name`` (given by its main or its search study's name)."""
    study_id, info = _load(db, name)
    if info.is_search_study and info.main_study:
        name = info.main_study
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
        _CANDIDATES, ids=ids, body=TRIAL_ATTR, legacy_role=LEGACY_ROLE_ATTR
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
        if role == SEARCH and first_beam is None:
            first_beam = candidate
    return first_beam


def _role(candidate: _Candidate) -> str | None:
    """A candidate's role, decoded as :func:`tfg_search.store.layout.record_fields` decodes it."""
    attrs: dict[str, Any] = {}
    if candidate.body is not None:
        attrs[TRIAL_ATTR] = json.loads(candidate.body)
    if candidate.legacy_role is not None:
        attrs[LEGACY_ROLE_ATTR] = json.loads(candidate.legacy_role)
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

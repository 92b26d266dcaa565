"""A search's summary: what ``tfg-search studies``, ``best`` and ``export`` answer, kept by the
search itself in a table of tfg-search's own, ``tfg_search_summaries``, beside Optuna's tables.

The writer of a search (:class:`tfg_search.run.loop.SearchLoop`, holding the study's lease)
writes its row before it makes its studies and after every result it tells: what the search is
(its study info), how many trials both studies hold, whether it is finished, its answer (the
best final re-run, or before the finals the top of the search's own ranking), and what the whole
search spent (:func:`tfg_search.store.layout.compute`). A reader (:mod:`tfg_search.store.query`)
needs that table and the names of the studies, with SQLAlchemy Core: two queries whatever the size
of the searches, without Optuna or torch, so the query commands answer in a fraction of a second
(benchmarks/query_speed.py), and nothing they do writes. The rows are data derived from the
studies: a search writes its own, ``tfg-search migrate`` writes those of studies made before the
table; a row whose study was deleted (with Optuna's tools) is not read, and is dropped by the next
search or migration that opens the database.

Example:
    >>> info = StudyInfo("gmm2d", "3", "tfg", {"steps": 10, "task_options": {}}, layout=3)
    >>> best = {"role": "final", "trial": 0, "score": 0.9, "params": {"rho": 0.5}, "config": {"rho": 0.5},
    ...         "metrics": {"validity": 0.9}, "samples": 32}
    >>> s = summary(trials=12, finished=True, best=best, compute={"trials": {}})
    >>> payload("N", info, s)["score"], s["finished"]
    (0.9, True)
"""

from __future__ import annotations

import datetime as dt
import json
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from tfg_search.store.layout import SEARCH_SUFFIX, StudyInfo

if TYPE_CHECKING:
    import sqlalchemy

__all__ = [
    "TABLE",
    "best_fields",
    "drop_rows",
    "migrate_hint",
    "optuna_studies",
    "payload",
    "read_rows",
    "study_names",
    "summary",
    "write_row",
]

TABLE = "tfg_search_summaries"
"""tfg-search's own table: one row per search (``study``, its ``info`` and ``summary`` as JSON)."""


def _table(metadata: Any) -> sqlalchemy.Table:
    import sqlalchemy as sa

    return sa.Table(
        TABLE,
        metadata,
        sa.Column("study", sa.String(512), primary_key=True),
        sa.Column("info", sa.Text, nullable=False),
        sa.Column("summary", sa.Text, nullable=False),
    )


_MADE: weakref.WeakSet[Any] = weakref.WeakSet()
"""Engines whose database is known to hold the table (checked once per engine)."""


def _make_table(engine: sqlalchemy.Engine) -> sqlalchemy.Table:
    """The table, created in ``engine``'s database when it is missing (two launchers may race to
    create it on a server: the loser finds it made)."""
    import sqlalchemy as sa

    table = _table(sa.MetaData())
    if engine not in _MADE:
        try:
            table.create(engine, checkfirst=True)
        except sa.exc.DBAPIError:
            if not sa.inspect(engine).has_table(TABLE):
                raise
        _MADE.add(engine)
    return table


def write_row(engine: sqlalchemy.Engine, study: str, info: StudyInfo, kept: Mapping[str, Any]) -> None:
    """Write (or replace) the row of search ``study``, making the table when it is missing.

    Two launchers that make the same search at once (before either holds its lease) may both
    insert its first row: the later insert fails on the key and is done again, after the other's.
    """
    import sqlalchemy as sa

    table = _make_table(engine)
    row = {"study": study, "info": json.dumps(info.attr()), "summary": json.dumps(kept)}
    for attempt in range(3):
        try:
            with engine.begin() as conn:
                conn.execute(sa.delete(table).where(table.c.study == study))
                conn.execute(sa.insert(table).values(**row))
            return
        except sa.exc.IntegrityError:
            if attempt == 2:
                raise


def optuna_studies() -> sqlalchemy.TableClause:
    """Optuna's study table, its name and id columns: the one part of Optuna's own schema that
    tfg-search reads without Optuna (:func:`study_names`, :func:`drop_rows`; the table that
    :func:`~tfg_search.store.database.connection` checks for)."""
    import sqlalchemy as sa

    return sa.table("studies", sa.column("study_id"), sa.column("study_name"))


def study_names(conn: sqlalchemy.Connection) -> list[str]:
    """The names of the studies in the database, in the order Optuna made them: so that the query
    commands know which searches still exist and which studies are not tfg-search's without
    importing Optuna (half a second of imports, alembic's included: more than the rest of a
    query). tests/test_query.py checks it against Optuna's own list of study names."""
    import sqlalchemy as sa

    studies = optuna_studies()
    return [str(n) for (n,) in conn.execute(sa.select(studies.c.study_name).order_by(studies.c.study_id))]


def drop_rows(engine: sqlalchemy.Engine) -> int:
    """Drop the rows of searches whose studies are gone (deleted with Optuna's tools); how many.

    One statement: a row stays while its answer study or its search study exists (a search being
    made writes its row after its search study and before its answer study).
    """
    import sqlalchemy as sa

    if not sa.inspect(engine).has_table(TABLE):
        return 0
    table = _table(sa.MetaData())
    live = sa.select(optuna_studies().c.study_name)
    gone = sa.and_(table.c.study.not_in(live), (table.c.study + SEARCH_SUFFIX).not_in(live))
    with engine.begin() as conn:
        return conn.execute(sa.delete(table).where(gone)).rowcount


def read_rows(conn: sqlalchemy.Connection) -> dict[str, tuple[StudyInfo, dict[str, Any]]]:
    """Every row's (info, summary), by study name (rows of deleted studies included: the reader
    keeps those whose study exists); empty when no search of this version ran here."""
    import sqlalchemy as sa

    if not sa.inspect(conn).has_table(TABLE):
        return {}
    table = _table(sa.MetaData())
    out = {}
    for study, info, kept in conn.execute(sa.select(table.c.study, table.c.info, table.c.summary)):
        parsed = StudyInfo.parse(json.loads(info))
        if parsed is not None:
            out[str(study)] = (parsed, json.loads(kept))
    return out


def migrate_hint(study: str, layout: int, storage: str | None) -> str:
    """The one line a command says of a study of an earlier layout: run ``tfg-search migrate``.

    Example:
        >>> migrate_hint("N", 2, "sqlite:///s.db")[:58]
        "study 'N' was written by tfg-search 0.2 (layout 2); run `t"
    """
    version = {1: "0.1", 2: "0.2"}.get(layout)
    said = (
        f"was written by tfg-search {version} (layout {layout})"
        if version
        else f"has no summary row (layout {layout}, written by a development version)"
    )
    where = f" --storage {storage}" if storage else ""
    return f"study {study!r} {said}; run `tfg-search migrate{where}` once to use it with this version"


def best_fields(record: Any) -> dict[str, Any]:
    """What a summary keeps of the record it answers with (a :class:`~tfg_search.store.record.
    TrialRecord`): role, trial, score, params, config, metrics, samples."""
    return {
        "role": record.role,
        "trial": record.number,
        "score": record.value,
        "params": dict(record.params),
        "config": record.config,
        "metrics": dict(record.metrics or {}),
        "samples": record.samples,
    }


def summary(
    *,
    trials: int,
    finished: bool,
    best: Mapping[str, Any] | None,
    compute: Mapping[str, Any],
    transfer: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A search's summary (what its row keeps, :func:`write_row`).

    Args:
        trials: trials of both studies.
        finished: whether the search and its final re-runs are all told.
        best: :func:`best_fields` of its answer (None before any result).
        compute: what the search spent.
        transfer: the sources it started from and what its start spent
            (:func:`tfg_search.run.transfer.summary_of`; None: made without transfer).
    """
    out = {
        "trials": trials,
        "finished": finished,
        "best": dict(best) if best is not None else None,
        "compute": dict(compute),
        "updated": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
    }
    if transfer is not None:
        out["transfer"] = dict(transfer)
    return out


def payload(study: str, info: StudyInfo, kept: Mapping[str, Any]) -> dict[str, Any]:
    """What ``tfg-search best --json`` prints (and ``export`` writes) for a search, from its
    summary ``kept``: its answer, what it searches, and what the whole search spent."""
    best = kept["best"] or {}
    return {
        "study": study,
        "task": info.task,
        "target": info.target,
        "method": info.method,
        "task_options": info.settings.get("task_options", {}),
        "model_identity": info.model_identity,
        "steps": info.settings["steps"],
        "role": best.get("role"),
        "trial": best.get("trial"),
        "score": best.get("score"),
        "params": dict(best.get("params") or {}),
        "config": best.get("config"),
        "metrics": dict(best.get("metrics") or {}),
        "samples": best.get("samples"),
        "compute": dict(kept["compute"]),
        "transfer": kept.get("transfer"),
    }

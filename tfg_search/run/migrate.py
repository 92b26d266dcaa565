"""``tfg-search migrate``: bring the studies of earlier versions to this version's layout, once.

This version reads one layout (:data:`tfg_search.store.layout.LAYOUT`, 3): a search is two studies
(``N`` the answer, ``N:search`` its trials), one JSON record per trial, and a summary row in
tfg-search's own table (:mod:`tfg_search.store.summary`), which the query commands read. A study of
an earlier version is read only after it is migrated (a query on it says so in one line); no read
ever writes. For each tfg-search search in the storage:

* **layout 3 without its summary row** (a database of a development version between 0.2 and 0.3):
  its row is written;
* **layout 2** (tfg-search 0.2): its summary row is written (from its trials, through Optuna) and
  its layout set to 3; no trial changes (its records keep 0.2's role ``"beam"``, read as
  ``"search"``);
* **layout 1** (tfg-search 0.1: one study for the search and its finals, one user attr per record
  field): rebuilt as two studies of today's layout: ``N:search`` made with the search trials, ``N``
  made again with the finals (their ``source_trial`` renumbered), every trial with its state,
  values, parameters, times and one JSON record, the sampler's claims in their one attribute, then
  the summary row. Its trial numbers within each study change; nothing else does.

Each migrated search's info (:class:`~tfg_search.store.layout.StudyInfo`) is written to both its
studies as their system attr, with the short user attr beside it
(:func:`~tfg_search.store.studies.save_info`); the earlier version's user attr of the info stays
as it was (read no more).

Rows of searches whose studies were deleted (with Optuna's tools) are dropped.

Safety: an SQLite file is copied first (``FILE.before-migrate-<time>``, printed); the migration of
a PostgreSQL database only runs with ``--yes``, after the command has said to back it up
(``pg_dump``). A study held by a live launcher (:mod:`tfg_search.store.lease`) is left alone.
Running it again migrates nothing more.

Example:
    >>> rows = migrate("sqlite:///old-studies.db")  # doctest: +SKIP
    >>> rows[0].study, rows[0].from_layout  # doctest: +SKIP
    ('gmm2d-3-tfg-43e62bc5', 1)
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from searchers import optuna_internals
from tfg_search.errors import TFGSearchError
from tfg_search.store.database import is_sqlite_file, redact, resolve_storage
from tfg_search.store.layout import (
    FINAL,
    LAYOUT,
    SEARCH,
    TRIAL_ATTR,
    StudyInfo,
    passes_of,
    record,
    search_study_name,
)
from tfg_search.store.lease import read_lease
from tfg_search.store.studies import open_storage, save_info
from tfg_search.store.summary import drop_rows, read_rows
from tfg_search.trial import FAILURE_INTERRUPTED, FAILURE_TRIAL

__all__ = ["Migrated", "migrate"]

LEGACY_FIELDS = (
    *("role", "round", "config", "samples", "seed", "steps", "source_trial"),
    *("metrics", "error", "wall_time_s", "device", "node", "attempts"),
)
"""Layout 1's record fields, one user attr each (its failure kind was not stored: "interrupted" as
the error meant an interrupted trial, any other error a failed configuration)."""
LEGACY_CLAIM = ("TFGBeamSampler:key", "TFGBeamSampler:round", "TFGBeamSampler:space")
"""The beam sampler's claim as tfg-search 0.1 stored it, one attribute per field."""
REQUEUE = "TFGBeamSampler:requeue"


@dataclass(frozen=True)
class Migrated:
    """One study migrated: its name, the layout it had, and what was done."""

    study: str
    from_layout: int
    done: str


def migrate(storage: str | None = None, *, yes: bool = False) -> tuple[list[Migrated], str | None]:
    """Migrate every tfg-search search of an earlier layout in ``storage`` (module docstring).

    Returns:
        (the studies migrated, the SQLite backup copy made, if any).

    Raises:
        TFGSearchError: a PostgreSQL (or other server) database without ``yes``; a study held by
            a live launcher; a storage that cannot be opened.
    """
    raw = resolve_storage(storage)
    rdb = open_storage(storage, create=False)
    old = _to_migrate(rdb)
    if not old:
        return [], None
    drop_rows(rdb.engine)
    backup = None
    if is_sqlite_file(raw):
        backup = _backup(raw)
    elif not yes:
        raise TFGSearchError(
            f"{len(old)} search(es) in {redact(raw)} need migrating; back the database up first "
            "(e.g. pg_dump), then rerun with --yes"
        )
    rows = []
    for name, info in old:
        lease = read_lease(optuna.load_study(study_name=name, storage=rdb))
        if lease is not None and lease.alive(ttl=30.0):
            raise TFGSearchError(f"study {name!r} is being run ({lease.describe()}); migrate once it stopped")
        if info.layout < 2:
            _rebuild_layout_1(rdb, name)
            done = "rebuilt as its answer study and its search study, with its summary row"
        else:
            done = "summary row written"
        _finish(rdb, name)
        rows.append(Migrated(name, info.layout, done))
    return rows, backup


def _to_migrate(rdb: optuna.storages.RDBStorage) -> list[tuple[str, StudyInfo]]:
    """The searches of an earlier layout, or without their summary row."""
    with rdb.engine.connect() as conn:
        rows = read_rows(conn)
    out = []
    for s in rdb.get_all_studies():
        info = StudyInfo.of(s)
        if (
            info is not None
            and not info.is_search_study
            and (info.layout < LAYOUT or s.study_name not in rows)
        ):
            out.append((s.study_name, info))
    return out


def _backup(url: str) -> str:
    """A consistent copy of an SQLite database file beside it (the online backup API)."""
    import sqlite3

    from sqlalchemy.engine import make_url

    path = Path(make_url(url).database)  # type: ignore[arg-type]
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    copy = path.with_name(f"{path.name}.before-migrate-{stamp}")
    if copy.exists():
        raise TFGSearchError(f"{copy} exists; rerun in a second")
    source = sqlite3.connect(path)
    try:
        target = sqlite3.connect(copy)
        with target:
            source.backup(target)
        target.close()
    finally:
        source.close()
    shutil.copymode(path, copy)
    return str(copy)


def _finish(rdb: optuna.storages.BaseStorage, name: str) -> None:
    """Set the layout of search ``name`` to this one's and write its summary row."""
    from tfg_search.run.coordinator import strategy_of
    from tfg_search.run.loop import SearchLoop
    from tfg_search.run.settings import ResolvedSettings
    from tfg_search.store.studies import load_search

    main = optuna.load_study(study_name=name, storage=rdb)
    info = StudyInfo.of(main)
    assert info is not None
    info = dataclasses.replace(info, layout=LAYOUT)
    save_info(main, info)  # (an earlier version's user attr of the info is kept as it was)
    search = optuna.load_study(study_name=search_study_name(name), storage=rdb)
    save_info(search, info.search_study(name))
    resolved = ResolvedSettings.from_stored(info.settings)
    strategy = strategy_of(resolved, info)
    loop = SearchLoop(load_search(rdb, name, sampler=strategy.sampler), resolved, strategy)
    _ = loop.done  # (settles its phase: a search whose finals are all told is finished)
    loop.write_summary()


def _rebuild_layout_1(rdb: optuna.storages.BaseStorage, name: str) -> None:
    """Layout 1 -> two studies of today's layout (module docstring)."""
    old = optuna.load_study(study_name=name, storage=rdb)
    trials = old.get_trials(deepcopy=True)
    requeued = {
        int(key.split(":")[-1])
        for key, value in optuna_internals.study_system_attrs(old).items()
        if key.startswith(REQUEUE + ":") and value
    }
    user_attrs = dict(old.user_attrs)
    search = optuna.create_study(study_name=search_study_name(name), storage=rdb, direction="maximize")
    numbers: dict[int, int] = {}
    finals = []
    for t in trials:
        fields = _legacy_fields(t)
        if fields.get("role") == FINAL:
            finals.append((t, fields))
            continue
        numbers[t.number] = len(numbers)
        system = _claim(t.system_attrs)
        if optuna_internals.trial_id(t) in requeued:
            system[REQUEUE] = True
        search.add_trial(_copy(t, {**fields, "role": SEARCH}, system))
    optuna.delete_study(study_name=name, storage=rdb)
    main = optuna.create_study(study_name=name, storage=rdb, direction="maximize")
    for key, value in user_attrs.items():
        main.set_user_attr(key, value)
    for t, fields in finals:
        source = fields.get("source_trial")
        fields = {**fields, "source_trial": numbers.get(source, source)}
        main.add_trial(_copy(t, fields, {k: v for k, v in t.system_attrs.items() if k != "fixed_params"}))


def _legacy_fields(t: FrozenTrial) -> dict[str, Any]:
    """A layout-1 trial's record fields (its per-field user attrs)."""
    fields = {k: t.user_attrs.get(k) for k in LEGACY_FIELDS}
    if t.state == TrialState.FAIL:
        interrupted = fields.get("error") == FAILURE_INTERRUPTED
        fields["failure"] = FAILURE_INTERRUPTED if interrupted else FAILURE_TRIAL
    fields["role"] = FINAL if fields.get("role") == FINAL else SEARCH
    fields["passes"] = passes_of(fields)
    return {k: v for k, v in fields.items() if v is not None}


def _claim(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """A trial's system attrs with 0.1's three claim attributes as today's one."""
    out = {k: v for k, v in attrs.items() if k not in LEGACY_CLAIM}
    key, round_, space = (attrs.get(k) for k in LEGACY_CLAIM)
    if key is not None or space is not None:
        out["TFGBeamSampler:claim"] = {"key": key, "round": round_, "space": space}
    return out


def _copy(t: FrozenTrial, fields: Mapping[str, Any], system_attrs: Mapping[str, Any]) -> FrozenTrial:
    """Trial ``t`` as a new trial of another study, with one JSON record."""
    return FrozenTrial(
        number=0,
        state=t.state,
        value=None,
        values=t.values,
        datetime_start=t.datetime_start,
        datetime_complete=t.datetime_complete,
        params=dict(t.params),
        distributions=dict(t.distributions),
        user_attrs={TRIAL_ATTR: record(**fields)[TRIAL_ATTR]},
        system_attrs=dict(system_attrs),
        intermediate_values=dict(t.intermediate_values),
        trial_id=0,
    )

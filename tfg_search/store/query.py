"""The read path of a study database: what the query commands and the Python API answer.

``tfg-search studies``, ``best`` and ``export``, and :func:`list_searches` / :func:`best_payload` /
:func:`load_best` in Python, read with SQLAlchemy Core (no Optuna, no torch, nothing written) the
table of tfg-search's own where each search keeps its summary (:mod:`tfg_search.store.summary`:
what it is, its trials, finished or not, its answer, what it spent) and the names of the studies
in the database (:func:`~tfg_search.store.summary.study_names`, the one read of Optuna's own
schema here). So they answer in a fraction of a second whatever the size
of the searches (benchmarks/query_speed.py: the time of a command is its imports), and a search
whose studies were deleted with Optuna's tools is not listed.

The studies without a summary row are read through Optuna (its study list and attributes, only
when there is one: a second of imports): studies that are not tfg-search's (listed with their
trial count) and tfg-search studies of an earlier layout (a query on one says in one line to run
``tfg-search migrate``, which writes their rows).

Example:
    >>> rows = list_searches("sqlite:///tfg-studies.db")  # doctest: +SKIP
    >>> best_payload("sqlite:///tfg-studies.db", rows[0]["study"])["config"]  # doctest: +SKIP
    {'rho': 0.5, 'mu': 1.0, ...}
    >>> config, metrics = load_best("sqlite:///tfg-studies.db", rows[0]["study"])  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tfg_search.errors import TFGSearchError
from tfg_search.store.database import connection, redact, resolve_storage
from tfg_search.store.layout import SEARCH_SUFFIX, StudyInfo
from tfg_search.store.summary import migrate_hint, payload, read_rows, study_names

if TYPE_CHECKING:
    from tfg_search.guidance.config import TFGConfig

__all__ = ["best_payload", "list_searches", "load_best"]


@dataclass(frozen=True)
class _Study:
    """A study as the queries see it: tfg-search's info (None: not tfg-search's), its summary (None:
    an earlier layout, not migrated) and, for a study that is not tfg-search's, its trial count."""

    name: str
    info: StudyInfo | None
    kept: dict[str, Any] | None
    trials: int | None = None


def _read(storage: str | None) -> dict[str, _Study]:
    """Every study of the database but the search studies (``N:search``) of tfg-search's searches,
    by name, in the order they were made."""
    with connection(storage, create=False) as conn:
        names = study_names(conn)
        rows = read_rows(conn)
    out: dict[str, _Study] = {}
    others = []
    for name in names:
        if name in rows:
            out[name] = _Study(name, *rows[name])
        elif name.endswith(SEARCH_SUFFIX) and name[: -len(SEARCH_SUFFIX)] in rows:
            continue
        else:
            out[name] = _Study(name, None, None)
            others.append(name)
    if others:  # not tfg-search's, or an earlier layout's: what Optuna says of them
        out.update(_through_optuna(storage, others))
    return {n: s for n, s in out.items() if s.info is None or not s.info.is_search_study}


def _through_optuna(storage: str | None, names: list[str]) -> dict[str, _Study]:
    """The studies ``names`` (without a summary row), through Optuna's storage: their info when
    tfg-search made them, else their trial count."""
    from tfg_search.store.studies import open_storage

    rdb = open_storage(storage, create=False)
    wanted = set(names)
    out = {}
    for s in rdb.get_all_studies():
        if s.study_name not in wanted:
            continue
        info = StudyInfo.of(s)
        trials = None if info is not None else rdb.get_n_trials(rdb.get_study_id_from_name(s.study_name))
        out[s.study_name] = _Study(s.study_name, info, None, trials)
    return out


def list_searches(storage: str | None = None) -> list[dict[str, Any]]:
    """One row per search in the database at ``storage``: study, task, target, method, trials,
    best score, finished (and ``layout``: a study of an earlier layout lists what its study
    attribute says, with ``trials``, ``best`` and ``finished`` None until it is migrated).

    Search studies (``N:search``) are listed with their main study, not on their own; studies not
    made by tfg-search are listed with empty fields and their trial count.

    Raises:
        TFGSearchError: the database cannot be read (the message says why).
    """
    rows = []
    for s in _read(storage).values():
        row: dict[str, Any] = {"study": s.name, "task": None, "target": None, "method": None}
        if s.info is None:
            rows.append({**row, "trials": s.trials, "best": None, "finished": False, "layout": None})
            continue
        best = (s.kept or {}).get("best") or {}
        row.update(task=s.info.task, target=s.info.target, method=s.info.method)
        rows.append(
            {
                **row,
                "trials": None if s.kept is None else s.kept["trials"],
                "best": best.get("score"),
                "finished": None if s.kept is None else s.kept["finished"],
                "layout": s.info.layout,
            }
        )
    return rows


def best_payload(storage: str | None, study_name: str) -> dict[str, Any]:
    """What ``tfg-search best --json`` prints for search ``study_name`` (its main study, or its
    search study): its answer (the best final re-run, else, before the finals, the top of the
    search's own ranking) with what it searches and what it spent (:func:`summary.payload
    <tfg_search.store.summary.payload>`).

    Raises:
        TFGSearchError: no such study, not a tfg-search study, one of an earlier layout (run
            ``tfg-search migrate``), no result yet, or the database cannot be read.
    """
    studies = _read(storage)
    name = study_name
    if name not in studies and name.endswith(SEARCH_SUFFIX):
        name = name[: -len(SEARCH_SUFFIX)]  # a search named by its search study
    found = studies.get(name)
    if found is None:
        listed = ", ".join(studies) if studies else "none"
        raise TFGSearchError(f"no study named {study_name!r} in this storage; studies: {listed}")
    if found.info is None:
        raise TFGSearchError(f"study {study_name!r} was not made by tfg-search (no 'tfg_search' attr)")
    if found.kept is None:
        shown = redact(resolve_storage(storage)) if storage else None
        raise TFGSearchError(migrate_hint(found.name, found.info.layout, shown))
    if not found.kept.get("best"):
        raise TFGSearchError(f"study {found.name!r} has no completed trial yet")
    return payload(found.name, found.info, found.kept)


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

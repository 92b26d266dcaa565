"""The read path of a study database: what the query commands and the Python API answer.

``tfg-search studies``, ``best`` and ``export``, and :func:`list_searches` / :func:`best_payload` /
:func:`load_best` in Python, read through Optuna's storage the list of studies with their user
attributes (one query), where each search keeps its summary (:mod:`tfg_search.store.summary`:
trials, finished or not, its answer, what it spent), and count the trials of studies that are not
tfg-search's. So they answer in well under a second whatever the size of the searches
(benchmarks/query_speed.py), they never read Optuna's tables but through Optuna, they import
neither torch nor the search (tests/test_query.py), and nothing they do writes. A study of an
earlier layout has no summary: a query on it says in one line to run ``tfg-search migrate``.

Example:
    >>> rows = list_searches("sqlite:///tfg-studies.db")  # doctest: +SKIP
    >>> best_payload("sqlite:///tfg-studies.db", rows[0]["study"])["config"]  # doctest: +SKIP
    {'rho': 0.5, 'mu': 1.0, ...}
    >>> config, metrics = load_best("sqlite:///tfg-studies.db", rows[0]["study"])  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from tfg_search.errors import TFGSearchError
from tfg_search.store.database import redact, resolve_storage
from tfg_search.store.layout import LAYOUT, SEARCH_SUFFIX, StudyInfo
from tfg_search.store.summary import SUMMARY_ATTR, migrate_hint, payload

if TYPE_CHECKING:
    from tfg_search.guidance.config import TFGConfig

__all__ = ["best_payload", "list_searches", "load_best"]


def list_searches(storage: str | None = None) -> list[dict[str, Any]]:
    """One row per search in the database at ``storage``: study, task, target, method, trials,
    best score, finished (and ``layout``: a study of an earlier layout lists what its study
    attribute says, with ``best`` and ``finished`` None until it is migrated).

    Search studies (``N:search``) are listed with their main study, not on their own; studies not
    made by tfg-search are listed with empty fields and their trial count.

    Raises:
        TFGSearchError: the database cannot be read (the message says why).
    """
    rdb = _open(storage)
    rows = []
    for s in rdb.get_all_studies():
        info = StudyInfo.of(s.user_attrs)
        if info is not None and info.is_search_study:
            continue
        row: dict[str, Any] = {"study": s.study_name, "task": None, "target": None, "method": None}
        if info is None:
            n = rdb.get_n_trials(rdb.get_study_id_from_name(s.study_name))
            rows.append({**row, "trials": n, "best": None, "finished": False, "layout": None})
            continue
        kept = _summary(s.user_attrs, info)
        best = (kept or {}).get("best") or {}
        row.update(task=info.task, target=info.target, method=info.method)
        rows.append(
            {
                **row,
                "trials": None if kept is None else kept["trials"],
                "best": best.get("score"),
                "finished": None if kept is None else kept["finished"],
                "layout": info.layout,
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
    rdb = _open(storage)
    studies = {s.study_name: s for s in rdb.get_all_studies()}
    found = studies.get(study_name)
    if found is None:
        names = [n for n in studies if not n.endswith(SEARCH_SUFFIX)]
        listed = ", ".join(names) if names else "none"
        raise TFGSearchError(f"no study named {study_name!r} in this storage; studies: {listed}")
    info = StudyInfo.of(found.user_attrs)
    if info is None:
        raise TFGSearchError(f"study {study_name!r} was not made by tfg-search (no 'tfg_search' attr)")
    if info.is_search_study and info.main_study in studies:
        found = studies[info.main_study]
        info = StudyInfo.of(found.user_attrs)
        assert info is not None
    kept = _summary(found.user_attrs, info)
    if kept is None:
        shown = redact(resolve_storage(storage)) if storage else None
        raise TFGSearchError(migrate_hint(found.study_name, info.layout, shown))
    if not kept.get("best"):
        raise TFGSearchError(f"study {found.study_name!r} has no completed trial yet")
    return payload(found.study_name, info, kept)


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


def _open(storage: str | None) -> Any:
    """The database as Optuna's storage, for reading (never created, its schema not migrated)."""
    from tfg_search.store.studies import open_storage

    return open_storage(storage, create=False)


def _summary(user_attrs: Mapping[str, Any], info: StudyInfo) -> dict[str, Any] | None:
    """A search's summary, or None for a study of an earlier layout (not migrated yet)."""
    kept = user_attrs.get(SUMMARY_ATTR)
    return dict(kept) if info.layout >= LAYOUT and isinstance(kept, Mapping) else None

"""A search's summary: what ``tfg-search studies``, ``best`` and ``export`` answer, kept by the
search itself in one study user attribute of its answer study (no Optuna, no torch).

The writer of a search (:class:`tfg_search.run.loop.SearchLoop`, holding the study's lease)
writes :data:`SUMMARY_ATTR` when it opens the search and after every result it tells: how many
trials both studies hold, whether the search is finished, its answer (the best final re-run, or
before the finals the top of the search's own ranking) as :func:`payload` shows it, and what the
whole search spent (:func:`tfg_search.store.layout.compute`). A reader then needs the study list
and that one attribute: a few queries whatever the size of the search, so the query commands
answer in well under a second on studies of thousands of trials (benchmarks/query_speed.py), and
nothing they do writes. The summary is data derived from the trials: ``tfg-search migrate``
writes it for studies made before it existed.

Example:
    >>> info = StudyInfo("gmm2d", "3", "tfg", {"steps": 10, "task_options": {}}, layout=LAYOUT)
    >>> best = {"role": "final", "trial": 0, "score": 0.9, "params": {"rho": 0.5}, "config": {"rho": 0.5},
    ...         "metrics": {"validity": 0.9}, "samples": 32}
    >>> s = summary(trials=12, finished=True, best=best, compute={"trials": {}})
    >>> payload("N", info, s)["score"], s["finished"]
    (0.9, True)
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from tfg_search.store.layout import LAYOUT, StudyInfo  # noqa: F401 (LAYOUT: the doctest)

__all__ = ["SUMMARY_ATTR", "best_fields", "migrate_hint", "payload", "summary"]

SUMMARY_ATTR = "tfg_search:summary"
"""Study user attr of a search's answer study: its summary (:func:`summary`)."""


def migrate_hint(study: str, layout: int, storage: str | None) -> str:
    """The one line a command says of a study of an earlier layout: run ``tfg-search migrate``.

    Example:
        >>> migrate_hint("N", 2, "sqlite:///s.db")[:58]
        "study 'N' was written by tfg-search 0.2 (layout 2); run `t"
    """
    version = {1: "0.1", 2: "0.2"}.get(layout, "an earlier version")
    where = f" --storage {storage}" if storage else ""
    return (
        f"study {study!r} was written by tfg-search {version} (layout {layout}); run "
        f"`tfg-search migrate{where}` once to use it with this version"
    )


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
    *, trials: int, finished: bool, best: Mapping[str, Any] | None, compute: Mapping[str, Any]
) -> dict[str, Any]:
    """A search's summary (the value of :data:`SUMMARY_ATTR`).

    Args:
        trials: trials of both studies.
        finished: whether the search and its final re-runs are all told.
        best: :func:`best_fields` of its answer (None before any result).
        compute: what the search spent.
    """
    return {
        "trials": trials,
        "finished": finished,
        "best": dict(best) if best is not None else None,
        "compute": dict(compute),
        "updated": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
    }


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
        "steps": info.settings["steps"],
        "role": best.get("role"),
        "trial": best.get("trial"),
        "score": best.get("score"),
        "params": dict(best.get("params") or {}),
        "config": best.get("config"),
        "metrics": dict(best.get("metrics") or {}),
        "samples": best.get("samples"),
        "compute": dict(kept["compute"]),
    }

"""Everything tfg-search stores: the study database, the stored layout, the two studies of a search.

* :mod:`~tfg_search.store.database`: storage URLs (shown without their password) and a checked
  connection; no Optuna.
* :mod:`~tfg_search.store.layout`: the stored layout (layout 3): the one module that spells
  stored keys and how a trial's record decodes; no Optuna.
* :mod:`~tfg_search.store.record`: the trial record on Optuna's trials (``TrialRecord``).
* :mod:`~tfg_search.store.studies`: the two Optuna studies of a search (``SearchStudies``).
* :mod:`~tfg_search.store.summary`: each search's summary row, in tfg-search's own table
  ``tfg_search_summaries`` (SQLAlchemy Core; no Optuna).
* :mod:`~tfg_search.store.lease`: one live launcher per study.
* :mod:`~tfg_search.store.query`: the read path of the query commands and the Python API, from
  the summary rows (``load_best``, ``best_payload``, ``list_searches``; these three are also
  importable from here).

Nothing here imports torch or :mod:`tfg_search.run`.

Example:
    >>> from tfg_search.store import load_best
    >>> config, metrics = load_best("sqlite:///tfg-studies.db", "digits-3-tfg-1a2b3c4d")  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

__all__ = ["best_payload", "list_searches", "load_best"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from tfg_search.store import query

        return getattr(query, name)
    raise AttributeError(f"module 'tfg_search.store' has no attribute {name!r}")

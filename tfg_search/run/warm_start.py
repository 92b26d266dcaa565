"""Warm start of a TFG search from the methods it contains (``tfg-search search --seed-presets``).

Each earlier method (DPS, LGD, FreeDoM, MPGD, UGD) is a point of TFG's space
(:func:`tfg_search.guidance.config.search_point`). Its strength is its own searched best when the
storage holds a search of that method for the same task, target and steps (the best answer of
them when several do, as their summaries say), else the middle value of the task's
single-strength lattice. The points open the search (the rung search's spread, the beam's round
0), so that it starts from the best known of them.
"""

from __future__ import annotations

from typing import Any

import optuna

from tfg_search.guidance.config import METHODS, TFGConfig, search_point
from tfg_search.run.settings import ResolvedSettings
from tfg_search.store.layout import StudyInfo
from tfg_search.store.summary import read_rows

PRESET_METHODS: tuple[str, ...] = tuple(m for m in METHODS if m != "tfg")


def default_strength(task: Any) -> float:
    """The middle value of the task's single-strength lattice."""
    lattice = task.default_strength_space
    return lattice.value(lattice.size // 2)


def searched_strength(
    storage: optuna.storages.BaseStorage, resolved: ResolvedSettings, method: str
) -> tuple[float, str] | None:
    """(strength, study name) of the best search of ``method`` on the same task, target and steps."""
    found: tuple[float, float, str] | None = None
    with storage.engine.connect() as conn:  # type: ignore[attr-defined]
        kept_rows = read_rows(conn)
    for s in storage.get_all_studies():
        info = StudyInfo.of(s)
        if info is None or info.is_search_study:
            continue
        if (info.task, info.target, info.method) != (
            resolved.task,
            resolved.target,
            method,
        ):
            continue
        if info.settings.get("steps") != resolved.steps:
            continue
        _, kept = kept_rows.get(s.study_name, (None, {}))  # its answer, as the search keeps it
        best = kept.get("best") or {}
        if "strength" not in (best.get("params") or {}) or best.get("score") is None:
            continue
        if found is None or float(best["score"]) > found[0]:
            found = (float(best["score"]), float(best["params"]["strength"]), s.study_name)
    return None if found is None else (found[1], found[2])


def preset_seeds(
    storage: optuna.storages.BaseStorage, resolved: ResolvedSettings, task: Any
) -> list[dict[str, Any]]:
    """The earlier methods' points for round 0: ``{"method", "strength", "source", "params"}`` each."""
    seeds = []
    for method in PRESET_METHODS:
        known = searched_strength(storage, resolved, method)
        strength, source = known if known is not None else (default_strength(task), "default")
        point = search_point(TFGConfig.preset(method, strength, guidance_scale=resolved.guidance_scale))
        seeds.append({"method": method, "strength": strength, "source": source, "params": point})
    return seeds

"""Transfer: a new search of one target starts from the finished searches of other targets.

The rung search takes earlier searches as *sources* (:mod:`searchers.transfer`: their answers
open its first round, their models are its surrogate's prior, weighted by how well they rank
what the new search sees, and dropped when they rank it no better than chance). This module picks
the sources in a study database and freezes them:

* **Which searches** (automatic, the default of ``tfg-search search``): finished searches (their
  summary has an answer from the final re-runs) of the same task and model (the model identity
  that each study records; for studies without one, the same task options), the same method and
  the same settings of :data:`MATCH` (steps, objective, lattices, fixed structure, ...), and
  another target; samples, seed and the search algorithm may differ. One source per target: the
  most recently created of its searches. ``--transfer-from STUDY[,STUDY]`` names them instead
  (then a source that differs in a setting of :data:`MATCH` is used, and the difference is said
  and stored); ``--no-transfer`` uses none.
* **Frozen.** A source is copied into the new study's info when the study is created (its name,
  target, answer, and every evaluated point with its estimate and samples), so a source deleted
  or continued later changes nothing, and a resume is exact. The sources stay out of the study's
  name (the name hashes the settings).

:func:`suggest` answers what the sources predict for a target before any search (zero model
passes).

Example:
    >>> from optuna.trial import create_trial
    >>> t = create_trial(params={"rho": 0.5}, distributions={"rho": FloatDistribution(0, 2)}, value=0.7)
    >>> source_points([t], {"rho": Lattice(0.25, 2.0, 2.0, zero=True)}, maximize=True)
    [{'params': {'rho': 0.5}, 'score': 0.7, 'units': 1.0}]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import optuna
from optuna.distributions import FloatDistribution  # noqa: F401 (the example)
from optuna.trial import FrozenTrial, TrialState

from searchers import Lattice, optuna_internals
from tfg_search.errors import TFGSearchError
from tfg_search.store.layout import SEARCH_SUFFIX, StudyInfo

MATCH = (
    "method",
    "steps",
    "objective",
    "space",
    "search_schedules",
    "n_recur",
    "n_iter",
    "n_mc",
    "eta",
    "clip_x0",
    "guidance_scale",
)
"""Settings a source must share with the new search to be chosen automatically."""

__all__ = ["MATCH", "NoHistory", "find_sources", "predict", "source_points", "suggest", "summary_of"]


class NoHistory(TFGSearchError):
    """The storage holds nothing to transfer from (``tfg-search suggest`` exits 1 on it)."""


def source_points(
    trials: Sequence[FrozenTrial], lattices: Mapping[str, Lattice], maximize: bool
) -> list[dict[str, Any]]:
    """A search study's evaluated points: ``{"params", "score", "units"}`` each, the score being
    the point's estimate (the last intermediate value of a rung search's trial, whose step counts
    the sample units behind it; else the trial's value, one unit) signed so that larger is better
    (``maximize``), the parameters the lattice values (an Optuna search's exponents converted)."""
    from tfg_search.run.waves import lattice_params

    points = []
    for t in trials:
        if t.state not in (TrialState.COMPLETE, TrialState.PRUNED):
            continue
        if t.intermediate_values:
            step = max(t.intermediate_values)
            score, units = t.intermediate_values[step], float(max(step, 1))
        elif t.value is not None:
            score, units = t.value, 1.0
        else:
            continue
        if score is None or not math.isfinite(score):
            continue
        params = lattice_params(t.params, lattices)
        points.append({"params": params, "score": float(score if maximize else -score), "units": units})
    return points


def _differences(settings: Mapping[str, Any], resolved: Mapping[str, Any]) -> list[str]:
    return [k for k in MATCH if settings.get(k) != resolved.get(k)]


def _same_model(info: StudyInfo, identity: str | None, task_options: Mapping[str, Any]) -> bool:
    if info.model_identity is not None and identity is not None:
        return info.model_identity == identity
    return dict(info.settings.get("task_options") or {}) == dict(task_options)


def find_sources(
    storage: optuna.storages.BaseStorage,
    resolved: Any,
    model_identity: str | None,
    names: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """The sources of a new search (see the module docstring), frozen: each ``{"name", "target",
    "answer": {"params", "score"}, "differs": [setting, ...], "points": [...]}``.

    Args:
        storage: the study database.
        resolved: the new search's ``ResolvedSettings``.
        model_identity: the new search's model identity (``Task.model_identity()``).
        names: the sources by name (``--transfer-from``); None: chosen automatically.

    Raises:
        TFGSearchError: a named source that is missing, not a finished tfg-search search, of
            another task or of this search's own target.
    """
    from tfg_search.store.summary import read_rows

    want = resolved.to_dict()
    studies = {s.study_name: s for s in storage.get_all_studies()}
    with storage.engine.connect() as conn:  # type: ignore[attr-defined]
        rows = read_rows(conn)
    candidates: list[tuple[str, StudyInfo]] = []
    for name, study in studies.items():
        if name.endswith(SEARCH_SUFFIX) or (names is not None and name not in names):
            continue
        info = StudyInfo.of(study)
        if info is not None and not info.is_search_study:
            candidates.append((name, info))
    if names is not None:
        found = {n for n, _ in candidates}
        for n in names:
            if n not in found:
                raise TFGSearchError(
                    f"--transfer-from: no tfg-search study {n!r} in this storage; `tfg-search studies` "
                    "lists them"
                )
    chosen: dict[str, tuple[str, StudyInfo]] = {}
    for name, info in candidates:
        where = f"--transfer-from: study {name!r}"
        _, kept = rows.get(name, (None, {}))
        finished = bool(kept.get("finished")) and (kept.get("best") or {}).get("role") == "final"
        if info.task != resolved.task or info.target == resolved.target or not finished:
            if names is not None:
                why = (
                    f"is of task {info.task!r}"
                    if info.task != resolved.task
                    else "is of this search's own target"
                    if info.target == resolved.target
                    else "has not finished (no final re-runs)"
                )
                raise TFGSearchError(f"{where} {why}; name finished searches of other targets of this task")
            continue
        if names is None and (
            _differences(info.settings, want) or not _same_model(info, model_identity, resolved.task_options)
        ):
            continue
        earlier = chosen.get(info.target)
        if names is not None or earlier is None or (info.created or "") > (earlier[1].created or ""):
            chosen[info.target if names is None else name] = (name, info)
    sources = []
    for name, info in sorted(chosen.values()):
        search = studies[name + SEARCH_SUFFIX]
        maximize = search.directions[0] == optuna.study.StudyDirection.MAXIMIZE
        trials = storage.get_all_trials(optuna_internals.study_id(search), deepcopy=False)
        _, kept = rows[name]
        best = kept["best"]
        differs = _differences(info.settings, want)
        if not _same_model(info, model_identity, resolved.task_options):
            differs.append("model")
        sources.append(
            {
                "name": name,
                "target": info.target,
                "answer": {"params": best.get("params"), "score": best.get("score")},
                "differs": differs,
                "points": source_points(trials, resolved.lattices(), maximize),
            }
        )
    return sources


def summary_of(
    transfer: Mapping[str, Any] | None, report: Sequence[Mapping[str, Any]] = ()
) -> dict[str, Any]:
    """What ``best --json`` and the summary say of a search's transfer: its sources (name, target,
    the answer's score, points used / snapped / dropped, settings that differ)."""
    sources = list((transfer or {}).get("sources") or [])
    used = {r.get("name"): r for r in report}
    return {
        "mode": (transfer or {}).get("mode", "off"),
        "sources": [
            {
                "study": s["name"],
                "target": s["target"],
                "score": (s.get("answer") or {}).get("score"),
                "points": len(s.get("points") or []),
                **{k: used[s["name"]][k] for k in ("snapped", "dropped") if s["name"] in used},
                **({"differs": s["differs"]} if s.get("differs") else {}),
            }
            for s in sources
        ],
    }


def predict(
    storage: optuna.storages.BaseStorage, resolved: Any, model_identity: str | None
) -> dict[str, Any]:
    """The configuration the study database predicts for ``resolved``'s target before any search:
    the lattice point of highest mean over the sources' models (each fitted to the normal scores
    of its own points), with the sources it came from.

    Raises:
        NoHistory: no usable history (no finished search of another target of this model
            with the same settings of :data:`MATCH`).
    """
    from searchers import RungSchedule, TFGRungSampler

    sources = find_sources(storage, resolved, model_identity)
    if not sources:
        raise NoHistory(
            f"no finished search of another target of task {resolved.task!r} with these settings in "
            "this storage: nothing to suggest from; run `tfg-search search` for a first target"
        )
    sampler = TFGRungSampler(
        space=resolved.lattices(),
        schedule=RungSchedule(wave=1),
        synchronous=True,
        search_schedules=resolved.search_schedules,
        transfer=sources,
    )
    planner = sampler._planner(maximize=True)
    prior = planner.transfer
    if not prior:
        raise NoHistory("the earlier searches' points lie outside these lattices: nothing to suggest")
    mean = prior.means.mean(axis=0)
    best = max(range(len(prior.points)), key=lambda i: (mean[i], -i))
    return {
        "task": resolved.task,
        "target": resolved.target,
        "params": sampler._point_params(prior.points[best]),
        "sources": summary_of({"mode": "auto", "sources": sources}, sampler.transfer_report)["sources"],
        "passes": 0,
    }


def suggest(task: str, target: str, storage: str | None = None, **settings: Any) -> dict[str, Any]:
    """What ``tfg-search suggest`` answers, from Python: the configuration the storage's earlier
    searches of other targets predict for ``target`` (:func:`predict`), zero model passes.

    Args:
        task, target: what to suggest for.
        storage: the study database's URL (default: ``TFG_SEARCH_STORAGE``, else
            ``./tfg-studies.db``); read only.
        settings: other :class:`~tfg_search.run.settings.SearchSettings` fields the searches
            must share (``steps``, ``objective``, ``method``, ``task_options``, ...).

    Raises:
        NoHistory: the storage holds no usable history.

    Example:
        >>> suggest("gmm2d", "3", "sqlite:///studies.db", steps=8)["params"]  # doctest: +SKIP
        {'rho': 0.002, 'mu': 0.016, 'gamma': 1.0}
    """
    from tasks import get_task
    from tfg_search.run.settings import SearchSettings
    from tfg_search.store.studies import open_storage

    wanted = SearchSettings(task=task, target=target, **settings)
    loaded = get_task(task, wanted.task_options)
    return predict(open_storage(storage, create=False), wanted.resolve(loaded), loaded.model_identity())

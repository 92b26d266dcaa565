"""The trial record: the one owner of what tfg-search stores in Optuna's studies and how it reads it.

Layout of a search named ``N`` (layout 2, written since tfg-search 0.2):

* study ``N``, the *answer*: the final re-runs only (each a top beam configuration re-run at full
  size on a fresh seed). Optuna's own tools (``optuna best-trial``, ``study.best_trial``,
  optuna-dashboard) therefore name the same best as ``tfg-search best``.
* study ``N:search`` (:func:`search_study_name`): the beam trials, driven by
  :class:`searchers.TFGBeamSampler`.

Both studies carry the study user attr :data:`STUDY_ATTR` (what the search is, its settings, the
versions that made it, and ``layout``). Each trial carries **one** user attr, :data:`TRIAL_ATTR`, a
JSON object written in one go when the result is told (:func:`record`), so a trial costs one
attribute write, and the dashboard still shows every field. A final re-run is enqueued with
``{"role": "final", "source_trial": n}`` under the same key so that an interrupted one can be told
apart.

Studies written before layout 2 (one study holding beam and final trials, with one user attr per
field: ``role``, ``config``, ``metrics``, ...) are read by :func:`read` just the same, and a
resumed search of such a study keeps writing into it.

The names and the decoding of the attrs live in :mod:`tfg_search.store.layout` (no Optuna there, for the
query commands) and are re-exported here; this module adds the record on Optuna's trials.

Example:
    >>> attrs = record(role="beam", round=0, config={"rho": 0.5}, samples=64, seed=0, steps=50,
    ...                metrics={"validity": 0.8}, wall_time_s=1.5, device="cpu", node="n1")
    >>> sorted(attrs) == [TRIAL_ATTR]
    True
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from tfg_search.guidance.config import TFGConfig
from tfg_search.store.layout import (
    BEAM,
    FAILURE_ENVIRONMENT,
    FAILURE_INTERRUPTED,
    FAILURE_TRIAL,
    FINAL,
    LAYOUT,
    RETRIED_ON_RESUME,
    SEARCH_SUFFIX,
    STUDY_ATTR,
    TRIAL_ATTR,
    final_marker,
    record,
    record_fields,
    search_study_name,
)

__all__ = [
    "BEAM",
    "FAILURE_ENVIRONMENT",
    "FAILURE_INTERRUPTED",
    "FAILURE_TRIAL",
    "FINAL",
    "LAYOUT",
    "RETRIED_ON_RESUME",
    "SEARCH_SUFFIX",
    "STUDY_ATTR",
    "TRIAL_ATTR",
    "TrialRecord",
    "best",
    "final_marker",
    "outcome_record",
    "ranked",
    "read",
    "read_all",
    "record",
    "record_fields",
    "search_study_name",
]


@dataclass(frozen=True)
class TrialRecord:
    """One trial as tfg-search reads it, whatever layout wrote it.

    Attributes:
        number: the trial number in its study.
        study: the name of the study the trial is in.
        state: its Optuna state.
        value: its score (COMPLETE trials), else None.
        params: the suggested parameters (rho, mu, gamma, schedules, or strength).
        role: "beam" or "final" (None: not a tfg-search trial).
        round: beam round (None for finals).
        config: the configuration as a dict (``TFGConfig.to_dict()``), once told.
        samples, seed, steps: the evaluation's size, seed and DDIM steps.
        source_trial: for a final re-run, the number of the beam trial it re-runs.
        metrics: held-out metrics (COMPLETE trials).
        error: why the trial failed (FAIL trials).
        failure: FAILURE_TRIAL, FAILURE_ENVIRONMENT or FAILURE_INTERRUPTED for FAIL trials.
        wall_time_s, device, node, attempts: where and how long it ran.
    """

    number: int
    study: str
    state: TrialState
    value: float | None
    params: dict[str, Any] = field(default_factory=dict)
    role: str | None = None
    round: int | None = None
    config: dict[str, Any] | None = None
    samples: int | None = None
    seed: int | None = None
    steps: int | None = None
    source_trial: int | None = None
    metrics: dict[str, float] | None = None
    error: str | None = None
    failure: str | None = None
    wall_time_s: float | None = None
    device: str | None = None
    node: str | None = None
    attempts: int | None = None

    @property
    def ok(self) -> bool:
        """Completed with a finite score."""
        return self.state == TrialState.COMPLETE and self.value is not None and math.isfinite(self.value)

    @property
    def retry_on_resume(self) -> bool:
        """Failed for a reason that is not the configuration's (environment, interruption)."""
        return self.state == TrialState.FAIL and self.failure in RETRIED_ON_RESUME

    def tfg_config(self) -> TFGConfig:
        """The configuration as a :class:`TFGConfig` (raises KeyError before it is told)."""
        if self.config is None:
            raise KeyError(f"trial {self.number} of study {self.study!r} has no configuration yet")
        return TFGConfig.from_dict(self.config)


def read(trial: FrozenTrial, study_name: str = "", role: str | None = None) -> TrialRecord:
    """The record of one trial (layout 2, else the legacy per-field attrs).

    ``role`` is what the trial's study implies (the search study holds beam trials) when the
    trial itself does not say (a beam trial not yet told).
    """
    fields = record_fields(trial.user_attrs, failed=trial.state == TrialState.FAIL, role=role)
    value = trial.value if trial.state == TrialState.COMPLETE else None
    return TrialRecord(
        number=trial.number,
        study=study_name,
        state=trial.state,
        value=value,
        params=dict(trial.params),
        **fields,  # type: ignore[arg-type]
    )


def read_all(study: optuna.Study, role: str | None = None) -> list[TrialRecord]:
    """Every trial of ``study`` as records, in trial order."""
    return [read(t, study.study_name, role) for t in study.get_trials(deepcopy=False)]


def ranked(records: Iterable[TrialRecord], role: str) -> list[TrialRecord]:
    """Completed records of a role, best first; ties go to the lower trial number (everywhere)."""
    done = [r for r in records if r.role == role and r.ok]
    return sorted(done, key=lambda r: (-float(r.value), r.number))  # type: ignore[arg-type]


def best(records: Sequence[TrialRecord]) -> TrialRecord | None:
    """The reported best: the best final re-run, else (search not finished) the best beam trial."""
    for role in (FINAL, BEAM):
        top = ranked(records, role)
        if top:
            return top[0]
    return None


def outcome_record(
    *,
    role: str,
    round: int | None,
    config: TFGConfig,
    samples: int,
    seed: int,
    steps: int,
    source_trial: int | None,
    metrics: Mapping[str, float] | None,
    error: str | None,
    failure: str | None,
    wall_time_s: float,
    device: str,
    node: str,
    attempts: int,
) -> dict[str, Any]:
    """:func:`record` of a told trial: its spec and its outcome (the one write of its results)."""
    return record(
        role=role,
        round=round,
        config=config,
        samples=samples,
        seed=seed,
        steps=steps,
        source_trial=source_trial,
        metrics=dict(metrics) if metrics is not None else None,
        error=error,
        failure=failure,
        wall_time_s=wall_time_s,
        device=device,
        node=node,
        attempts=attempts,
    )

"""The trial record: a trial of either study of a search, as tfg-search reads it (on Optuna's trials).

What is stored, and how each layout decodes, is :mod:`tfg_search.store.layout` (the one module that
spells stored keys, without Optuna, so that the query commands decode trials the same way);
:class:`TrialRecord` is its reading of one Optuna trial. Ranking is the search's own
(:meth:`tfg_search.run.strategy.Strategy.ranking`), and what the query commands answer is the
search's summary (:mod:`tfg_search.store.summary`).

Example:
    >>> import optuna
    >>> from tfg_search.store.layout import record
    >>> study = optuna.create_study(direction="maximize")
    >>> trial = study.ask()
    >>> for key, value in record(role="search", round=0, config={"rho": 0.5}, samples=64).items():
    ...     trial.set_user_attr(key, value)
    >>> _ = study.tell(trial, 0.5)
    >>> read_all(study)[0].role, read_all(study)[0].value
    ('search', 0.5)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from tfg_search.guidance.config import TFGConfig
from tfg_search.store.layout import record_fields
from tfg_search.trial import RETRIED_ON_RESUME

__all__ = ["TrialRecord", "read", "read_all"]


@dataclass(frozen=True)
class TrialRecord:
    """One trial as tfg-search reads it, whatever layout wrote it.

    Attributes:
        number: the trial number in its study.
        study: the name of the study the trial is in.
        state: its Optuna state.
        value: its score: the value of a COMPLETE or PRUNED trial (a pruned rung-search point:
            its estimate), the last reported estimate of a RUNNING one (a rung-search point held
            for its promotion), else None.
        params: the suggested parameters (rho, mu, gamma, schedules, or strength).
        role: "search" or "final" (None: not a tfg-search trial).
        round: the search round it was asked in (a rung-search point: its first rung's; None for
            finals).
        config: the configuration as a dict (``TFGConfig.to_dict()``), once told.
        samples, seed, steps: the evaluation's size, seed and DDIM steps (a rung-search point: its
            samples in all, its first rung's seed).
        source_trial: for a final re-run, the number of the search trial it re-runs.
        metrics: held-out metrics (COMPLETE trials).
        error: why the trial failed (FAIL trials).
        failure: FAILURE_TRIAL, FAILURE_ENVIRONMENT or FAILURE_INTERRUPTED for FAIL trials.
        wall_time_s, device, node, attempts: where and how long it ran.
        passes: the model passes it spent (:func:`tfg_search.store.layout.passes_of`; None before
            it ran).
        rung: a rung-search point's highest rung evaluated (None: not a rung-search trial).
        evaluations: a rung-search point's evaluations, one per rung: ``rung``, ``samples``,
            ``seed``, ``score`` (the rung's own), ``metrics``, ``passes``, ``wall_time_s``,
            ``device``, ``node``, ``attempts``.
        interruptions: how often the trial was re-run in place after its search stopped.
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
    passes: dict[str, int] | None = None
    rung: int | None = None
    evaluations: list[dict[str, Any]] | None = None
    interruptions: int | None = None

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

    ``role`` is what the trial's study implies (the search study holds search trials) when the
    trial itself does not say (a search trial not yet told).
    """
    fields = record_fields(trial.user_attrs, role=role)
    value = trial.value if trial.state in (TrialState.COMPLETE, TrialState.PRUNED) else None
    if trial.state == TrialState.RUNNING and trial.intermediate_values:
        value = trial.intermediate_values[max(trial.intermediate_values)]
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

"""Optuna's own samplers on a search's lattices, in waves: ``tfg-search search --search gp|tpe|random``.

So that a user can check on their own task what the rung search buys, a search can instead run
Optuna's :class:`~optuna.samplers.GPSampler` (Gaussian-process BO), :class:`~optuna.samplers.
TPESampler` or :class:`~optuna.samplers.RandomSampler` over the same space, with the same study
layout, final re-runs, summary and queries (:class:`OptunaStrategy`, a
:class:`~tfg_search.run.strategy.Strategy`). Each sampler suggests every searched parameter's
lattice exponent (``suggest_int("<name>_exponent", ...)``, -1 for 0 where the lattice has it:
:func:`suggest_exponents`) and, where schedules are searched, its structure; the configuration of
a trial is the lattice point.

Trials are asked in *waves* of ``wave`` (what ``wave`` parallel workers run at once): trial ``n``
belongs to wave ``n // wave``; a wave is handed out whole, evaluated, and told before the next one
is asked; the samplers see the wave's trials as running meanwhile (TPE with its constant liar,
GP-BO with its batch acquisition over the running trials). The search stops once ``trials``
trials are done. Its ranking is the points evaluated, by their best score (ties: the lower trial
number); a point proposed again is drawn with the same seed, so it scores the same.

Each trial is proposed by a sampler seeded for that trial (:func:`trial_seed` of the search's
seed and the trial's number), made just before its parameters are suggested: a search stopped and
resumed proposes exactly what an uninterrupted one proposes (a sampler's random state would
otherwise restart with the process), and a trial asked but not evaluated when the search stopped
keeps the parameters it was given and is evaluated in place.

Example:
    >>> study = optuna.create_study(direction="maximize", sampler=make_optuna_sampler("random", 0))
    >>> WaveSearch("random", trials=16, wave=8).plan(study).pending
    8
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from searchers import Lattice, SearchPlan, optuna_internals
from tfg_search.guidance.config import STRUCTURES
from tfg_search.run.strategy import Strategy
from tfg_search.store.record import TrialRecord
from tfg_search.trial import RETRIED_ON_RESUME

EXPONENT = "_exponent"
"""Suffix of the parameter an Optuna sampler suggests for each lattice (its exponent)."""


def make_optuna_sampler(kind: str, seed: int) -> optuna.samplers.BaseSampler:
    """Optuna's sampler ``kind`` ("gp", "tpe" or "random") as a wave search uses it."""
    if kind == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if kind == "tpe":
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True)
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ValueError(f"unknown Optuna sampler {kind!r}; choose gp, tpe or random")


def suggest_exponents(
    trial: optuna.Trial, space: Mapping[str, Lattice], scheduled: set[str]
) -> dict[str, Any]:
    """Suggest each lattice's exponent (and a searched schedule); returns the trial's params."""
    params: dict[str, Any] = {}
    for name, lattice in space.items():
        key = name + EXPONENT
        params[key] = trial.suggest_int(key, lattice.lowest_exponent, lattice.size - 1)
        if name in scheduled:
            params[f"{name}_schedule"] = trial.suggest_categorical(f"{name}_schedule", list(STRUCTURES))
    return params


def lattice_params(params: Mapping[str, Any], space: Mapping[str, Lattice]) -> dict[str, Any]:
    """Exponent params -> the lattice values (and schedules) of the configuration."""
    out: dict[str, Any] = {}
    for name, value in params.items():
        if name.endswith(EXPONENT) and name[: -len(EXPONENT)] in space:
            out[name[: -len(EXPONENT)]] = space[name[: -len(EXPONENT)]].value(int(value))
        else:
            out[name] = value
    return out


def trial_seed(seed: int, number: int) -> int:
    """The seed of the sampler that proposes trial ``number`` of a search seeded ``seed``.

    Example:
        >>> trial_seed(0, 5) == trial_seed(0, 5) != trial_seed(0, 6)
        True
    """
    return int(np.random.SeedSequence([seed, number]).generate_state(1)[0])


def _counts(study: optuna.Study) -> tuple[int, int]:
    """(trials asked, trials running) of a search study; the interrupted or machine failures that
    tfg-search 0.2 stored as FAIL and asked again take no place."""
    asked = running = 0
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.FAIL and _retried(t):
            continue
        asked += 1
        running += t.state == TrialState.RUNNING
    return asked, running


def _retried(trial: FrozenTrial) -> bool:
    from tfg_search.store.layout import record_fields

    fields = record_fields(trial.user_attrs, role=None)
    return fields.get("failure") in RETRIED_ON_RESUME


class WaveSearch:
    """The search plan of an Optuna sampler run in waves.

    Args:
        kind: "gp", "tpe" or "random".
        trials: trials to run in all (failures of the environment and interruptions are redone).
        wave: trials asked at once.

    The Optuna sampler itself is the search study's (:func:`make_optuna_sampler`).
    """

    def __init__(self, kind: str, trials: int, wave: int) -> None:
        self.kind = kind
        self.trials = trials
        self.wave = wave

    def plan(self, study: optuna.Study) -> SearchPlan:
        """Where the search stands: the current wave, what may be asked now (the rest of a wave
        partly asked; a new wave once none runs), whether it is over."""
        asked, running = _counts(study)
        left = max(0, self.trials - asked)
        if asked % self.wave:  # a wave partly asked (stopped while its trials were asked)
            pending = min(self.wave - asked % self.wave, left)
        else:
            pending = 0 if running else min(self.wave, left)
        return SearchPlan(
            round=(asked - 1 if pending == 0 and asked else asked) // self.wave,
            candidates=[],
            pending=pending,
            running=running,
            exhausted=left == 0 and not running,
            ranking=[],  # OptunaStrategy.ranking ranks
        )

    def trial_round(self, trial: Any) -> int:
        """The wave a trial was asked in (its number counts the trials asked before it)."""
        return int(trial.number) // self.wave


class OptunaStrategy(Strategy):
    """``--search gp|tpe|random`` (see the module docstring)."""

    def make_sampler(self) -> optuna.samplers.BaseSampler:
        return make_optuna_sampler(self.resolved.search, self.resolved.seed)

    @property
    def waves(self) -> WaveSearch:
        r = self.resolved
        assert r.trials is not None and r.wave is not None
        return WaveSearch(r.search, r.trials, r.wave)

    def plan(self, search: optuna.Study) -> SearchPlan:
        return self.waves.plan(search)

    def new_trial(self, search: optuna.Study) -> optuna.Trial:
        trial_id = optuna_internals.storage(search).create_new_trial(optuna_internals.study_id(search))
        return optuna.Trial(search, trial_id)

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        seed = trial_seed(self.resolved.seed, trial.number)
        trial.study.sampler = make_optuna_sampler(self.resolved.search, seed)  # seeded for this trial
        return suggest_exponents(trial, self.resolved.lattices(), set(self.resolved.schedule_params()))

    def point(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return lattice_params(params, self.resolved.lattices())

    def round_of(self, trial: optuna.Trial) -> int | None:
        return self.waves.trial_round(trial)

    def ranking(self, search: optuna.Study, records: Sequence[TrialRecord]) -> list[TrialRecord]:
        done = sorted((r for r in records if r.ok), key=lambda r: (-float(r.value), r.number))  # type: ignore[arg-type]
        seen: set[tuple[tuple[str, Any], ...]] = set()
        points = []
        for r in done:
            key = tuple(sorted(r.params.items()))
            if key not in seen:
                seen.add(key)
                points.append(r)
        return points

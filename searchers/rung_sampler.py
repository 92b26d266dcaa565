"""The rung search as an Optuna sampler (its numeric part: :mod:`searchers.rungs`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial

from .base import LatticeSampler, SearchPlan
from .lattice import Lattice
from .replay import Attrs
from .rungs import RungPlanner, RungSchedule, units

if TYPE_CHECKING:
    from optuna.study import Study

__all__ = ["TFGRungSampler"]


class TFGRungSampler(LatticeSampler):
    """The rung search over geometric lattices: a spread start, Gaussian-process-guided refinement,
    then successive halving over sample sizes (:mod:`searchers.rungs`, docs/searchers.md).

    The default search of tfg-search. Its rounds are waves of ``schedule.wave`` parallel trials:
    ``schedule.spread`` points over the whole lattice (the ``seed_configs`` first, then a
    scrambled Sobol design), ``schedule.refine`` rounds of points proposed by a Gaussian process
    over the lattice exponents, then one round per entry of ``schedule.promote``: the best points
    so far re-evaluated on fresh samples, each rung doubling a survivor's samples. A trial asks
    how many units of samples to draw (:meth:`trial_units`) and at which rung (:meth:`trial_rung`:
    the objective's seed, common to a rung's candidates).

    Example:

        .. testcode::

            import optuna

            from searchers import Lattice, RungSchedule, TFGRungSampler

            space = {"rho": Lattice(0.25, 2.0, 16.0, zero=True), "mu": Lattice(0.25, 2.0, 16.0, zero=True)}
            sampler = TFGRungSampler(space=space, schedule=RungSchedule(wave=4), seed=0)


            def objective(trial):
                rho = trial.suggest_float("rho", 0.0, 16.0)
                mu = trial.suggest_float("mu", 0.0, 16.0)
                return -((rho - 2.0) ** 2) - (mu - 1.0) ** 2


            study = optuna.create_study(direction="maximize", sampler=sampler)
            study.optimize(objective)  # returns by itself when the search is exhausted
            assert sampler.is_exhausted(study)

    Args:
        space, search_schedules, start_schedules, seed_configs, poll_interval, barrier_timeout:
            as for :class:`~searchers.base.LatticeSampler` (the ``seed_configs`` open the spread).
        schedule: How the search spends its budget (default :class:`~searchers.RungSchedule`:
            rounds of 8, 16 spread points, 2 refine rounds, promote 4 then 2).
        seed: Seed of the spread design (and of the random sampling of parameters outside the
            space); the same seed gives the same search.
    """

    # The attribute names of tfg-search 0.2, whose TFGBeamSampler(mode="rungs") wrote this search.
    ATTRS = Attrs("TFGBeamSampler:")

    def __init__(
        self,
        *,
        space: Mapping[str, Lattice] | None = None,
        schedule: RungSchedule | None = None,
        search_schedules: bool | Sequence[str] = False,
        start_schedules: Mapping[str, str] | None = None,
        seed_configs: Sequence[Mapping[str, float | str]] | None = None,
        poll_interval: float = 0.1,
        barrier_timeout: float | None = None,
        seed: int = 0,
    ) -> None:
        if schedule is not None and not isinstance(schedule, RungSchedule):
            raise TypeError(f"schedule must be a searchers.RungSchedule, got {schedule!r}.")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {seed!r}.")
        self._schedule = schedule or RungSchedule()
        self._rungs = len(self._schedule.promote) + 1
        self._design_seed = seed
        super().__init__(
            space=space,
            search_schedules=search_schedules,
            start_schedules=start_schedules,
            seed_configs=seed_configs,
            poll_interval=poll_interval,
            barrier_timeout=barrier_timeout,
            seed=seed,
        )

    def _identity(self) -> dict[str, Any]:
        s = self._schedule
        # As tfg-search 0.2's TFGBeamSampler(mode="rungs") wrote it, so that its studies continue.
        budget = [s.wave, s.spread, s.refine, list(s.promote), s.beta, self._design_seed]
        return {"mode": "rungs", "rungs": budget}

    def _planner(self, maximize: bool) -> RungPlanner:
        return RungPlanner(self._keyspace, self._schedule, maximize, self._seeds, self._design_seed)

    @property
    def schedule(self) -> RungSchedule:
        """How the search spends its budget."""
        return self._schedule

    def plan(self, study: Study) -> SearchPlan:
        """Where the search stands, recomputed from the study's storage; ``ranking`` puts the
        points of the highest rung first, by their sample-weighted mean score."""
        return super().plan(study)

    def trial_rung(self, trial: FrozenTrial | optuna.Trial) -> int | None:
        """The rung of a trial's evaluation (0: first look at a point; rung ``j`` re-evaluates it
        on fresh samples), ``None`` outside the search."""
        key = self.trial_key(trial)
        return None if key is None else int(key[-1])

    def trial_units(self, trial: FrozenTrial | optuna.Trial) -> int:
        """How many units of samples the objective evaluates this trial on: 1 at rung 0, then
        ``2 ** (rung - 1)`` fresh units at rung ``rung >= 1`` (a point's total doubles at each
        rung). The objective draws ``unit_samples * trial_units(trial)`` samples, with a seed of
        its rung (:meth:`trial_rung`) common to the rung's candidates."""
        rung = self.trial_rung(trial)
        return 1 if rung is None else units(rung)

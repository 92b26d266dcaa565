"""The paper's beam doubling search as an Optuna sampler (its numeric part: :mod:`searchers.planner`)."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .base import LatticeSampler, SearchPlan
from .lattice import Lattice
from .planner import Planner
from .replay import Attrs
from .rungs import RungSchedule

if TYPE_CHECKING:
    from optuna.study import Study

__all__ = ["BeamPlan", "TFGBeamSampler"]


@dataclass(frozen=True)
class BeamPlan(SearchPlan):
    """:class:`~searchers.SearchPlan` of the beam, with its beam.

    Attributes:
        beam: Trial numbers of the current top ``top_k`` among everything evaluated so far, best
            first (``ranking[:top_k]``; once exhausted, the configurations to re-run at full size).
    """

    beam: list[int]


class TFGBeamSampler(LatticeSampler):
    """The paper's beam doubling search over geometric lattices (TFG, docs/algorithm.md, section 5).

    Each searched parameter takes values ``init * factor**k`` (:class:`~searchers.Lattice`).
    Round 0 evaluates the start point (every exponent 0) and its one-parameter neighbours (one
    exponent + 1). Each later round ranks every configuration evaluated so far, keeps the
    ``top_k`` best (the beam) and evaluates their one-parameter neighbours that are new. The study
    stops after ``max_rounds`` rounds (round 0 counts) or when a round has nothing new; with the
    defaults that is at most ``4 + 5 * 2 * 3 = 34`` evaluations.

    Ranking is direction-aware (``study.direction``). Failed trials (state FAIL or PRUNED, or a
    NaN value) rank below every completed one and are not re-run. Ties go to the configuration
    earlier in the search order (round, then place in the round), which in sequential use is the
    lower trial number. Each candidate is evaluated once, on one sample size: ``study.best_trial``
    is the top of the beam's ranking.

    Example:

        .. testcode::

            import optuna

            from searchers import Lattice, TFGBeamSampler


            def objective(trial):
                rho = trial.suggest_float("rho", 0.25, 8.0, log=True)
                gamma = trial.suggest_float("gamma", 0.001, 1.0, log=True)
                return -((rho - 2.0) ** 2) - gamma


            space = {"rho": Lattice(0.25, 2.0, 8.0), "gamma": Lattice(0.001, 10.0, 1.0)}
            sampler = TFGBeamSampler(space=space, top_k=2, max_rounds=6)
            study = optuna.create_study(direction="maximize", sampler=sampler)
            study.optimize(objective)  # returns by itself when the search is exhausted
            assert study.best_params == {"rho": 2.0, "gamma": 0.001}
            assert sampler.is_exhausted(study)

    Rounds, parallel use, restarts: see :class:`~searchers.base.LatticeSampler` and
    docs/searchers.md (the claim scheme, the barrier, surplus trials, :meth:`requeue`). Its
    stored attributes are prefixed ``"TFGBeamSampler:"``.

    Args:
        space, search_schedules, start_schedules, poll_interval, barrier_timeout, seed: as for
            :class:`~searchers.base.LatticeSampler`.
        top_k: Beam width.
        max_rounds: Round limit; round 0 counts.
        seed_configs: Warm start: configurations added to round 0 after the start point and its
            neighbours, each on its nearest lattice point (e.g. the earlier methods'
            configurations, so that the beam starts from the best of them).
        steps_down: The refined neighbourhood: a neighbour may also step one exponent down
            anywhere (the paper's steps up, and down to 0 from the lowest value where 0 is on
            the lattice), so that a beam started from a warm-start point can move both ways.
        mode: Deprecated (tfg-search 0.2's spelling, removed in 0.4): ``"rungs"`` builds a
            :class:`~searchers.TFGRungSampler` (give it ``schedule`` as ``rungs=``),
            ``"reference"`` this beam, ``"refined"`` this beam with ``steps_down=True``.
    """

    ATTRS = Attrs("TFGBeamSampler:")

    def __new__(cls, *args: Any, mode: str | None = None, rungs: RungSchedule | None = None, **kwargs: Any):
        if mode == "rungs":
            from .rung_sampler import TFGRungSampler

            warnings.warn(
                'TFGBeamSampler(mode="rungs") is deprecated; use TFGRungSampler(schedule=...) '
                "(the same search; removed in tfg-search 0.4)",
                FutureWarning,
                stacklevel=2,
            )
            if args:
                raise TypeError("TFGRungSampler takes keyword arguments only: space=..., schedule=...")
            kwargs.pop("top_k", None)
            kwargs.pop("max_rounds", None)
            return TFGRungSampler(schedule=rungs, **kwargs)
        return super().__new__(cls)

    def __init__(
        self,
        *,
        space: Mapping[str, Lattice] | None = None,
        top_k: int = 2,
        max_rounds: int = 6,
        search_schedules: bool | Sequence[str] = False,
        start_schedules: Mapping[str, str] | None = None,
        seed_configs: Sequence[Mapping[str, float | str]] | None = None,
        steps_down: bool = False,
        poll_interval: float = 0.1,
        barrier_timeout: float | None = None,
        seed: int | None = None,
        mode: str | None = None,
        rungs: RungSchedule | None = None,
    ) -> None:
        if mode is not None:
            if mode not in ("reference", "refined"):
                raise ValueError(f"mode must be 'rungs', 'reference' or 'refined', got {mode!r}.")
            warnings.warn(
                f"TFGBeamSampler(mode={mode!r}) is deprecated: TFGBeamSampler is the paper's beam"
                + ("; for mode 'refined' give steps_down=True" if mode == "refined" else "")
                + " (removed in tfg-search 0.4)",
                FutureWarning,
                stacklevel=2,
            )
            steps_down = steps_down or mode == "refined"
        if rungs is not None:
            raise ValueError("rungs applies to the rung search: use TFGRungSampler(schedule=...).")
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k must be an int >= 1, got {top_k!r}.")
        if isinstance(max_rounds, bool) or not isinstance(max_rounds, int) or max_rounds < 1:
            raise ValueError(f"max_rounds must be an int >= 1, got {max_rounds!r}.")
        self._top_k = top_k
        self._max_rounds = max_rounds
        self._steps_down = bool(steps_down)
        super().__init__(
            space=space,
            search_schedules=search_schedules,
            start_schedules=start_schedules,
            seed_configs=seed_configs,
            poll_interval=poll_interval,
            barrier_timeout=barrier_timeout,
            seed=seed,
            steps_down=self._steps_down,
        )

    def _identity(self) -> dict[str, Any]:
        # The fingerprint of tfg-search 0.2's TFGBeamSampler(mode=...), so that its studies continue.
        return {"mode": "refined"} if self._steps_down else {}

    def _planner(self, maximize: bool) -> Planner:
        return Planner(self._keyspace, self._top_k, self._max_rounds, maximize, self._seeds)

    @property
    def top_k(self) -> int:
        """The beam width."""
        return self._top_k

    @property
    def steps_down(self) -> bool:
        """Whether a neighbour may also step one exponent down (the refined neighbourhood)."""
        return self._steps_down

    def plan(self, study: Study) -> BeamPlan:
        """Where the search stands, recomputed from the study's storage."""
        plan = super().plan(study)
        fields = {field.name: getattr(plan, field.name) for field in dataclasses.fields(plan)}
        return BeamPlan(**fields, beam=plan.ranking[: self._top_k])

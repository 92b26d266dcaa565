"""The coordinator: one process owns a study and runs the beam search on it through an executor.

Data flows one way: the beam sampler proposes a round, the executor evaluates it, each result is
told to the study as it arrives, the sampler proposes the next round; when the beam is exhausted
the top configurations are re-run at full size ("final" trials) and the best of those is the
answer. All search state is in the database, so a killed coordinator is restarted with the same
command and continues: trials it left RUNNING are marked failed and evaluated again (same seed),
nothing completed is repeated or lost.

Example:
    >>> from tfg_search.search import run_search  # doctest: +SKIP
    >>> from tfg_search.settings import SearchSettings  # doctest: +SKIP
    >>> report = run_search(SearchSettings(task="gmm2d", target="3"), "sqlite:///s.db")  # doctest: +SKIP
    >>> report.best_config, report.best_metrics["validity"]  # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
import math
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import TrialState

from searchers import TFGBeamSampler
from tfg_search.errors import TFGSearchError
from tfg_search.executors import Executor, LocalExecutor
from tfg_search.guidance.config import STRUCTURES, TFGConfig
from tfg_search.lease import StudyLease
from tfg_search.settings import ResolvedSettings, SearchSettings
from tfg_search.storage import (
    ROLE_ATTR,
    STUDY_ATTR,
    best_trial,
    open_storage,
    ranked_trials,
    redact,
    resolve_storage,
)
from tfg_search.worker import TrialOutcome, TrialSpec

EventHook = Callable[[str, dict[str, Any]], None]
"""Progress events: ("study", ...), ("round", ...), ("trial", ...), ("final", ...), ("done", ...)."""

INTERRUPTED = "interrupted"
"""Trial user attr "error" of a trial a dead coordinator left RUNNING."""


@dataclass
class SearchReport:
    """What a search ended with."""

    study_name: str
    storage: str
    best_config: TFGConfig
    best_metrics: dict[str, float]
    best_score: float
    best_role: str
    best_trial: int
    n_beam: int
    n_final: int
    n_failed: int
    wall_time_s: float
    resumed: bool
    top: list[dict[str, Any]] = field(default_factory=list)


def versions() -> dict[str, str]:
    """Versions of what produced a study (stored with it)."""
    import diffusers
    import torch

    import tfg_search

    return {
        "tfg_search": tfg_search.__version__,
        "optuna": optuna.__version__,
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "python": platform.python_version(),
    }


def make_sampler(resolved: ResolvedSettings) -> TFGBeamSampler:
    """The beam sampler a study of these settings uses."""
    return TFGBeamSampler(
        space=resolved.lattices(),
        top_k=resolved.top_k,
        max_rounds=resolved.rounds,
        search_schedules=resolved.search_schedules,
        seed=resolved.seed,
    )


def open_search_study(
    settings: SearchSettings, storage: str | None, study_name: str | None
) -> tuple[optuna.Study, ResolvedSettings, bool]:
    """Create the study of these settings, or load it to resume (refusing other settings).

    Returns:
        (study, resolved settings, resumed).
    """
    from tasks import get_task

    task = get_task(settings.task, settings.task_options)
    resolved = settings.resolve(task)
    rdb = open_storage(storage, create=True)
    name = study_name or resolved.study_name
    sampler = make_sampler(resolved)
    existing = {s.study_name for s in rdb.get_all_studies()}
    if name in existing:
        study = optuna.load_study(study_name=name, storage=rdb, sampler=sampler)
        stored = study.user_attrs.get(STUDY_ATTR)
        if not isinstance(stored, dict) or "settings" not in stored:
            raise TFGSearchError(
                f"study {name!r} exists and was not made by tfg-search; choose another --study"
            )
        diffs = resolved.differences(stored["settings"])
        if diffs:
            raise TFGSearchError(
                f"study {name!r} exists with other settings ({'; '.join(diffs)}); "
                "rerun with the stored settings, or pick another --study"
            )
        return study, resolved, True
    study = optuna.create_study(study_name=name, storage=rdb, sampler=sampler, direction="maximize")
    study.set_user_attr(
        STUDY_ATTR,
        {
            "task": resolved.task,
            "target": resolved.target,
            "method": resolved.method,
            "settings": resolved.to_dict(),
            "versions": versions(),
            "created": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
        },
    )
    return study, resolved, False


def _suggest(trial: optuna.Trial, resolved: ResolvedSettings) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for name, lattice in resolved.lattices().items():
        params[name] = trial.suggest_float(name, lattice.low, lattice.cap, log=not lattice.zero)
        if resolved.search_schedules:
            params[f"{name}_schedule"] = trial.suggest_categorical(f"{name}_schedule", list(STRUCTURES))
    return params


class Coordinator:
    """Runs one study's search through an executor (see the module docstring)."""

    def __init__(
        self,
        study: optuna.Study,
        resolved: ResolvedSettings,
        executor: Executor,
        device: str | None = None,
        on_event: EventHook | None = None,
    ) -> None:
        self.study = study
        self.resolved = resolved
        self.executor = executor
        self.device = device
        self.on_event = on_event or (lambda kind, data: None)
        self.sampler: TFGBeamSampler = study.sampler  # type: ignore[assignment]
        self._pending: dict[int, tuple[optuna.Trial, dict[str, Any], str, int]] = {}

    # -- recovery --------------------------------------------------------------------------
    def recover(self) -> int:
        """Mark trials a dead coordinator left RUNNING as failed and due again. Returns how many."""
        stale = [t for t in self.study.get_trials(deepcopy=False) if t.state == TrialState.RUNNING]
        for t in stale:
            self.study._storage.set_trial_user_attr(t._trial_id, "error", INTERRUPTED)
            if t.user_attrs.get(ROLE_ATTR) == "final":
                self.study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
            else:
                TFGBeamSampler.requeue(self.study, t.number)
        return len(stale)

    # -- one batch of trials ---------------------------------------------------------------
    def _spec(self, trial: optuna.Trial, params: dict[str, Any], role: str, rnd: int | None) -> TrialSpec:
        r = self.resolved
        config = r.config(params)
        final = role == "final"
        samples = r.final_samples if final else r.samples
        seed = r.seed + 1 if final else r.seed
        for key, value in (
            (ROLE_ATTR, role),
            ("config", config.to_dict()),
            ("round", rnd),
            ("samples", samples),
            ("seed", seed),
            ("steps", r.steps),
        ):
            trial.set_user_attr(key, value)
        return TrialSpec(
            trial.number,
            r.task,
            r.target,
            config,
            samples,
            seed,
            r.steps,
            self.device,
            task_options=dict(r.task_options) or None,
        )

    def _tell(self, trial: optuna.Trial, outcome: TrialOutcome) -> float | None:
        from tfg_search.objective import score

        trial.set_user_attr("wall_time_s", round(outcome.wall_time_s, 4))
        trial.set_user_attr("device", outcome.device)
        trial.set_user_attr("node", outcome.node)
        trial.set_user_attr("attempts", outcome.attempts)
        if outcome.metrics is None:
            trial.set_user_attr("error", outcome.error or "unknown error")
            self.study.tell(trial, state=TrialState.FAIL)
            return None
        trial.set_user_attr("metrics", outcome.metrics)
        value = score(outcome.metrics, self.resolved.objective)
        if not math.isfinite(value):
            trial.set_user_attr("error", f"non-finite score {value!r} from metrics {outcome.metrics}")
            self.study.tell(trial, state=TrialState.FAIL)
            return None
        self.study.tell(trial, value)
        return value

    def _run_batch(self, batch: Sequence[tuple[optuna.Trial, dict[str, Any], str, int | None]]) -> None:
        specs = [self._spec(t, p, role, rnd) for t, p, role, rnd in batch]
        by_number = {t.number: (t, p, role, rnd) for t, p, role, rnd in batch}
        for outcome in self.executor.map(specs):
            trial, params, role, rnd = by_number[outcome.number]
            value = self._tell(trial, outcome)
            self.on_event(
                "trial",
                {
                    "number": trial.number,
                    "role": role,
                    "round": rnd,
                    "params": params,
                    "value": value,
                    "error": outcome.error,
                    "samples": specs[0].samples,
                    "wall_time_s": outcome.wall_time_s,
                },
            )

    # -- the beam ---------------------------------------------------------------------------
    def run_beam(self) -> None:
        """Run rounds until the sampler says the search is exhausted."""
        while True:
            plan = self.sampler.plan(self.study)
            if plan.exhausted:
                return
            if plan.pending == 0:
                raise TFGSearchError(
                    f"round {plan.round} of study {self.study.study_name!r} has {plan.running} trial(s) "
                    "running elsewhere; is another process running this study without a lease?"
                )
            self.on_event(
                "round", {"round": plan.round, "candidates": len(plan.candidates), "pending": plan.pending}
            )
            batch = []
            for _ in range(plan.pending):
                trial = self.study.ask()
                try:
                    params = _suggest(trial, self.resolved)
                except optuna.TrialPruned:
                    self.study.tell(trial, state=TrialState.PRUNED)
                    continue
                batch.append((trial, params, "beam", self.sampler.trial_round(trial)))
            if not batch:
                return
            self._run_batch(batch)

    # -- the final re-runs --------------------------------------------------------------------
    def run_final(self) -> None:
        """Re-run the top configurations at full size (each once; interrupted ones again)."""
        r = self.resolved
        if r.final_top == 0:
            return
        top = ranked_trials(self.study, "beam")[: r.final_top]
        finals = [t for t in self.study.get_trials(deepcopy=False) if t.user_attrs.get(ROLE_ATTR) == "final"]
        done = {
            t.user_attrs.get("source_trial")
            for t in finals
            if t.state == TrialState.COMPLETE
            or (t.state == TrialState.FAIL and t.user_attrs.get("error") != INTERRUPTED)
        }
        todo = [t for t in top if t.number not in done]
        if not todo:
            return
        self.on_event("final", {"count": len(todo), "samples": r.final_samples})
        batch = []
        for source in todo:
            self.study.enqueue_trial(
                source.params, user_attrs={ROLE_ATTR: "final", "source_trial": source.number}
            )
            trial = self.study.ask()
            params = _suggest(trial, self.resolved)
            batch.append((trial, params, "final", None))
        self._run_batch(batch)

    def report(self, start: float, resumed: bool) -> SearchReport:
        trials = self.study.get_trials(deepcopy=False)
        best, role = best_trial(self.study)
        top = []
        for t in (ranked_trials(self.study, "final") or ranked_trials(self.study, "beam"))[:5]:
            top.append(
                {
                    "trial": t.number,
                    "role": t.user_attrs.get(ROLE_ATTR),
                    "score": t.value,
                    "params": dict(t.params),
                    "metrics": t.user_attrs.get("metrics", {}),
                }
            )
        return SearchReport(
            study_name=self.study.study_name,
            storage="",
            best_config=TFGConfig.from_dict(best.user_attrs["config"]),
            best_metrics=dict(best.user_attrs.get("metrics", {})),
            best_score=float(best.value),
            best_role=role,
            best_trial=best.number,
            n_beam=sum(1 for t in trials if t.user_attrs.get(ROLE_ATTR) == "beam" and t.state.is_finished()),
            n_final=sum(
                1 for t in trials if t.user_attrs.get(ROLE_ATTR) == "final" and t.state.is_finished()
            ),
            n_failed=sum(
                1 for t in trials if t.state == TrialState.FAIL and t.user_attrs.get("error") != INTERRUPTED
            ),
            wall_time_s=time.perf_counter() - start,
            resumed=resumed,
            top=top,
        )


def run_search(
    settings: SearchSettings,
    storage: str | None = None,
    study_name: str | None = None,
    executor: Executor | None = None,
    device: str | None = None,
    on_event: EventHook | None = None,
    lease_ttl: float = 30.0,
) -> SearchReport:
    """Run (or resume) a whole search: beam rounds, then the final re-runs.

    Raises:
        TFGSearchError: bad settings, a study with other settings, a study held by a live launcher.
    """
    start = time.perf_counter()
    study, resolved, resumed = open_search_study(settings, storage, study_name)
    hook = on_event or (lambda kind, data: None)
    executor = executor or LocalExecutor()
    with StudyLease(study, ttl=lease_ttl) as lease:
        coord = Coordinator(study, resolved, executor, device, hook)
        recovered = coord.recover() if resumed else 0
        done = sum(1 for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE)
        hook(
            "study",
            {
                "name": study.study_name,
                "resumed": resumed,
                "recovered": recovered,
                "completed": done,
                "previous_holder": lease.previous.describe() if lease.previous else None,
                "settings": resolved.to_dict(),
            },
        )
        coord.run_beam()
        coord.run_final()
        report = coord.report(start, resumed)
    report.storage = redact(resolve_storage(storage))
    hook("done", {"report": report})
    return report

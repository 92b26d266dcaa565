"""Ray Tune entry point: the same search, run by ``ray.tune.Tuner`` on the same SQL studies.

The main path (:func:`tfg_search.run.coordinator.run_search` with a
:class:`~tfg_search.run.executors.ray_pool.RayExecutor`) keeps warm actors; this module is for
users who already run their experiments with Tune (its resource scheduling, its result folders,
its callbacks). The search itself is the project's: :class:`BeamSearcher` hands out and tells
trials through the same :class:`~tfg_search.run.book.SearchBook` as the coordinator (the beam
in study ``N:search``, then the final re-runs in study ``N``) and gives Tune one trial spec per Tune
trial. Tune's ``ConcurrencyLimiter`` is a fixed cap, but the beam has a *round barrier* (round
r + 1 is only known once round r is told), so the searcher answers ``None`` ("nothing now, ask
later") while the barrier holds and :attr:`~ray.tune.search.Searcher.FINISHED` once the beam and
the final re-runs are handed out and told.

Each trial is stored as the coordinator stores it (its one record attribute,
:func:`tfg_search.store.layout.told`), under the same lease, so ``tfg-search best`` / ``export``,
optuna-dashboard and a later ``tfg-search search`` (which resumes) all work on the result.

Example:
    >>> from tfg_search.run.settings import SearchSettings  # doctest: +SKIP
    >>> from tfg_search.run.tune import run_tune_search  # doctest: +SKIP
    >>> settings = SearchSettings(task="gmm2d", target="3")  # doctest: +SKIP
    >>> studies = run_tune_search(settings, "sqlite:///s.db")  # doctest: +SKIP
    >>> studies.best().tfg_config()  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import socket
import tempfile
from collections import deque
from typing import Any

from ray.tune.search import Searcher

from tfg_search.paths import safe_name
from tfg_search.run.book import Pending, SearchBook
from tfg_search.run.coordinator import open_search_study
from tfg_search.run.executors.ray_pool import default_num_workers, init_ray
from tfg_search.run.settings import ResolvedSettings, SearchSettings
from tfg_search.store.lease import StudyLease
from tfg_search.store.record import TrialRecord
from tfg_search.store.studies import SearchStudies
from tfg_search.trial import FAILURE_ENVIRONMENT, TrialOutcome, TrialSpec

METRIC = "score"
"""What each Tune trial reports as its objective (the study's score; higher is better)."""
OUTCOME = "tfg_outcome"
"""Result key of the evaluation's outcome (JSON) that the searcher tells the study."""


def tune_trial(config: dict[str, Any]) -> dict[str, Any]:
    """The Tune trainable: evaluate one :class:`TrialSpec` (given as ``config["spec"]``).

    Returns the score (``-inf`` for a failed evaluation) and the outcome the searcher tells the study.
    """
    import ray
    import torch

    from tfg_search.run.objective import score
    from tfg_search.run.worker import run_trial

    torch.set_num_threads(max(1, int(config.get("cpus", 1))))
    spec: TrialSpec = config["spec"]
    if spec.device is None:
        spec = dataclasses.replace(spec, device="cuda" if ray.get_gpu_ids() else "cpu")
    outcome = run_trial(spec)
    value = score(outcome.metrics, config["objective"]) if outcome.metrics is not None else -math.inf
    node = f"{socket.gethostname()}/{ray.get_runtime_context().get_node_id()[:12]}"
    return {
        METRIC: value if math.isfinite(value) else -math.inf,
        # JSON, so Tune's flattening of nested results leaves it whole for the searcher
        OUTCOME: json.dumps(
            {
                "metrics": outcome.metrics,
                "error": outcome.error,
                "wall_time_s": outcome.wall_time_s,
                "device": outcome.device,
                "node": node,
                "failure": outcome.failure,
            }
        ),
    }


class BeamSearcher(Searcher):
    """A Tune searcher over a tfg-search study: beam rounds (with their barrier), then final re-runs.

    It hands out and tells trials through the same :class:`~tfg_search.run.book.SearchBook` as
    the CLI coordinator, so the study holds exactly what ``tfg-search search`` would write.

    Args:
        studies: the search's studies (from :func:`tfg_search.run.coordinator.open_search_study`).
        resolved: its resolved settings.
        device: device of every evaluation (None: "cuda" on a trial with a GPU, else "cpu").
        cpus: CPUs of each trial (its torch threads).
    """

    def __init__(
        self, studies: SearchStudies, resolved: ResolvedSettings, device: str | None = None, cpus: float = 1.0
    ) -> None:
        super().__init__(metric=METRIC, mode="max")
        self.book = SearchBook(studies, resolved, device)
        self._cpus = cpus
        self._live: dict[str, Pending] = {}
        self._finals: deque[TrialRecord] | None = None

    def _start(self, trial_id: str, pending: Pending) -> dict[str, Any]:
        self._live[trial_id] = pending
        return {"spec": pending.spec, "objective": list(self.book.resolved.objective), "cpus": self._cpus}

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        """The next configuration; None while the round barrier holds; FINISHED when all is told."""
        if self._finals is None:
            plan = self.book.plan()
            if not plan.exhausted:
                if plan.pending == 0:
                    return None  # the barrier: the round's last results are not told yet
                pending = self.book.ask_beam()
                return None if pending is None else self._start(trial_id, pending)
            if self._live:
                return None
            self._finals = deque(self.book.final_sources())
        if self._finals:
            return self._start(trial_id, self.book.ask_final(self._finals.popleft()))
        return None if self._live else Searcher.FINISHED

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        """Tell the study the trial's outcome (FAIL, for the environment, when the Tune trial errored)."""
        pending = self._live.pop(trial_id)
        raw = (result or {}).get(OUTCOME)
        if error or not isinstance(raw, str):
            reason = f"the Tune trial {trial_id} failed (its error is in Tune's experiment folder)"
            outcome = TrialOutcome(
                pending.number, None, reason, 0.0, "unknown", "unknown", failure=FAILURE_ENVIRONMENT
            )
        else:
            data = json.loads(raw)
            outcome = TrialOutcome(
                pending.number,
                data["metrics"],
                data["error"],
                float(data["wall_time_s"]),
                str(data["device"]),
                str(data["node"]),
                failure=data.get("failure"),
            )
        self.book.tell(pending, outcome)

    def save(self, checkpoint_path: str) -> None:
        """Nothing to save: every bit of search state is in the study's database."""

    def restore(self, checkpoint_path: str) -> None:
        """Nothing to restore: a new searcher on the same study continues it."""


def run_tune_search(
    settings: SearchSettings,
    storage: str | None = None,
    study_name: str | None = None,
    *,
    address: str | None = None,
    num_workers: int | None = None,
    cpus_per_trial: float = 1.0,
    gpus_per_trial: float = 0.0,
    device: str | None = None,
    tune_dir: str | None = None,
    lease_ttl: float = 30.0,
) -> SearchStudies:
    """Run (or resume) a tfg-search study through ``ray.tune.Tuner``; returns its studies.

    Args:
        settings, storage, study_name: as for :func:`tfg_search.run.coordinator.run_search`.
        address: Ray cluster to join ("auto", "host:port"); None starts a local Ray (shut down after).
        num_workers: concurrent Tune trials (default: what the cluster's resources allow).
        cpus_per_trial, gpus_per_trial: resources of each Tune trial.
        device: device of every evaluation (default: "cuda" on a trial with a GPU, else "cpu").
        tune_dir: where Tune keeps its experiment folder (default: a temporary folder, removed after;
            the results that matter are in the study).

    Raises:
        TFGSearchError: bad settings, a study with other settings, a study held by a live launcher,
            an unreachable cluster.
    """
    import ray
    from ray import tune

    studies, resolved, resumed = open_search_study(settings, storage, study_name)
    owns_ray = init_ray(address) if not ray.is_initialized() else False
    folder = tune_dir or tempfile.mkdtemp(prefix="tfg-tune-")
    try:
        with StudyLease(studies.main, ttl=lease_ttl):
            searcher = BeamSearcher(studies, resolved, device, cpus_per_trial)
            if resumed:
                searcher.book.recover()
            workers = num_workers or default_num_workers(
                ray.cluster_resources(), cpus_per_trial, gpus_per_trial
            )
            tuner = tune.Tuner(
                tune.with_resources(tune_trial, {"cpu": cpus_per_trial, "gpu": gpus_per_trial}),
                tune_config=tune.TuneConfig(
                    search_alg=searcher,
                    metric=METRIC,
                    mode="max",
                    num_samples=-1,
                    max_concurrent_trials=workers,
                    reuse_actors=True,
                ),
                run_config=tune.RunConfig(name=safe_name(studies.name), storage_path=folder, verbose=0),
            )
            tuner.fit()
    finally:
        if tune_dir is None:
            shutil.rmtree(folder, ignore_errors=True)
        if owns_ray:
            ray.shutdown()
    return studies

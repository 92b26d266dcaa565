"""Ray Tune entry point: the same search, run by ``ray.tune.Tuner`` on the same SQL studies.

The main path (:func:`tfg_search.run.coordinator.run_search` with a
:class:`~tfg_search.run.executors.ray_pool.RayExecutor`) keeps warm actors; this module is for
users who already run their experiments with Tune (its resource scheduling, its result folders,
its callbacks). The search itself is the project's: :class:`LoopSearcher` drives the same
:class:`~tfg_search.run.loop.SearchLoop` as the coordinator (the search in study ``N:search``,
then the final re-runs in study ``N``) and gives Tune one trial spec per Tune trial. Tune's
``ConcurrencyLimiter`` is a fixed cap, but a search has a *round barrier* (round r + 1 is only
known once round r is told), so the searcher answers ``None`` ("nothing now, ask later") while the
barrier holds and :attr:`~ray.tune.search.Searcher.FINISHED` once the search and the final
re-runs are handed out and told.

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
from typing import Any

from ray.tune.search import Searcher

from tfg_search.errors import TFGSearchError
from tfg_search.paths import safe_name
from tfg_search.run.coordinator import open_search_study
from tfg_search.run.executors.ray_pool import default_num_workers, init_ray, plain_worker_output
from tfg_search.run.loop import Pending, SearchLoop
from tfg_search.run.settings import SearchSettings
from tfg_search.store.lease import StudyLease
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


class LoopSearcher(Searcher):
    """A Tune searcher over a tfg-search study: its search rounds (with their barrier), then the
    final re-runs, through the same :class:`~tfg_search.run.loop.SearchLoop` as the CLI
    coordinator, so the study holds exactly what ``tfg-search search`` would write.

    Args:
        loop: the search's loop (from :func:`tfg_search.run.coordinator.open_search_study`).
        cpus: CPUs of each trial (its torch threads).
    """

    def __init__(self, loop: SearchLoop, cpus: float = 1.0) -> None:
        super().__init__(metric=METRIC, mode="max")
        self.loop = loop
        self._cpus = cpus
        self._live: dict[str, Pending] = {}

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        """The next configuration; None while the round barrier holds; FINISHED when all is told
        (or an evaluation failed for the machine's reason: the search stops, see
        :func:`run_tune_search`)."""
        if self.loop.done or self.loop.machine_failures:
            return Searcher.FINISHED
        pending = self.loop.ask()
        if pending is None:
            return None
        self._live[trial_id] = pending
        return {"spec": pending.spec, "objective": list(self.loop.resolved.objective), "cpus": self._cpus}

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
        self.loop.tell(pending, outcome)

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

    loop, resumed = open_search_study(settings, storage, study_name, device)
    studies = loop.studies
    plain_worker_output()  # off a terminal, the workers' lines without ANSI colour
    owns_ray = init_ray(address) if not ray.is_initialized() else False
    folder = tune_dir or tempfile.mkdtemp(prefix="tfg-tune-")
    try:
        with StudyLease(studies.main, ttl=lease_ttl):
            searcher = LoopSearcher(loop, cpus_per_trial)
            if resumed:
                loop.recover()
            loop.write_summary()
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
        if loop.machine_failures:
            raise TFGSearchError(
                f"{len(loop.machine_failures)} evaluation(s) failed for a reason of the machine "
                f"({loop.machine_failures[0][:300]}); fix it and rerun: they are re-run in place"
            )
    finally:
        if tune_dir is None:
            shutil.rmtree(folder, ignore_errors=True)
        if owns_ray:
            ray.shutdown()
    return studies

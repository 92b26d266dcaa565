"""The coordinator: one process owns a search and drives its loop through an executor.

Data flows one way: the search's loop (:class:`~tfg_search.run.loop.SearchLoop`) hands out a wave
of trials (a round of the search, then the final re-runs), the executor evaluates them, each
result is told as it arrives; when the search is exhausted the top configurations are re-run at
full size ("final" trials, in the main study) and the best of those is the answer. All search
state is in the database, so a stopped coordinator (Ctrl-C, SIGTERM, ``kill -9``, a machine
failure) is restarted with the same command and continues exactly: the evaluations it left in
flight are re-run in place, in their trials, with the same samples and seeds
(:meth:`~tfg_search.run.loop.SearchLoop.recover`), so the trials and the answer are those of a
search never stopped; nothing completed is repeated or lost.

Ctrl-C (and SIGTERM, where the caller turns it into KeyboardInterrupt, as the CLI does) stops
:func:`run_search` with :class:`SearchInterrupted`, which says how many evaluations were in flight.
Creating the two studies and taking the lease run with SIGINT / SIGTERM held (:func:`hold_signals`);
a search left half made by ``kill -9`` (one study of the two) is completed by the next run.

Example:
    >>> from tfg_search.run.coordinator import run_search  # doctest: +SKIP
    >>> from tfg_search.run.settings import SearchSettings  # doctest: +SKIP
    >>> report = run_search(SearchSettings(task="gmm2d", target="3"), "sqlite:///s.db")  # doctest: +SKIP
    >>> report.best_config, report.best_metrics["validity"]  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import platform
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna

from tfg_search.errors import TFGSearchError, TrialUserError
from tfg_search.guidance.config import TFGConfig
from tfg_search.run.damage import check_whole, lost_lease
from tfg_search.run.dashboard import write_notes
from tfg_search.run.executors import Executor, LocalExecutor
from tfg_search.run.faults import fault
from tfg_search.run.loop import SEARCHING, Counts, Pending, SearchLoop
from tfg_search.run.settings import ResolvedSettings, SearchSettings
from tfg_search.run.strategy import EarlierRungs, Strategy, is_0_2_rungs, strategy_for
from tfg_search.store.database import redact, resolve_storage
from tfg_search.store.layout import FINAL, LAYOUT, SEARCH, StudyInfo, compute, search_study_name
from tfg_search.store.lease import StudyLease
from tfg_search.store.studies import SearchStudies, load_search, open_storage, save_info
from tfg_search.store.summary import drop_rows, migrate_hint, summary, write_row
from tfg_search.trial import TrialOutcome

EventHook = Callable[[str, dict[str, Any]], None]
"""Progress events: ("study", ...), ("round", ...), ("trial", ...), ("final", ...), ("done", ...)."""


class SearchInterrupted(KeyboardInterrupt):
    """:func:`run_search` was stopped (Ctrl-C, or SIGTERM turned into KeyboardInterrupt).

    Attributes:
        study: the search's study name (None when it stopped before the study was open).
        stopped: how many evaluations were in flight (their trials stay RUNNING; the same
            search, run again, re-runs them in place).
    """

    def __init__(self, study: str | None, stopped: int) -> None:
        super().__init__(f"search {study!r} interrupted; {stopped} evaluation(s) stopped")
        self.study = study
        self.stopped = stopped


@contextlib.contextmanager
def hold_signals() -> Iterator[list[int]]:
    """Hold SIGINT and SIGTERM while the block runs: a signal that arrives is recorded in the
    yielded list instead of being acted on. Only in the main thread (elsewhere Python delivers
    no signals); a signal that is ignored stays ignored. The caller decides what a recorded
    signal means afterwards (:func:`redeliver`)."""
    got: list[int] = []
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            handler = signal.getsignal(sig)
            if handler in (signal.SIG_IGN, None):  # ignored, or set outside Python: leave it
                continue
            previous[sig] = handler
            signal.signal(sig, lambda signum, _frame: got.append(signum))
    try:
        yield got
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def redeliver(got: Sequence[int]) -> None:
    """Act on the first signal :func:`hold_signals` held (its handler runs now: for SIGINT, or
    the CLI's SIGTERM, a KeyboardInterrupt is raised here)."""
    if got:
        signal.raise_signal(got[0])


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
    counts: Counts
    wall_time_s: float
    resumed: bool
    top: list[dict[str, Any]] = field(default_factory=list)
    compute: dict[str, Any] = field(default_factory=dict)
    """What the whole study spent (:func:`tfg_search.store.layout.compute`: trials, passes, wall time)."""
    ranking: list[int] = field(default_factory=list)
    """The search's points as search-trial numbers, best first, by the search's own ranking."""
    transfer: dict[str, Any] | None = None
    """The sources it started from and what its start spent (None: no transfer), as in its summary."""

    @property
    def n_search(self) -> int:
        return self.counts.search

    @property
    def n_final(self) -> int:
        return self.counts.final

    @property
    def n_failed(self) -> int:
        return self.counts.failed


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


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()


def _existing(rdb: optuna.storages.BaseStorage, resolved: ResolvedSettings, name: str | None) -> str | None:
    """The study these settings continue: the given name, the derived one, or a study of
    tfg-search 0.1 (named by its hash of every setting, extendable ones included) whose settings
    differ only in ones that may grow."""
    summaries = rdb.get_all_studies()
    names = {s.study_name for s in summaries}
    if name is not None:
        return name if name in names else None
    for candidate in resolved.study_names():
        if candidate in names:
            return candidate
    prefix = f"{resolved.task}-{resolved.target}-{resolved.method}-"
    for s in summaries:
        info = StudyInfo.of(s)
        if (
            s.study_name.startswith(prefix)
            and info is not None
            and not info.is_search_study
            and info.versions.get("tfg_search", "0.1").startswith("0.1")
            and not resolved.differences(info.settings)
        ):
            return s.study_name
    return None


def open_search_study(
    settings: SearchSettings, storage: str | None, study_name: str | None, device: str | None = None
) -> tuple[SearchLoop, bool]:
    """Create the studies of these settings, or load them to resume (refusing other settings).

    A study searched with fewer ``rounds`` or a smaller ``final_top`` is continued (the stored
    settings are raised, with the change logged in the study's ``extended`` list).

    Returns:
        (the search's loop, resumed).
    """
    from tasks import get_task

    task = get_task(settings.task, settings.task_options)
    resolved = settings.resolve(task)
    rdb = open_storage(storage, create=True)
    drop_rows(rdb.engine)  # the rows of searches deleted since
    found = _existing(rdb, resolved, study_name)
    name = found or study_name or resolved.study_name
    check_whole(rdb, name, storage)  # a search a user took apart: one line, the command that starts over
    half_made = _half_made(rdb, name)
    if found is not None and half_made is None:
        main = optuna.load_study(study_name=found, storage=rdb)
        stored = StudyInfo.of(main)
        if stored is None or stored.is_search_study:
            raise TFGSearchError(
                f"study {found!r} exists and is not a tfg-search search; choose another study name"
            )
        if stored.layout < 2:
            raise TFGSearchError(migrate_hint(found, stored.layout, storage and redact(storage)))
        if stored.model_identity is not None and stored.model_identity != task.model_identity():
            raise TFGSearchError(
                f"study {found!r} searched another model (identity {stored.model_identity[:12]}..., "
                f"now {task.model_identity()[:12]}...: its weights or configs changed); restore that "
                "model, or search this one under another study name (--study)"
            )
        if stored.layout < LAYOUT:  # 0.2's layout: this run keeps its summary from now on
            stored = dataclasses.replace(stored, layout=LAYOUT)
            save_info(main, stored)
        diffs = resolved.differences(stored.settings)
        if diffs:
            raise TFGSearchError(
                f"study {found!r} exists with other settings ({'; '.join(diffs)}); "
                "rerun with the stored settings, or pick another study name"
            )
        extended = resolved.extensions(stored.settings)
        if extended:
            raised = {**stored.settings, **{k: new for k, (_, new) in extended.items()}}
            log = {"at": _now(), **{k: list(v) for k, v in extended.items()}}
            save_info(main, stored.with_settings(raised, log))
        strategy = strategy_of(resolved, stored)
        studies = load_search(rdb, found, sampler=strategy.sampler)
        if isinstance(strategy, EarlierRungs):
            _check_finished_0_2(studies, resolved)
        return SearchLoop(studies, resolved, strategy, device), True
    if half_made is not None:  # a run stopped between the two studies' writes: finish them
        warm, transfer = half_made.warm_start, half_made.transfer
        if resolved.differences(half_made.settings):
            raise TFGSearchError(f"study {name!r} exists with other settings; pick another study name")
    else:
        warm = []
        if resolved.seed_presets:
            from tfg_search.run.warm_start import preset_seeds

            warm = preset_seeds(rdb, resolved, task)
        transfer = _transfer(rdb, settings, resolved, task.model_identity())
    strategy = strategy_for(resolved, _seeds(resolved, warm), _sources(transfer))
    info = half_made or StudyInfo(
        task=resolved.task,
        target=resolved.target,
        method=resolved.method,
        settings=resolved.to_dict(),
        layout=LAYOUT,
        versions=versions(),
        created=_now(),
        warm_start=warm,
        model_identity=task.model_identity(),
        transfer=transfer,
    )
    with hold_signals() as got:  # both studies or neither: Ctrl-C waits for the four writes
        studies = create_search(rdb, name, info, strategy.sampler)
    redeliver(got)
    return SearchLoop(studies, resolved, strategy, device), False


def _half_made(rdb: optuna.storages.BaseStorage, name: str) -> StudyInfo | None:
    """The info of search ``name`` when a run was stopped while it made its two studies (the search
    study and its info are there; the answer study, or its info, is not), else None."""
    studies = {s.study_name: s for s in rdb.get_all_studies()}
    main, search = studies.get(name), studies.get(search_study_name(name))
    if main is not None and StudyInfo.of(main) is not None:
        return None
    info = StudyInfo.of(search) if search is not None else None
    if info is None or info.main_study != name:
        return None
    return dataclasses.replace(info, role=None, main_study=None)


def strategy_of(resolved: ResolvedSettings, info: StudyInfo) -> Strategy:
    """The strategy of a stored search: its own search with the warm start fixed when it was made
    (a finished rung search of tfg-search 0.2: read only, :class:`EarlierRungs`)."""
    if is_0_2_rungs(info.settings):
        return EarlierRungs(resolved)
    return strategy_for(resolved, _seeds(resolved, info.warm_start), _sources(info.transfer))


def _transfer(
    rdb: optuna.storages.BaseStorage, settings: SearchSettings, resolved: ResolvedSettings, identity: str
) -> dict[str, Any] | None:
    """The sources a new search starts from, frozen (:mod:`tfg_search.run.transfer`): chosen by
    the storage, or named by ``settings.transfer``; None without transfer."""
    from tfg_search.run.transfer import find_sources

    if settings.transfer is False:
        return None
    named = None if settings.transfer is True else list(settings.transfer)
    if resolved.search != "rungs":
        if named is not None:
            raise TFGSearchError(
                f"--transfer-from applies to the rung search (--search rungs), not --search {resolved.search}"
            )
        return None
    sources = find_sources(rdb, resolved, identity, named)
    if not sources:
        return None
    return {"mode": "auto" if named is None else "named", "sources": sources}


def _sources(transfer: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    return list((transfer or {}).get("sources") or [])


def _check_finished_0_2(studies: SearchStudies, resolved: ResolvedSettings) -> None:
    """A rung search of tfg-search 0.2 is read, not continued: it must have its final re-runs."""
    finals = [t for t in studies.main.get_trials(deepcopy=False)]
    done = [t for t in finals if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL)]
    if len(done) < resolved.final_top or len(done) < len(finals):
        raise TFGSearchError(
            f"study {studies.name!r} is a rung search of tfg-search 0.2 that did not finish; this version "
            "runs another rung search and does not continue it: finish it with tfg-search 0.2, or start a "
            "new search (another --study, or other settings); its trials stay readable"
        )


def _seeds(resolved: ResolvedSettings, warm_start: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The warm start of a search: its ``seed_configs``, then the presets' points fixed when the
    study was created (:mod:`tfg_search.run.warm_start`)."""
    return [*resolved.seed_configs, *(w["params"] for w in warm_start)]


def create_search(
    storage: optuna.storages.BaseStorage, name: str, info: StudyInfo, sampler: optuna.samplers.BaseSampler
) -> SearchStudies:
    """The two studies of search ``name``: ``N:search`` (sampled by ``sampler``), then ``N``, each
    with its info; the answer study's info is written last (a study with it is complete). Each
    step is skipped when already made, so a search left half made is completed."""
    search = optuna.create_study(
        study_name=search_study_name(name),
        storage=storage,
        sampler=sampler,
        direction="maximize",
        load_if_exists=True,
    )
    if StudyInfo.of(search) is None:
        save_info(search, info.search_study(name))
    engine = getattr(storage, "engine", None)
    if engine is not None:  # its summary row first: read only once its answer study exists
        write_row(engine, name, info, summary(trials=0, finished=False, best=None, compute=compute([])))
    fault("create")  # (a test's stop between the two studies)
    main = optuna.create_study(
        study_name=name,
        storage=storage,
        sampler=optuna.samplers.RandomSampler(),
        direction="maximize",
        load_if_exists=True,
    )
    save_info(main, info)
    write_notes(main, search, info)  # what optuna-dashboard shows of the two studies
    return SearchStudies(main, search, engine)


class Coordinator:
    """Runs one search's loop through an executor (see the module docstring)."""

    def __init__(self, loop: SearchLoop, executor: Executor, on_event: EventHook | None = None) -> None:
        self.loop = loop
        self.resolved = loop.resolved
        self.executor = executor
        self.on_event = on_event or (lambda kind, data: None)
        self.stopped = 0
        """Evaluations in flight when this process was stopped (re-run by the next run)."""
        self.evaluated = 0
        """Evaluations this process ran (0 when it resumed a finished search)."""

    def _run_batch(self, batch: Sequence[Pending]) -> list[float | None]:
        """Evaluate handed-out trials; each result is told as it arrives. A batch in which an
        evaluation failed for the machine's reason stops the search once it is told (its trials
        stay RUNNING: the same command re-runs them); the first evaluation that failed for the
        user's reason (their code raised) stops it at once with :class:`TrialUserError` (its
        trial, and those still in flight, stay RUNNING: the same command re-runs them after the
        fix)."""
        by_number = {p.number: p for p in batch}
        values: list[float | None] = []
        try:
            for outcome in self.executor.map([p.spec for p in batch]):
                pending = by_number[outcome.number]
                self.evaluated += 1
                value = self.loop.tell(pending, outcome)
                values.append(value)
                leader = self.loop.leader() if pending.role == SEARCH else None
                self.on_event(
                    "trial",
                    {
                        "number": pending.number,
                        "role": pending.role,
                        "round": pending.round,
                        "params": self.loop.point(pending.params),
                        "value": value,
                        "error": outcome.error if value is None else None,
                        "failure": outcome.failure if value is None else None,
                        "samples": pending.spec.samples,
                        "wall_time_s": outcome.wall_time_s,
                        "leader": None if leader is None else _leader(leader, self.loop),
                    },
                )
                if self.loop.user_failures:
                    raise _user_error(self.loop.user_failures[0], pending.number, self.loop.studies.name)
        except BaseException:
            self.stopped += self.loop.interrupt()
            raise
        failures = self.loop.machine_failures
        if failures:
            raise TFGSearchError(
                f"{len(failures)} evaluation(s) failed for a reason of the machine ({failures[0][:300]}); "
                "fix it and rerun the same command: they are re-run in place"
            )
        return values

    def run(self) -> None:
        """Run the loop to its end: the search's rounds, then the final re-runs."""
        while not self.loop.done:
            phase = self.loop.phase
            plan = self.loop.plan() if phase == SEARCHING else None
            batch = self.loop.wave()
            if not batch and self.loop.phase != phase:
                continue  # the search is exhausted: its final re-runs next
            if not batch:
                running = plan.running if plan is not None else 0
                raise TFGSearchError(
                    f"study {self.loop.studies.name!r} has {running} trial(s) running elsewhere; "
                    "is another process running this study without a lease?"
                )
            if phase == SEARCHING and plan is not None:
                event = {"round": plan.round, "candidates": len(plan.candidates), "pending": len(batch)}
                self.on_event("round", event)
            elif batch[0].role == FINAL:
                self.on_event("final", {"count": len(batch), "samples": self.resolved.final_samples})
            self._run_batch(batch)
            self.on_event("wave", self._wave(phase, plan))

    def _wave(self, phase: str, plan: Any) -> dict[str, Any]:
        """Where the search stands after a wave (the "wave" event: one line off a terminal):
        trials told, the passes the study spent, the best by the search's own ranking (the best
        final once there is one: :meth:`SearchLoop.best`)."""
        records = self.loop.records()
        best = self.loop.best(records)
        return {
            "phase": phase,
            "round": plan.round if plan is not None else None,
            "trials": sum(1 for r in records if r.state.is_finished()),
            "passes": compute(vars(r) for r in records)["passes"],
            "best": None if best is None else {**_leader(best, self.loop), "role": best.role},
        }

    def report(self, start: float, resumed: bool) -> SearchReport:
        records = self.loop.records()
        found = self.loop.best(records)
        if found is None:
            raise TFGSearchError(f"study {self.loop.studies.name!r} has no completed trial yet")
        finals = self.loop.final_ranking(records)
        ranking = self.loop.ranking(records)
        top = [
            {
                "trial": r.number,
                "role": r.role,
                "score": r.value,
                "params": self.loop.point(r.params),
                "metrics": dict(r.metrics or {}),
            }
            for r in (finals or ranking)[:5]
        ]
        spent = compute(vars(r) for r in records)
        return SearchReport(
            study_name=self.loop.studies.name,
            storage="",
            best_config=found.tfg_config(),
            best_metrics=dict(found.metrics or {}),
            best_score=float(found.value),  # type: ignore[arg-type]
            best_role=str(found.role),
            best_trial=found.number,
            counts=self.loop.counts(),
            # a finished search run again evaluates nothing: its report is the study's own time
            wall_time_s=time.perf_counter() - start if self.evaluated else spent["wall_time_s"],
            resumed=resumed,
            top=top,
            compute=spent,
            ranking=[r.number for r in ranking],
            transfer=self.loop.transfer_summary(records),
        )


def _user_error(outcome: TrialOutcome, number: int, study: str) -> TrialUserError:
    """The one line of a search stopped by the user's code, with the evaluation's traceback."""
    return TrialUserError(
        f"{outcome.error} (trial {number} of search {study!r}; fix it and run the same command "
        "again: the search resumes there)",
        outcome.details,
    )


def _leader(record: Any, loop: SearchLoop) -> dict[str, Any]:
    """The top of the search's ranking, as the progress display shows it."""
    return {"number": record.number, "value": record.value, "params": loop.point(record.params)}


def check_environment(settings: SearchSettings, device: str | None, load_models: bool = True) -> None:
    """Fail before anything is written when the device is unusable or the models do not load on it.

    With ``load_models`` False (trials run elsewhere, e.g. on Ray workers) only the device name is
    checked.

    Raises:
        TFGSearchError: a bad device name, a device this torch cannot use, models that do not load.
    """
    from tasks import get_task
    from tfg_search.run.devices import resolve_device

    dev = resolve_device(device, usable=load_models, flag="--device")
    if not load_models:
        return
    task = get_task(settings.task, settings.task_options)
    task.parse_target(settings.target)
    try:
        task.diffusion(dev)
        task.log_f(settings.target, dev)
    except TFGSearchError:
        raise
    except Exception as err:
        raise TFGSearchError(f"the models of task {settings.task!r} do not load on {dev}: {err}") from None


def run_search(
    settings: SearchSettings,
    storage: str | None = None,
    study_name: str | None = None,
    executor: Executor | None = None,
    device: str | None = None,
    on_event: EventHook | None = None,
    lease_ttl: float = 30.0,
) -> SearchReport:
    """Run (or resume, or extend) a whole search: its rounds, then the final re-runs.

    Raises:
        TFGSearchError: bad settings, a study with other settings, a study held by a live launcher.
        SearchInterrupted: KeyboardInterrupt (Ctrl-C) during the search; no trial is left RUNNING.
    """
    start = time.perf_counter()
    executor = executor or LocalExecutor()
    try:
        check_environment(settings, device, load_models=isinstance(executor, LocalExecutor))
        loop, resumed = open_search_study(settings, storage, study_name, device)
    except KeyboardInterrupt:
        raise SearchInterrupted(None, 0) from None
    hook = on_event or (lambda kind, data: None)
    with hold_signals() as got:  # take the lease and recover: whole, or not at all
        lease = StudyLease(loop.studies.main, ttl=lease_ttl).acquire()
        try:
            coord = Coordinator(loop, executor, hook)
            stale, retried = loop.recover() if resumed else (0, 0)
            loop.write_summary()
        except BaseException:
            lease.release()
            raise
    try:
        redeliver(got)
        done = sum(1 for r in loop.records() if r.ok)
        hook(
            "study",
            {
                "name": loop.studies.name,
                "resumed": resumed,
                "recovered": stale,
                "retried": retried,
                "completed": done,
                "previous_holder": lease.previous.describe() if lease.previous else None,
                "settings": loop.resolved.to_dict(),
            },
        )
        coord.run()
        report = coord.report(start, resumed)
    except KeyboardInterrupt as err:  # what ran stays RUNNING: the next run re-runs it in place
        raise SearchInterrupted(loop.studies.name, coord.stopped + loop.interrupt()) from err
    except optuna.exceptions.UpdateFinishedTrialError as err:  # another launcher took the study over
        raise (lost_lease(lease, loop.studies.name) or err) from None
    finally:
        with hold_signals():  # a second Ctrl-C here must not leave the lease behind
            lease.release()
    report.storage = redact(resolve_storage(storage))
    hook("done", {"report": report})
    return report

"""The ``tfg-search search`` command: settings from flags, checked before anything is written,
then the search (:func:`tfg_search.run.coordinator.run_search`) with its progress and results.

Every value a user gives is checked here or in the library before anything is written (an empty
one included: ``--storage ''`` is an error, not the default); text that reaches the terminal from
the user or the database (study names, errors, paths) is printed literally, never as Rich markup.
"""

from __future__ import annotations

import contextlib
import math
import signal
from collections.abc import Iterator
from typing import Any

import typer

from tfg_search.cli import common
from tfg_search.cli.task_commands import parse_options
from tfg_search.errors import TFGSearchError
from tfg_search.guidance.config import METHODS


def _parse_space(text: str | None) -> Any:
    if common.text("--space", text, "give e.g. rho=0.25:2:8,mu=0.25:2:8 or leave --space out") is None:
        return None
    from searchers import parse_space

    try:
        return parse_space(text)  # type: ignore[arg-type]
    except (ValueError, TypeError) as err:
        raise TFGSearchError(f"bad --space: {err}") from None


def _parse_objective(text: str | None) -> tuple[str, ...] | None:
    fix = "give metric names such as validity,_sw, or leave --objective out for the task's default"
    if common.text("--objective", text, fix) is None:
        return None
    assert text is not None
    names = tuple(o.strip() for o in text.split(","))
    if not all(names):
        raise TFGSearchError(f"--objective {text!r} has an empty metric name; {fix}")
    return names


def _sigterm_as_interrupt(signum: int, _frame: Any) -> None:
    """SIGTERM handler of the search: stop as Ctrl-C does (running trials marked interrupted)."""
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def _stopped_by_signals() -> Iterator[None]:
    """SIGTERM stops the block as Ctrl-C does; either ends it with :class:`common.Interrupted`
    (exit code 130, one line saying how many running trials were marked interrupted)."""
    previous = signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    try:
        yield
    except KeyboardInterrupt as err:  # SearchInterrupted says how many trials it marked
        raise common.Interrupted(getattr(err, "marked", 0)) from None
    finally:
        signal.signal(signal.SIGTERM, previous)


def search(
    task: str = typer.Option(..., "--task", help="task name (see `tfg-search tasks`)"),
    target: str = typer.Option(..., "--target", help="target of the task (e.g. a class)"),
    method: str = typer.Option("tfg", "--method", help=" | ".join(METHODS)),
    storage: str | None = typer.Option(None, "--storage", help=common.STORAGE_HELP),
    study: str | None = typer.Option(None, "--study", help="study name (default: derived from settings)"),
    samples: int | None = typer.Option(
        None,
        "--samples",
        help="samples per search evaluation (default: task's; --mode rungs: per rung-0 evaluation, "
        "later rungs draw 1, 2, 4... times as many)",
    ),
    final_samples: int | None = typer.Option(
        None, "--final-samples", help="samples per final re-run (default: task's)"
    ),
    final_top: int = typer.Option(2, "--final-top", help="configurations re-run at full size (>= 1)"),
    top_k: int | None = typer.Option(
        None, "--top-k", help="beam width (--mode reference|refined; default 2)"
    ),
    rounds: int | None = typer.Option(
        None, "--rounds", help="round limit, round 0 counts (--mode reference|refined; default 6)"
    ),
    n_recur: int | None = typer.Option(None, "--n-recur", help="recurrence (default: method's)"),
    n_iter: int | None = typer.Option(None, "--n-iter", help="mean-guidance steps (default: method's)"),
    n_mc: int | None = typer.Option(None, "--n-mc", help="Monte-Carlo samples (default: method's)"),
    eta: float = typer.Option(1.0, "--eta", help="DDIM eta in [0, 1]"),
    steps: int | None = typer.Option(None, "--steps", help="DDIM steps (default: task's)"),
    objective: str | None = typer.Option(
        None, "--objective", help="comma list of metrics; '_' = lower is better"
    ),
    space: str | None = typer.Option(None, "--space", help="e.g. rho=0.25:2:8,mu=0.25:2:8,gamma=0.001:10:1"),
    search_schedules: bool = typer.Option(
        False, "--search-schedules", help="also search schedule structures"
    ),
    seed: int = typer.Option(0, "--seed", help="seed of every search evaluation"),
    seed_presets: bool | None = typer.Option(
        None,
        "--seed-presets/--no-seed-presets",
        help="warm start: the earlier methods' configurations (their searched best in this storage "
        "when known) join round 0 (default: yes for --mode rungs, no for the beam)",
        show_default=False,
    ),
    mode: str | None = typer.Option(
        None,
        "--mode",
        help="--sampler beam's search: rungs (the default: spread start, surrogate-guided refinement, "
        "successive halving over sample sizes) | reference (the paper's beam) | refined (the beam, "
        "also stepping down)",
    ),
    sampler: str = typer.Option(
        "beam", "--sampler", help="beam (TFG's) | gp | tpe | random (Optuna's, on the same lattices)"
    ),
    trials: int | None = typer.Option(
        None,
        "--trials",
        help="search trials of --sampler gp|tpe|random (default: the rung search's units, 40 at --wave 8)",
    ),
    wave: int | None = typer.Option(
        None,
        "--wave",
        help="parallel trials per wave: candidates per round of --mode rungs, trials --sampler "
        "gp|tpe|random asks at once (default 8)",
    ),
    threads: int | None = typer.Option(
        None, "--threads", help="torch threads of local evaluations (default: this process's CPU share)"
    ),
    device: str | None = typer.Option(
        None, "--device", help="cpu | cuda | cuda:N (default: cuda if present)"
    ),
    executor: str = typer.Option("local", "--executor", help="local | ray"),
    batch_size: int = typer.Option(
        6, "--batch-size", help="local executor: candidates of a round sampled in one batch (1 = off)"
    ),
    ray_address: str | None = typer.Option(
        None, "--ray-address", help="auto | host:port (default: local Ray)"
    ),
    workers: int | None = typer.Option(None, "--workers", help="Ray actors (default: what resources allow)"),
    gpus_per_trial: float = typer.Option(0.0, "--gpus-per-trial", help="GPUs per Ray actor (fractional ok)"),
    cpus_per_trial: float = typer.Option(1.0, "--cpus-per-trial", help="CPUs per Ray actor"),
    task_option: list[str] | None = typer.Option(None, "--task-option", help="KEY=VALUE for the task"),
    out_dir: str | None = typer.Option(None, "--out-dir", help="where plots go (default tfg-output/STUDY)"),
    as_json: bool = typer.Option(False, "--json", help="print the result as one JSON object"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bars"),
) -> None:
    """Search guidance strengths with the beam doubling search; resumes a study with the same settings.

    Ctrl-C or SIGTERM stops it with exit code 130; its running trials are marked interrupted and
    the same command resumes the search.
    """
    common.quiet_optuna()
    from tfg_search.cli.progress import SearchProgress
    from tfg_search.cli.results import finish
    from tfg_search.run.coordinator import hold_signals, run_search
    from tfg_search.run.executors import make_executor
    from tfg_search.run.settings import SearchSettings
    from tfg_search.store.database import resolve_storage

    common.text("--task", task, "give a task name (see `tfg-search tasks`)")
    common.text("--target", target, "give one of the task's targets (see `tfg-search tasks`)")
    common.text("--method", method, f"choose one of {', '.join(METHODS)}")
    common.text("--storage", storage, common.STORAGE_FIX)
    resolve_storage(storage)
    common.study(study, "give a name, or leave --study out for the name derived from the settings", new=True)
    common.device(device)
    common.text("--executor", executor, "choose local or ray")
    common.text("--ray-address", ray_address, "give auto or host:port, or leave it out for a local Ray")
    folder = common.path("--out-dir", out_dir, "give a folder, or leave --out-dir out for tfg-output/STUDY")
    if folder is not None and folder.exists() and not folder.is_dir():
        raise TFGSearchError(f"--out-dir {folder} is a file, not a folder; choose another --out-dir")
    if method not in METHODS:
        raise TFGSearchError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if not math.isfinite(eta) or not 0 <= eta <= 1:
        raise TFGSearchError(f"--eta must be a number in [0, 1], got {eta}")
    if gpus_per_trial < 0 or cpus_per_trial <= 0 or (workers is not None and workers < 1):
        raise TFGSearchError("--gpus-per-trial must be >= 0, --cpus-per-trial > 0 and --workers >= 1")
    if not math.isfinite(gpus_per_trial) or not math.isfinite(cpus_per_trial):
        raise TFGSearchError("--gpus-per-trial and --cpus-per-trial must be finite numbers")
    if executor not in ("local", "ray"):
        raise TFGSearchError(f"unknown executor {executor!r}; choose local or ray")
    common.text("--sampler", sampler, "choose beam, gp, tpe or random")
    beam_flags = [flag for flag, value in (("--top-k", top_k), ("--rounds", rounds)) if value is not None]
    if sampler != "beam":
        given = [*beam_flags, *(["--mode"] if mode is not None else [])]
        if given:
            raise TFGSearchError(
                f"{', '.join(given)} applies to --sampler beam; --sampler {sampler} runs --trials "
                "trials in waves of --wave"
            )
    elif (mode or "rungs") == "rungs" and beam_flags:
        raise TFGSearchError(
            f"{', '.join(beam_flags)} applies to --mode reference or refined (the beam); the default "
            "--mode rungs plans its own rounds (--wave candidates each)"
        )
    settings = SearchSettings(
        task=task,
        target=target,
        method=method,
        samples=samples,
        final_samples=final_samples,
        final_top=final_top,
        top_k=top_k,
        rounds=rounds,
        n_recur=n_recur,
        n_iter=n_iter,
        n_mc=n_mc,
        eta=eta,
        steps=steps,
        objective=_parse_objective(objective),
        space=_parse_space(space),
        search_schedules=search_schedules,
        seed=seed,
        seed_presets=seed_presets,
        mode=mode or "rungs",
        sampler=sampler,
        trials=trials,
        wave=wave,
        task_options=parse_options(task_option, "--task-option"),
    )
    if threads is not None and threads < 1:
        raise TFGSearchError(f"--threads must be an integer >= 1, got {threads}")
    if batch_size < 1:
        raise TFGSearchError(f"--batch-size must be an integer >= 1, got {batch_size}")
    options: dict[str, Any] = {"batch_size": batch_size}
    if executor == "ray":
        options = dict(
            address=ray_address,
            num_workers=workers,
            gpus_per_trial=gpus_per_trial,
            cpus_per_trial=cpus_per_trial,
            device=device,
        )
    if executor == "local":
        from tfg_search.run.threads import set_threads

        set_threads(threads)
    with _stopped_by_signals():  # from here on, Ctrl-C and SIGTERM end with exit code 130
        pool = make_executor(executor, **options)
        try:
            total = settings.planned_rounds()
            with SearchProgress(total, quiet or as_json) as display:
                report = run_search(settings, storage, study, pool, device, display)
        finally:
            with hold_signals():  # a second Ctrl-C must not cut the workers' shutdown short
                pool.close()
        finish(report, settings, storage, folder, device, as_json, quiet)

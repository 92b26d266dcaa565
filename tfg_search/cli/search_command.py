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
from tfg_search.cli.task_commands import DTYPE_HELP, parse_options, with_dtype
from tfg_search.errors import TFGSearchError
from tfg_search.guidance.config import METHODS
from tfg_search.trial import BATCH_SIZE


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
    """SIGTERM handler of the search: stop as Ctrl-C does (what runs is re-run by the next run)."""
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def _stopped_by_signals() -> Iterator[None]:
    """SIGTERM stops the block as Ctrl-C does; either ends it with :class:`common.Interrupted`
    (exit code 130, one line saying how many evaluations it stopped)."""
    previous = signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    try:
        yield
    except KeyboardInterrupt as err:  # SearchInterrupted says how many evaluations it stopped
        raise common.Interrupted(getattr(err, "stopped", 0)) from None
    finally:
        signal.signal(signal.SIGTERM, previous)


def _trials_on_cpu(executor: str, device: str | None, gpus_per_trial: float) -> bool:
    """Whether the trials will run on a CPU: the device given, else this machine's default
    (``--executor local``) or the workers' (``ray``: a GPU when ``--gpus-per-trial`` asks one)."""
    if device is not None:
        return device.strip().lower().startswith("cpu")
    if executor == "ray":
        return gpus_per_trial <= 0
    from tfg_search.run.devices import resolve_device

    return resolve_device(None).type == "cpu"


WHAT = "What to search"
GUIDANCE = "Guidance held fixed during the search"
HOW_MUCH = "How much to spend"
WHERE = "Where to run"
STORAGE = "Storage and output"
"""The help panels of ``search``, by concern (a new flag joins the panel of its concern)."""

GONE = {
    "--sampler": {
        "beam": "--search rungs (the default) or --search beam (the paper's beam)",
        None: "--search gp|tpe|random",
    },
    "--mode": {
        "rungs": "--search rungs (the default; leave it out)",
        "reference": "--search beam",
        "refined": "--search beam --steps-down",
        None: "--search rungs|beam",
    },
}
"""tfg-search 0.2's flags, which ``--search`` replaced: each gets one line naming its new form
(``--task-option``, renamed ``-o/--option``, keeps working, hidden)."""


def _transfer(off: bool, named: str | None) -> bool | tuple[str, ...]:
    """``SearchSettings.transfer`` from ``--no-transfer`` and ``--transfer-from``."""
    if named is None:
        return not off
    if off:
        raise TFGSearchError("--no-transfer and --transfer-from contradict each other: give one")
    names = tuple(n.strip() for n in named.split(",") if n.strip())
    if not names:
        raise TFGSearchError("--transfer-from needs study names, e.g. --transfer-from digits-1-tfg-1a2b3c4d")
    return names


def _refuse_gone(flag: str, value: str | None) -> None:
    if value is None:
        return
    forms = GONE[flag]
    optuna = flag == "--sampler" and value in ("gp", "tpe", "random")
    new = forms.get(value) or (f"--search {value}" if optuna else forms[None])
    raise TFGSearchError(f"{flag} was replaced by --search in tfg-search 0.3: use {new}")


def search(
    task: str = typer.Option(..., "--task", help="task name (see `tfg-search tasks`)", rich_help_panel=WHAT),
    target: str = typer.Option(
        ..., "--target", help="target of the task (e.g. a class)", rich_help_panel=WHAT
    ),
    method: str = typer.Option(
        "tfg",
        "--method",
        help=" | ".join(METHODS) + " (tfg: rho, mu, gamma; others: one strength)",
        rich_help_panel=WHAT,
    ),
    search: str = typer.Option(
        "rungs",
        "--search",
        help="rungs: the rung search (spread start, Gaussian-process refinement, successive halving "
        "over sample sizes) | beam: the paper's beam doubling search | gp, tpe, random: Optuna's "
        "samplers on the same lattices",
        rich_help_panel=WHAT,
    ),
    space: str | None = typer.Option(
        None,
        "--space",
        help="lattices, e.g. rho=0,0.25:2:8,mu=0.25:2:8,gamma=0.001:10:1 (default: task's)",
        rich_help_panel=WHAT,
    ),
    search_schedules: bool = typer.Option(
        False, "--search-schedules", help="also search schedule structures", rich_help_panel=WHAT
    ),
    objective: str | None = typer.Option(
        None,
        "--objective",
        help="comma list of metrics; '_' = lower is better (default: task's)",
        rich_help_panel=WHAT,
    ),
    seed_presets: bool | None = typer.Option(
        None,
        "--seed-presets/--no-seed-presets",
        help="warm start: the earlier methods' configurations (their searched best in this storage "
        "when known) join the start (default: yes for the rung search, no for the beam)",
        show_default=False,
        rich_help_panel=WHAT,
    ),
    no_transfer: bool = typer.Option(
        False,
        "--no-transfer",
        help="start cold: do not start from the finished searches of other targets of this model in "
        "the storage (transfer, on by default in the rung search; docs/search.md)",
        rich_help_panel=WHAT,
    ),
    transfer_from: str | None = typer.Option(
        None,
        "--transfer-from",
        help="start from these finished searches (STUDY[,STUDY]) instead of those transfer chooses",
        rich_help_panel=WHAT,
    ),
    steps_down: bool = typer.Option(
        False,
        "--steps-down",
        help="--search beam: neighbours also step one exponent down (refined)",
        rich_help_panel=WHAT,
    ),
    seed: int = typer.Option(
        0, "--seed", help="seed of the search and its evaluations", rich_help_panel=WHAT
    ),
    option: list[str] | None = typer.Option(
        None,
        "--option",
        "-o",
        help="task option KEY=VALUE (repeatable), e.g. weights=DIR; custom: model=DIR "
        "predictor=module:function evaluator=module:function",
        rich_help_panel=WHAT,
    ),
    steps: int | None = typer.Option(
        None, "--steps", help="DDIM steps (default: task's)", rich_help_panel=GUIDANCE
    ),
    n_recur: int | None = typer.Option(
        None, "--n-recur", help="recurrence (default: method's)", rich_help_panel=GUIDANCE
    ),
    n_iter: int | None = typer.Option(
        None, "--n-iter", help="mean-guidance steps (default: method's)", rich_help_panel=GUIDANCE
    ),
    n_mc: int | None = typer.Option(
        None, "--n-mc", help="Monte-Carlo samples (default: method's)", rich_help_panel=GUIDANCE
    ),
    eta: float = typer.Option(1.0, "--eta", help="DDIM eta in [0, 1]", rich_help_panel=GUIDANCE),
    guidance_scale: float | None = typer.Option(
        None,
        "--guidance-scale",
        help="a fixed classifier-free guidance weight (conditional tasks; default: searched on the task's "
        "lattice, see --space)",
        rich_help_panel=GUIDANCE,
    ),
    samples: int | None = typer.Option(
        None,
        "--samples",
        help="samples per search evaluation (default: task's); the rung search's rung 0, later rungs "
        "draw 1, 2, 4... times as many",
        rich_help_panel=HOW_MUCH,
    ),
    wave: int | None = typer.Option(
        None,
        "--wave",
        help="parallel trials per wave: a rung-search round, or what gp|tpe|random ask at once (default 8)",
        rich_help_panel=HOW_MUCH,
    ),
    trials: int | None = typer.Option(
        None,
        "--trials",
        help="--search gp|tpe|random: search trials (default: the rung search's units, 40 at --wave 8)",
        rich_help_panel=HOW_MUCH,
    ),
    top_k: int | None = typer.Option(
        None, "--top-k", help="--search beam: beam width (default 2)", rich_help_panel=HOW_MUCH
    ),
    rounds: int | None = typer.Option(
        None,
        "--rounds",
        help="--search beam: round limit, round 0 counts (default 6)",
        rich_help_panel=HOW_MUCH,
    ),
    final_samples: int | None = typer.Option(
        None, "--final-samples", help="samples per final re-run (default: task's)", rich_help_panel=HOW_MUCH
    ),
    final_top: int = typer.Option(
        2, "--final-top", help="configurations re-run at full size (>= 1)", rich_help_panel=HOW_MUCH
    ),
    executor: str = typer.Option("local", "--executor", help="local | ray", rich_help_panel=WHERE),
    device: str | None = typer.Option(
        None, "--device", help="cpu | cuda | cuda:N (default: cuda if present)", rich_help_panel=WHERE
    ),
    dtype: str = typer.Option("float32", "--dtype", help=DTYPE_HELP, rich_help_panel=WHERE),
    threads: int | None = typer.Option(
        None,
        "--threads",
        help=f"torch threads of local evaluations (default: {common.THREADS_DEFAULT})",
        rich_help_panel=WHERE,
    ),
    batch_size: int = typer.Option(
        BATCH_SIZE,
        "--batch-size",
        help="local executor: candidates of a round sampled in one batch (1 = off)",
        rich_help_panel=WHERE,
    ),
    ray_address: str | None = typer.Option(
        None, "--ray-address", help="auto | host:port (default: local Ray)", rich_help_panel=WHERE
    ),
    workers: int | None = typer.Option(
        None, "--workers", help="Ray actors (default: what resources allow)", rich_help_panel=WHERE
    ),
    gpus_per_trial: float = typer.Option(
        0.0, "--gpus-per-trial", help="GPUs per Ray actor (fractional ok)", rich_help_panel=WHERE
    ),
    cpus_per_trial: float = typer.Option(
        1.0, "--cpus-per-trial", help="CPUs per Ray actor", rich_help_panel=WHERE
    ),
    storage: str | None = typer.Option(None, "--storage", help=common.STORAGE_HELP, rich_help_panel=STORAGE),
    study: str | None = typer.Option(
        None, "--study", help="study name (default: derived from the settings)", rich_help_panel=STORAGE
    ),
    out_dir: str | None = typer.Option(
        None, "--out-dir", help="where plots go (default tfg-output/STUDY)", rich_help_panel=STORAGE
    ),
    as_json: bool = typer.Option(
        False, "--json", help="print the result as one JSON object", rich_help_panel=STORAGE
    ),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bars", rich_help_panel=STORAGE),
    log_json: bool = typer.Option(
        False,
        "--log-json",
        help="progress as one JSON object per wave on stderr (off a terminal, plain lines are the default)",
        rich_help_panel=STORAGE,
    ),
    sampler: str | None = typer.Option(None, "--sampler", hidden=True),
    mode: str | None = typer.Option(None, "--mode", hidden=True),
    task_option: list[str] | None = typer.Option(None, "--task-option", hidden=True),
) -> None:
    """Search guidance strengths (by default with the rung search); resumes a study with the same settings.

    Ctrl-C or SIGTERM stops it with exit code 130; the same command resumes the search.
    """
    _refuse_gone("--sampler", sampler)
    _refuse_gone("--mode", mode)
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
    common.text("--search", search, "choose rungs (the default), beam, gp, tpe or random")
    if guidance_scale is not None and (not math.isfinite(guidance_scale) or guidance_scale < 0):
        raise TFGSearchError(f"--guidance-scale must be a finite number >= 0, got {guidance_scale}")
    transfer = _transfer(no_transfer, transfer_from)
    given = parse_options(task_option, "--task-option")  # tfg-search 0.2's spelling of -o
    for key, value in parse_options(option).items():
        if key in given:
            raise TFGSearchError(f"task option {key} is given twice; give each task option once")
        given[key] = value
    task_options = with_dtype(given, dtype, _trials_on_cpu(executor, device, gpus_per_trial))
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
        search=search,
        steps_down=steps_down,
        trials=trials,
        wave=wave,
        task_options=task_options,
        guidance_scale=guidance_scale,
        transfer=transfer,
    )
    if threads is not None and threads < 1:
        raise TFGSearchError(f"--threads must be an integer >= 1, got {threads}")
    if batch_size < 1:
        raise TFGSearchError(f"--batch-size must be an integer >= 1, got {batch_size}")
    from tfg_search.run.validate import RayActors, check_cluster_memory, check_search

    actors = RayActors(ray_address, workers, cpus_per_trial, gpus_per_trial) if executor == "ray" else None
    check_search(settings, device, threads, local=executor == "local", ray=actors)  # before any storage
    options: dict[str, Any] = {"batch_size": batch_size, "threads": threads}
    if executor == "ray":
        options = dict(
            address=ray_address,
            num_workers=workers,
            gpus_per_trial=gpus_per_trial,
            cpus_per_trial=cpus_per_trial,
            device=device,
            task_options=settings.task_options,  # the working folder's modules go to the workers
        )
    with _stopped_by_signals():  # from here on, Ctrl-C and SIGTERM end with exit code 130
        pool = make_executor(executor, **options)
        try:
            if actors is not None and actors.address is not None:  # a cluster's actors, once joined
                check_cluster_memory(settings, device, actors)
            total = settings.planned_rounds()
            with SearchProgress(total, quiet or as_json, log_json) as display:
                report = run_search(settings, storage, study, pool, device, display)
        finally:
            with hold_signals():  # a second Ctrl-C must not cut the workers' shutdown short
                pool.close()
        finish(report, settings, storage, folder, device, as_json, quiet)

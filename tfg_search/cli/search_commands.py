"""CLI commands of the search: ``search``, ``studies``, ``best``, ``export``, ``sample``.

Every value a user gives is checked here or in the library before anything is written (an empty
one included: ``--storage ''`` is an error, not the default); text that reaches the terminal from
the user or the database (study names, errors, paths) is printed literally, never as Rich markup.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from tfg_search.cli import common, output
from tfg_search.cli.task_commands import parse_options
from tfg_search.errors import TFGSearchError
from tfg_search.guidance.config import METHODS
from tfg_search.paths import safe_name

console = output.console(stderr=True)
out = output.console()

STORAGE_HELP = "SQLAlchemy URL [env TFG_SEARCH_STORAGE]"
STORAGE_FIX = "pass a URL such as sqlite:///tfg-studies.db, or leave --storage out for the default"


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


def _study_arg(value: str) -> str:
    """A required ``--study`` of a command that reads a study."""
    checked = common.study(value, "give a study name (see `tfg-search studies`)")
    assert checked is not None
    return checked


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


class _Display:
    """Rich progress bars for rounds, trials and samples, with the current best.

    The samples bar's total is the work planned so far: the samples of the trials run, those of
    the round handed out, and the final re-runs still due (``final_top x final_samples``); it
    grows as each round is planned (the beam's length is not known in advance) and is exact once
    the final re-runs start. The live best is the best beam trial so far; of equal scores the
    lower trial number, as in the summary (:func:`tfg_search.store.record.ranked`).
    """

    def __init__(self, rounds: int, quiet: bool) -> None:
        # here, not at the top: only `search` shows progress (the query commands start faster)
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.quiet = quiet
        self.best: tuple[float, int] | None = None
        self.best_text = ""
        self.samples_done = 0
        self.samples_round = 0
        self.finals_due = 0
        self.started = False
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            console=console,
            disable=quiet,
        )
        self.rounds = self.progress.add_task("rounds", total=rounds, info="")
        self.trials = self.progress.add_task("trials", total=0, info="")
        self.samples = self.progress.add_task("samples", total=None, info="")

    def _samples_total(self, planned: int) -> None:
        self.progress.update(self.samples, total=self.samples_done + planned)

    def __call__(self, kind: str, data: dict[str, Any]) -> None:
        p = self.progress
        if kind == "study":
            self.progress.start()  # only once the study is open: bad input prints just its error
            self.started = True
            settings = data.get("settings") or {}
            self.samples_round = int(settings.get("samples", 0))
            self.finals_due = int(settings.get("final_top", 0)) * int(settings.get("final_samples", 0))
            self._samples_total(self.finals_due)
            if self.quiet:
                return
            state = "resuming" if data["resumed"] else "new"
            extra = f", {data['recovered']} interrupted trial(s) to redo" if data["recovered"] else ""
            if data.get("retried"):
                extra += f", {data['retried']} trial(s) that failed on the machine to retry"
            holder = data.get("previous_holder")
            taken = f" (took over from dead {escape(holder)})" if holder else ""
            name = escape(data["name"])
            console.print(f"[bold]study[/] {name} ({state}, {data['completed']} completed{extra}){taken}")
        elif kind == "round":
            p.update(self.rounds, completed=data["round"], info=f"round {data['round']}")
            p.update(self.trials, total=data["pending"], completed=0, info=self._best_info())
            self._samples_total(data["pending"] * self.samples_round + self.finals_due)
        elif kind == "final":
            p.update(self.rounds, completed=p.tasks[self.rounds].total, info="final re-runs")
            p.update(self.trials, total=data["count"], completed=0, info=f"final x {data['samples']}")
            self.finals_due = 0
            self._samples_total(data["count"] * data["samples"])
        elif kind == "trial":
            from tfg_search.cli.report import describe_params

            p.advance(self.trials)
            p.advance(self.samples, data["samples"])
            self.samples_done += data["samples"]
            value = data["value"]
            if value is not None and data["role"] == "beam":
                key = (-float(value), int(data["number"]))  # higher score, then lower number
                if self.best is None or key < self.best:
                    self.best, self.best_text = key, describe_params(data["params"])
            if data["role"] == "beam":
                p.update(self.trials, info=self._best_info())
            if data["error"]:
                p.console.print(
                    f"[yellow]trial {data['number']} failed:[/] {escape(str(data['error'])[:200])}"
                )
        elif kind == "done":
            p.update(self.samples, total=self.samples_done)

    def _best_info(self) -> str:
        """The live best beam trial, as the trials bar shows it."""
        if self.best is None:
            return ""
        return f"best {-self.best[0]:.4f} (trial {self.best[1]}: {self.best_text})"

    def __enter__(self) -> _Display:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.started:  # stopping a display never started still prints a blank line
            self.progress.stop()


def _top_table(report: Any, objective: list[str]) -> Table:
    from tfg_search.cli.report import describe_params

    wanted = ["validity", *(m.lstrip("_") for m in objective)]
    names = list(dict.fromkeys(m for m in wanted if report.top and m in report.top[0]["metrics"]))
    rows = [
        [
            str(row["trial"]),
            str(row["role"]),
            f"{row['score']:.4f}",
            describe_params(row["params"]),
            *[f"{row['metrics'].get(n, float('nan')):.4g}" for n in names],
        ]
        for row in report.top
    ]
    return output.table(
        f"top configurations of {report.study_name}",
        ["trial", "role", "score", "params", *names],
        rows,
        keep={"params"},
    )


def search(
    task: str = typer.Option(..., "--task", help="task name (see `tfg-search tasks`)"),
    target: str = typer.Option(..., "--target", help="target of the task (e.g. a class)"),
    method: str = typer.Option("tfg", "--method", help=" | ".join(METHODS)),
    storage: str | None = typer.Option(None, "--storage", help=STORAGE_HELP),
    study: str | None = typer.Option(None, "--study", help="study name (default: derived from settings)"),
    samples: int | None = typer.Option(
        None, "--samples", help="samples per search evaluation (default: task's)"
    ),
    final_samples: int | None = typer.Option(
        None, "--final-samples", help="samples per final re-run (default: task's)"
    ),
    final_top: int = typer.Option(2, "--final-top", help="configurations re-run at full size (>= 1)"),
    top_k: int = typer.Option(2, "--top-k", help="beam width"),
    rounds: int = typer.Option(6, "--rounds", help="round limit (round 0 counts)"),
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
    seed_presets: bool = typer.Option(
        False,
        "--seed-presets",
        help="warm start: the earlier methods' configurations (their searched best in this storage "
        "when known) join round 0",
    ),
    mode: str = typer.Option(
        "reference", "--mode", help="beam mode: reference (the paper's) | refined (also steps down)"
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
    from tfg_search.run.coordinator import hold_signals, run_search
    from tfg_search.run.executors import make_executor
    from tfg_search.run.settings import SearchSettings
    from tfg_search.store.studies import resolve_storage

    common.text("--task", task, "give a task name (see `tfg-search tasks`)")
    common.text("--target", target, "give one of the task's targets (see `tfg-search tasks`)")
    common.text("--method", method, f"choose one of {', '.join(METHODS)}")
    common.text("--storage", storage, STORAGE_FIX)
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
        mode=mode,
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
            with _Display(rounds, quiet or as_json) as display:
                report = run_search(settings, storage, study, pool, device, display)
        finally:
            with hold_signals():  # a second Ctrl-C must not cut the workers' shutdown short
                pool.close()
        _finish(report, settings, storage, folder, device, as_json, quiet)


def _finish(
    report: Any,
    settings: Any,
    storage: str | None,
    out_dir: Path | None,
    device: str | None,
    as_json: bool,
    quiet: bool,
) -> None:
    """The plots and the summary (or JSON) of a finished search; plots go to ``out_dir``, else to
    ``tfg-output/<safe_name(study)>`` (one folder inside tfg-output, whatever the study name)."""
    from tfg_search.cli.report import plot_search
    from tfg_search.store.studies import load_search

    folder = out_dir or Path("tfg-output") / safe_name(report.study_name)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise TFGSearchError(
            f"the search is done (study {report.study_name!r}) but its plots cannot be written to "
            f"{folder} ({err.strerror or err}); rerun with another --out-dir"
        ) from None
    studies = load_search(storage, report.study_name)
    plot = plot_search(studies, folder / "search.png", settings.top_k)
    grid = _sample_grid(
        settings.task,
        settings.task_options,
        settings.target,
        report.best_config,
        64,
        settings.seed + 2,
        settings.steps,
        device,
        folder / "best-samples.png",
    )
    payload = {
        "study": report.study_name,
        "storage": report.storage,
        "best": {
            "trial": report.best_trial,
            "role": report.best_role,
            "score": report.best_score,
            "config": report.best_config.to_dict(),
            "metrics": report.best_metrics,
        },
        "trials": {
            "beam": report.counts.beam,
            "final": report.counts.final,
            "failed": report.counts.failed,
            "interrupted": report.counts.interrupted,
            "environment": report.counts.environment,
        },
        "wall_time_s": round(report.wall_time_s, 2),
        "files": {"search_plot": str(plot), "samples": str(grid)},
    }
    if as_json:
        out.print_json(json.dumps(payload))
        return
    if not quiet:
        out.print(_top_table(report, studies.info["settings"]["objective"]))
    cfg = report.best_config
    out.print(
        f"best ({report.best_role} trial {report.best_trial}): score {report.best_score:.4f}  "
        f"rho={cfg.rho:g} mu={cfg.mu:g} gamma={cfg.gamma:g} n_recur={cfg.n_recur} n_iter={cfg.n_iter}"
    )
    out.print("metrics: " + ", ".join(f"{k}={v:.4g}" for k, v in report.best_metrics.items()))
    c = report.counts
    extra = "".join(
        f", {n} {what}"
        for n, what in ((c.interrupted, "interrupted"), (c.environment, "failed on the machine"))
        if n
    )
    out.print(
        f"{c.beam} beam + {c.final} final trials ({c.failed} failed{extra}) in "
        f"{report.wall_time_s:.1f} s; study '{escape(report.study_name)}' in {escape(report.storage)}"
    )
    for reason in c.reasons[:3]:
        out.print(f"machine failure: {escape(reason[:300])}")
    out.print(f"wrote {escape(str(plot))} and {escape(str(grid))}")


def _sample_grid(
    task_name: str,
    task_options: Any,
    target: str,
    config: Any,
    n: int,
    seed: int,
    steps: int | None,
    device: str | None,
    path: Path,
) -> Path:
    from tasks import get_task
    from tfg_search.cli.images import save_samples
    from tfg_search.run.evaluation import evaluate

    task = get_task(task_name, task_options)
    result = evaluate(
        task, target, config, n, seed, device=device, num_inference_steps=steps, return_samples=True
    )
    reference = None
    if result.samples is not None and result.samples.dim() == 2:
        try:
            reference = task.reference(target)
        except TFGSearchError:
            reference = None
    save_samples(result.samples, path, title=f"{task_name} target {target}", reference=reference)
    return path


def studies(
    storage: str | None = typer.Option(None, "--storage", help=STORAGE_HELP),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """List the searches in the storage with their task, target, method and best score."""
    common.text("--storage", storage, STORAGE_FIX)
    rows = _searches(storage)
    if as_json:
        out.print_json(json.dumps(rows))
        return
    cells = [
        [
            r["study"],
            str(r["task"]),
            str(r["target"]),
            str(r["method"]),
            str(r["trials"]),
            "-" if r["best"] is None else f"{r['best']:.4f}",
            "yes" if r["finished"] else "no",
        ]
        for r in rows
    ]
    columns = ["study", "task", "target", "method", "trials", "best", "finished"]
    out.print(output.table("studies", columns, cells, keep={"study", "task", "target", "method"}))


def _searches(storage: str | None) -> list[dict[str, Any]]:
    """The rows of ``studies``: read directly (:mod:`tfg_search.store.query`), else through Optuna."""
    from tfg_search.store import query

    try:
        return query.list_searches(storage)
    except query.Unanswered:
        pass
    common.quiet_optuna()
    from tfg_search.store.studies import list_searches, open_storage

    return list_searches(open_storage(storage, create=False))


def _best_payload(storage: str | None, study_name: str) -> dict[str, Any]:
    """A search's best configuration (:func:`tfg_search.store.query.payload`): read directly
    (:mod:`tfg_search.store.query`), else through Optuna (the same answer)."""
    from tfg_search.store import query

    common.text("--storage", storage, STORAGE_FIX)
    try:
        return query.best_payload(storage, study_name)
    except query.Unanswered:
        return optuna_best_payload(storage, study_name)


def optuna_best_payload(storage: str | None, study_name: str) -> dict[str, Any]:
    """:func:`_best_payload` through Optuna (what the direct reads must agree with)."""
    from tfg_search.store import query

    common.quiet_optuna()
    from tfg_search.store.studies import load_search

    studies = load_search(storage, study_name)
    found = studies.best()
    return query.payload(
        studies.name,
        studies.info,
        role=found.role,
        trial=found.number,
        score=found.value,
        params=found.params,
        config=found.config,
        metrics=found.metrics,
        samples=found.samples,
    )


def best(
    study: str = typer.Option(..., "--study", help="study name (see `tfg-search studies`)"),
    storage: str | None = typer.Option(None, "--storage", help=STORAGE_HELP),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """The best configuration of a study (its final re-run when the search finished)."""
    payload = _best_payload(storage, _study_arg(study))
    if as_json:
        out.print_json(json.dumps(payload))
        return
    note = "" if payload["role"] == "final" else "  (search not finished: best search trial)"
    out.print(
        f"study {escape(payload['study'])}: {escape(str(payload['task']))} target "
        f"{escape(str(payload['target']))} ({escape(str(payload['method']))}){note}"
    )
    out.print(f"trial {payload['trial']} score {payload['score']:.4f}")
    out.print("config: " + ", ".join(f"{k}={v}" for k, v in payload["config"].items()))
    out.print("metrics: " + ", ".join(f"{k}={v:.4g}" for k, v in payload["metrics"].items()))


def _write_error(file: Path, err: OSError) -> TFGSearchError:
    return TFGSearchError(f"cannot write {file}: {err.strerror or err}; choose another --out")


def export(
    study: str = typer.Option(..., "--study", help="study name (see `tfg-search studies`)"),
    out_file: str = typer.Option(..., "--out", help="JSON file to write"),
    storage: str | None = typer.Option(None, "--storage", help=STORAGE_HELP),
    force: bool = typer.Option(False, "--force", help="overwrite an existing file"),
) -> None:
    """Write the best configuration (TFGConfig JSON, with its task, target and metrics) to a file."""
    name = _study_arg(study)
    file = common.path("--out", out_file, "give the JSON file to write")
    assert file is not None
    common.output_file("--out", file, force)
    payload = _best_payload(storage, name)
    tmp = file.with_name(file.name + f".tmp{os.getpid()}")
    try:
        tmp.write_text(json.dumps(payload, indent=2) + "\n")
        tmp.replace(file)
    except OSError as err:
        raise _write_error(file, err) from None
    finally:
        tmp.unlink(missing_ok=True)
    out.print(f"wrote {escape(str(file))}")


def sample(
    study: str = typer.Option(..., "--study", help="study name (see `tfg-search studies`)"),
    n: int = typer.Option(64, "--n", help="how many samples"),
    out_file: str = typer.Option(..., "--out", help="PNG grid to write"),
    seed: int = typer.Option(0, "--seed"),
    device: str | None = typer.Option(None, "--device", help="cpu | cuda | cuda:N (default: cuda if any)"),
    storage: str | None = typer.Option(None, "--storage", help=STORAGE_HELP),
    force: bool = typer.Option(False, "--force", help="overwrite an existing file"),
) -> None:
    """Generate samples with a study's best configuration and save them as a grid."""
    from tfg_search.guidance.config import TFGConfig
    from tfg_search.run.evaluation import check_device

    name = _study_arg(study)
    if n < 1 or seed < 0:
        raise TFGSearchError("--n must be >= 1 and --seed >= 0")
    file = common.path("--out", out_file, "give the PNG file to write")
    assert file is not None
    if file.suffix.lower() != ".png":
        raise TFGSearchError(f"--out must be a .png file, got {file}")
    common.output_file("--out", file, force)
    if common.device(device) is not None:
        check_device(device)  # before any work: a device this torch cannot use is refused now
    payload = _best_payload(storage, name)
    config = TFGConfig.from_dict(payload["config"])
    tmp = file.with_name(f".{file.stem}.tmp{os.getpid()}.png")
    try:
        _sample_grid(
            payload["task"],
            payload["task_options"],
            payload["target"],
            config,
            n,
            seed,
            payload["steps"],
            device,
            tmp,
        )
        tmp.replace(file)
    except OSError as err:
        raise _write_error(file, err) from None
    finally:
        tmp.unlink(missing_ok=True)
    out.print(
        f"wrote {escape(str(file))} ({n} samples of {escape(str(payload['task']))} "
        f"target {escape(str(payload['target']))})"
    )


def register(app: typer.Typer) -> None:
    """Add the search commands to the CLI app."""
    app.command("search")(search)
    app.command("studies")(studies)
    app.command("best")(best)
    app.command("export")(export)
    app.command("sample")(sample)

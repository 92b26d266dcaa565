"""CLI commands of the search: ``search``, ``studies``, ``best``, ``export``, ``sample``."""

from __future__ import annotations

import json
import math
import os
import signal
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tfg_search.cli.task_commands import parse_options
from tfg_search.errors import TFGSearchError
from tfg_search.paths import safe_name

console = Console(stderr=True)
out = Console()


def _parse_space(text: str | None) -> Any:
    if text is None:
        return None
    from searchers import parse_space

    try:
        return parse_space(text)
    except (ValueError, TypeError) as err:
        raise TFGSearchError(f"bad --space: {err}") from None


def _no_overwrite(path: Path, force: bool) -> None:
    if path.exists() and not force:
        raise TFGSearchError(f"{path} exists; pass --force to overwrite it, or choose another --out")
    if not path.parent.exists():
        raise TFGSearchError(f"folder {path.parent} does not exist; create it or choose another --out")


class _Display:
    """Rich progress bars for rounds, trials and samples, with the current best."""

    def __init__(self, rounds: int, quiet: bool) -> None:
        self.quiet = quiet
        self.best = -math.inf
        self.best_text = ""
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

    def __call__(self, kind: str, data: dict[str, Any]) -> None:
        p = self.progress
        if kind == "study":
            self.progress.start()  # only once the study is open: bad input prints just its error
            state = "resuming" if data["resumed"] else "new"
            extra = f", {data['recovered']} interrupted trial(s) to redo" if data["recovered"] else ""
            if data.get("retried"):
                extra += f", {data['retried']} trial(s) that failed on the machine to retry"
            taken = f" (took over from dead {data['previous_holder']})" if data.get("previous_holder") else ""
            console.print(
                f"[bold]study[/] {data['name']} ({state}, {data['completed']} completed{extra}){taken}"
            )
        elif kind == "round":
            p.update(self.rounds, completed=data["round"], info=f"round {data['round']}")
            p.update(self.trials, total=data["pending"], completed=0, info="")
        elif kind == "final":
            p.update(self.rounds, completed=p.tasks[self.rounds].total, info="final re-runs")
            p.update(self.trials, total=data["count"], completed=0, info=f"final x {data['samples']}")
        elif kind == "trial":
            from tfg_search.cli.report import describe_params

            p.advance(self.trials)
            p.advance(self.samples, data["samples"])
            value = data["value"]
            if value is not None and value > self.best and data["role"] == "beam":
                self.best, self.best_text = value, describe_params(data["params"])
            info = f"best {self.best:.4f} ({self.best_text})" if self.best_text else ""
            p.update(self.trials, info=info)
            if data["error"]:
                p.console.print(f"[yellow]trial {data['number']} failed:[/] {data['error'][:200]}")

    def __enter__(self) -> _Display:
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()


def _top_table(report: Any, objective: list[str]) -> Table:
    from tfg_search.cli.report import describe_params

    table = Table(title=f"top configurations of {report.study_name}")
    wanted = ["validity", *(m.lstrip("_") for m in objective)]
    names = list(dict.fromkeys(m for m in wanted if report.top and m in report.top[0]["metrics"]))
    for col in ["trial", "role", "score", "params", *names]:
        table.add_column(col)
    for row in report.top:
        table.add_row(
            str(row["trial"]),
            str(row["role"]),
            f"{row['score']:.4f}",
            describe_params(row["params"]),
            *[f"{row['metrics'].get(n, float('nan')):.4g}" for n in names],
        )
    return table


def search(
    task: str = typer.Option(..., "--task", help="task name (see `tfg-search tasks`)"),
    target: str = typer.Option(..., "--target", help="target of the task (e.g. a class)"),
    method: str = typer.Option("tfg", "--method", help="tfg | dps | lgd | freedom | mpgd | ugd"),
    storage: str | None = typer.Option(None, "--storage", help="SQLAlchemy URL [env TFG_SEARCH_STORAGE]"),
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
    out_dir: Path | None = typer.Option(None, "--out-dir", help="where plots go (default tfg-output/STUDY)"),
    as_json: bool = typer.Option(False, "--json", help="print the result as one JSON object"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bars"),
) -> None:
    """Search guidance strengths with the beam doubling search; resumes a study with the same settings."""
    from tfg_search.executors import make_executor
    from tfg_search.search import run_search
    from tfg_search.settings import SearchSettings

    if method not in ("tfg", "dps", "lgd", "freedom", "mpgd", "ugd"):
        raise TFGSearchError(f"unknown method {method!r}; choose one of tfg, dps, lgd, freedom, mpgd, ugd")
    if not math.isfinite(eta) or not 0 <= eta <= 1:
        raise TFGSearchError(f"--eta must be a number in [0, 1], got {eta}")
    if gpus_per_trial < 0 or cpus_per_trial <= 0 or (workers is not None and workers < 1):
        raise TFGSearchError("--gpus-per-trial must be >= 0, --cpus-per-trial > 0 and --workers >= 1")
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
        objective=tuple(o.strip() for o in objective.split(",") if o.strip()) if objective else None,
        space=_parse_space(space),
        search_schedules=search_schedules,
        seed=seed,
        seed_presets=seed_presets,
        task_options=parse_options(task_option),
    )
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
    pool = make_executor(executor, **options)
    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        with _Display(rounds, quiet or as_json) as display:
            report = run_search(settings, storage, study, pool, device, display)
    finally:
        signal.signal(signal.SIGTERM, previous)
        pool.close()
    _finish(report, settings, storage, out_dir, as_json, quiet)


def _finish(
    report: Any, settings: Any, storage: str | None, out_dir: Path | None, as_json: bool, quiet: bool
) -> None:
    from tfg_search.cli.report import plot_search
    from tfg_search.storage import load_search

    folder = out_dir or Path("tfg-output") / safe_name(report.study_name)
    folder.mkdir(parents=True, exist_ok=True)
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
        None,
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
        f"{report.wall_time_s:.1f} s; study '{report.study_name}' in {report.storage}"
    )
    for reason in c.reasons[:3]:
        out.print(f"machine failure: {reason[:300]}")
    out.print(f"wrote {plot} and {grid}")


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
    from tfg_search.evaluation import evaluate

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
    storage: str | None = typer.Option(None, "--storage", help="SQLAlchemy URL [env TFG_SEARCH_STORAGE]"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """List the searches in the storage with their task, target, method and best score."""
    from tfg_search.storage import list_searches, open_storage

    rows = list_searches(open_storage(storage, create=False))
    if as_json:
        out.print_json(json.dumps(rows))
        return
    table = Table(title="studies")
    for col in ("study", "task", "target", "method", "trials", "best", "finished"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["study"],
            str(r["task"]),
            str(r["target"]),
            str(r["method"]),
            str(r["trials"]),
            "-" if r["best"] is None else f"{r['best']:.4f}",
            "yes" if r["finished"] else "no",
        )
    out.print(table)


def _best_payload(storage: str | None, study_name: str) -> dict[str, Any]:
    from tfg_search.storage import load_search

    studies = load_search(storage, study_name)
    info = studies.info
    found = studies.best()
    return {
        "study": studies.name,
        "task": info["task"],
        "target": info["target"],
        "method": info["method"],
        "task_options": info["settings"].get("task_options", {}),
        "steps": info["settings"]["steps"],
        "role": found.role,
        "trial": found.number,
        "score": found.value,
        "params": dict(found.params),
        "config": found.config,
        "metrics": found.metrics or {},
        "samples": found.samples,
    }


def best(
    study: str = typer.Option(..., "--study", help="study name (see `tfg-search studies`)"),
    storage: str | None = typer.Option(None, "--storage", help="SQLAlchemy URL [env TFG_SEARCH_STORAGE]"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """The best configuration of a study (its final re-run when the search finished)."""
    payload = _best_payload(storage, study)
    if as_json:
        out.print_json(json.dumps(payload))
        return
    note = "" if payload["role"] == "final" else "  (search not finished: best search trial)"
    out.print(
        f"study {payload['study']}: {payload['task']} target {payload['target']} ({payload['method']}){note}"
    )
    out.print(f"trial {payload['trial']} score {payload['score']:.4f}")
    out.print("config: " + ", ".join(f"{k}={v}" for k, v in payload["config"].items()))
    out.print("metrics: " + ", ".join(f"{k}={v:.4g}" for k, v in payload["metrics"].items()))


def export(
    study: str = typer.Option(..., "--study"),
    out_file: Path = typer.Option(..., "--out", help="JSON file to write"),
    storage: str | None = typer.Option(None, "--storage", help="SQLAlchemy URL [env TFG_SEARCH_STORAGE]"),
    force: bool = typer.Option(False, "--force", help="overwrite an existing file"),
) -> None:
    """Write the best configuration (TFGConfig JSON, with its task, target and metrics) to a file."""
    payload = _best_payload(storage, study)
    _no_overwrite(out_file, force)
    tmp = out_file.with_name(out_file.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    tmp.replace(out_file)
    out.print(f"wrote {out_file}")


def sample(
    study: str = typer.Option(..., "--study"),
    n: int = typer.Option(64, "--n", help="how many samples"),
    out_file: Path = typer.Option(..., "--out", help="PNG grid to write"),
    seed: int = typer.Option(0, "--seed"),
    device: str | None = typer.Option(None, "--device"),
    storage: str | None = typer.Option(None, "--storage", help="SQLAlchemy URL [env TFG_SEARCH_STORAGE]"),
    force: bool = typer.Option(False, "--force", help="overwrite an existing file"),
) -> None:
    """Generate samples with a study's best configuration and save them as a grid."""
    from tfg_search.guidance.config import TFGConfig

    if n < 1 or seed < 0:
        raise TFGSearchError("--n must be >= 1 and --seed >= 0")
    if out_file.suffix.lower() != ".png":
        raise TFGSearchError(f"--out must be a .png file, got {out_file}")
    payload = _best_payload(storage, study)
    _no_overwrite(out_file, force)
    config = TFGConfig.from_dict(payload["config"])
    tmp = out_file.with_name(f".{out_file.stem}.tmp{os.getpid()}.png")
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
        tmp.replace(out_file)
    finally:
        tmp.unlink(missing_ok=True)
    out.print(f"wrote {out_file} ({n} samples of {payload['task']} target {payload['target']})")


def register(app: typer.Typer) -> None:
    """Add the search commands to the CLI app."""
    app.command("search")(search)
    app.command("studies")(studies)
    app.command("best")(best)
    app.command("export")(export)
    app.command("sample")(sample)

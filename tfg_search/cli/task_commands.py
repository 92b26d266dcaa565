"""CLI commands about tasks: ``tasks`` (list), ``train`` (tiny bundled models), ``evaluate`` (a trial).

Numbers are read as text and checked here, so that every bad input is one ``error: ...`` line and
exit code 2 (a ``TFGSearchError`` raised to ``tfg_search.cli.main``), never a usage box.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Annotated, Any

import typer

from tfg_search.cli.common import THREADS_DEFAULT
from tfg_search.errors import TFGSearchError
from tfg_search.guidance.config import EVAL_METHODS

TaskOption = Annotated[
    list[str] | None,
    typer.Option(
        "--option",
        "-o",
        help="task option KEY=VALUE (repeatable), e.g. weights=DIR; custom: model=DIR "
        "predictor=module:function evaluator=module:function",
    ),
]


def parse_options(items: Sequence[str] | None, flag: str = "--option") -> dict[str, str]:
    """``["k=v", ...]`` -> ``{"k": "v"}``.

    Raises:
        TFGSearchError: an item without ``=``, with an empty key or value, or a key given twice.
    """
    out: dict[str, str] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            raise TFGSearchError(f"{flag} {item!r} must look like KEY=VALUE")
        if not value:
            raise TFGSearchError(f"{flag} {item!r} has an empty value; give KEY=VALUE or leave it out")
        if key in out:
            raise TFGSearchError(f"{flag} {key} is given twice; give each task option once")
        out[key] = value
    return out


DTYPE_HELP = (
    "float32 | float16 | bfloat16: the models' dtype (the guidance arithmetic stays float32; "
    "float16 needs a GPU)"
)


def with_dtype(options: dict[str, str], dtype: str, on_cpu: bool) -> dict[str, str]:
    """The task options with ``--dtype`` (every task's option ``dtype``, when not float32).

    Raises:
        TFGSearchError: an unknown dtype, float16 on a CPU, or ``-o dtype=`` saying otherwise.
    """
    from tfg_search.guidance.config import DTYPES

    if dtype not in DTYPES:
        raise TFGSearchError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if dtype == "float32":
        return options
    if options.get("dtype", dtype) != dtype:
        raise TFGSearchError(f"--dtype {dtype} and -o dtype={options['dtype']} disagree; give one")
    if dtype == "float16" and on_cpu:
        raise TFGSearchError("--dtype float16 needs a GPU (--device cuda); on a CPU use bfloat16 or float32")
    return {**options, "dtype": dtype}


def parse_number(name: str, text: str | None, kind: type = float, minimum: float | None = None) -> Any:
    """Parse an option value given as text; None stays None.

    Raises:
        TFGSearchError: not a finite number (or not an integer for ``kind=int``), or below minimum.
    """
    if text is None:
        return None
    try:
        value = kind(text.strip())
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise TFGSearchError(f"{name} must be {what}, got {text!r}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise TFGSearchError(f"{name} must be a finite number, got {text!r}")
    if minimum is not None and value < minimum:
        raise TFGSearchError(f"{name} must be >= {minimum:g}, got {text!r}")
    return value


def _json_value(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


def cmd_tasks(
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
) -> None:
    """List the registered tasks with their targets, metrics and default objective."""

    from tasks import describe, task_names
    from tfg_search.cli import output

    rows = [describe(name) for name in task_names()]  # the catalog: no model, no torch
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    cells = [
        [r["name"], r["targets"], ", ".join(r["metrics"]), ", ".join(r["objective"]), r["description"]]
        for r in rows
    ]
    columns = ["task", "targets", "metrics", "objective", "description"]
    output.console().print(output.table("tfg-search tasks", columns, cells, keep={"task"}))


class LineProgress:
    """Training progress as plain lines (for a log file): one per percent of a stage, at most one
    every ``every_s`` seconds, and the last step of each stage.

    Example:
        >>> import io
        >>> from rich.console import Console
        >>> out = io.StringIO()
        >>> p = LineProgress("shapes", Console(file=out, width=200), every_s=0.0)
        >>> p(1, 2, {"loss": 0.5}); p(2, 2, {"loss": 0.25})
        >>> out.getvalue().splitlines()[-1].startswith("training shapes: 2/2 steps, loss 0.2500")
        True
    """

    def __init__(self, task: str, console: Any, every_s: float = 60.0) -> None:
        import time

        self.task, self.console, self.every_s = task, console, every_s
        self._clock = time.monotonic
        self._start = self._last = self._clock()

    def __call__(self, done: int, total: int, info: dict[str, float]) -> None:
        now = self._clock()
        due = done == total or (done % max(1, total // 100) == 0 and now - self._last >= self.every_s)
        if due:
            self._last = now
            loss = info.get("loss", float("nan"))
            self.console.print(
                f"training {self.task}: {done}/{total} steps, loss {loss:.4f}, {now - self._start:.0f} s",
                markup=False,
                highlight=False,
            )


def cmd_train(
    task: Annotated[str, typer.Argument(help="task to train (see `tfg-search tasks`)")],
    seed: Annotated[str, typer.Option(help="random seed")] = "0",
    steps: Annotated[str | None, typer.Option(help="optimiser steps of the diffusion model")] = None,
    epochs: Annotated[str | None, typer.Option(help="epochs of the guiding CNNs (digits)")] = None,
    out: Annotated[
        str | None, typer.Option(help="output folder (default: the package's tasks/weights/TASK)")
    ] = None,
) -> None:
    """Train a bundled task's tiny models on CPU; writes safetensors + JSON (seed, steps, quality).

    A task whose trainer checkpoints (shapes) continues from its checkpoint when run again.
    """
    import inspect

    from rich.console import Console
    from rich.markup import escape
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from tasks.registry import load_object, task_factory, task_names
    from tasks.weights import weights_dir
    from tfg_search.cli import common

    common.text("TASK", task, "give a task name (see `tfg-search tasks`)")
    out_dir = common.path("--out", out, "give a folder, or leave --out out for the package's weights folder")
    if out_dir is not None and out_dir.exists() and not out_dir.is_dir():
        raise TFGSearchError(f"--out {out_dir} is a file, not a folder; choose another --out")
    factory = task_factory(task)
    if getattr(factory, "trained_by", None):
        owner = factory.trained_by
        raise TFGSearchError(f"task {task!r} reuses the {owner} models: run `tfg-search train {owner}`")
    spec = getattr(factory, "trainer", None)
    if not spec:
        trainable = [n for n in task_names() if _trainer_spec(n)]
        raise TFGSearchError(
            f"cannot train task {task!r}; trainable: {', '.join(trainable)} (custom models are "
            "trained by their owner)"
        )
    trainer = load_object(spec, f"trainer of task {task!r}")
    accepts = inspect.signature(trainer).parameters
    kwargs: dict[str, Any] = {"seed": parse_number("--seed", seed, int, 0)}
    if steps is not None:
        kwargs["steps"] = parse_number("--steps", steps, int, 1)
    if epochs is not None:
        if "epochs" not in accepts:
            raise TFGSearchError(f"--epochs does not apply to task {task!r} (its trainer counts steps)")
        kwargs["epochs"] = parse_number("--epochs", epochs, int, 1)
    folder = out_dir or weights_dir(task)
    err = Console(stderr=True)
    if not err.is_terminal:  # a log file or a pipe: plain lines, about one per percent or minute
        meta = trainer(out=folder, progress=LineProgress(task, err), **kwargs)
    else:
        with Progress(
            TextColumn(f"training {task}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} steps"),
            TextColumn("loss {task.fields[loss]:.4f}"),
            TimeElapsedColumn(),
            console=err,
        ) as bar:
            handle = bar.add_task(task, total=None, loss=float("nan"))

            def progress(done: int, total: int, info: dict[str, float]) -> None:
                bar.update(handle, completed=done, total=total, loss=info.get("loss", float("nan")))

            meta = trainer(out=folder, progress=progress, **kwargs)
    Console().print(f"wrote {escape(str(folder))}")
    Console().print_json(json.dumps(meta))


def _trainer_spec(name: str) -> str | None:
    from tasks.registry import task_factory

    try:
        return getattr(task_factory(name), "trainer", None)
    except TFGSearchError:
        return None


def cmd_evaluate(
    task: Annotated[str, typer.Option("--task", help="task name (see `tfg-search tasks`)")],
    target: Annotated[str, typer.Option("--target", help="target of the task")],
    method: Annotated[str, typer.Option(help=f"one of {', '.join(EVAL_METHODS)}")] = "tfg",
    strength: Annotated[str | None, typer.Option(help="the method's single strength (tfg: rho = mu)")] = None,
    rho: Annotated[str | None, typer.Option(help="variance-guidance strength")] = None,
    mu: Annotated[str | None, typer.Option(help="mean-guidance strength")] = None,
    gamma: Annotated[str | None, typer.Option(help="smoothing scale")] = None,
    n_recur: Annotated[str | None, typer.Option("--n-recur", help="recurrence rounds")] = None,
    n_iter: Annotated[str | None, typer.Option("--n-iter", help="mean-guidance steps")] = None,
    n_mc: Annotated[str | None, typer.Option("--n-mc", help="Monte-Carlo samples")] = None,
    eta: Annotated[str | None, typer.Option(help="DDIM stochasticity in [0, 1]")] = None,
    guidance_scale: Annotated[
        str | None,
        typer.Option("--guidance-scale", help="classifier-free guidance weight (default: the task's)"),
    ] = None,
    samples: Annotated[str, typer.Option("--samples", help="number of samples")] = "64",
    seed: Annotated[str, typer.Option(help="random seed")] = "0",
    steps: Annotated[str | None, typer.Option("--steps", help="DDIM steps")] = None,
    device: Annotated[str, typer.Option(help="torch device, e.g. cpu or cuda")] = "cpu",
    dtype: Annotated[str, typer.Option("--dtype", help=DTYPE_HELP)] = "float32",
    threads: Annotated[
        str | None, typer.Option("--threads", help=f"torch threads (default: {THREADS_DEFAULT})")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print metrics as one JSON object")] = False,
    save_grid: Annotated[
        str | None, typer.Option("--save-grid", help="write the samples to this PNG")
    ] = None,
    option: TaskOption = None,
) -> None:
    """Run one guided trial and print its held-out metrics."""
    from tasks import get_task
    from tfg_search.cli import common
    from tfg_search.cli.images import save_samples
    from tfg_search.guidance.config import method_config
    from tfg_search.run.devices import resolve_device
    from tfg_search.run.evaluation import evaluate
    from tfg_search.run.objective import score

    common.text("--task", task, "give a task name (see `tfg-search tasks`)")
    common.text("--target", target, "give one of the task's targets (see `tfg-search tasks`)")
    common.text("--method", method, f"choose one of {', '.join(EVAL_METHODS)}")
    common.device(device)
    grid_file = common.path("--save-grid", save_grid, "give a .png file, or leave --save-grid out")
    n = parse_number("--samples", samples, int, 1)
    seed_value = parse_number("--seed", seed, int, 0)
    n_steps = parse_number("--steps", steps, int, 1)
    n_threads = parse_number("--threads", threads, int, 1)
    try:
        config = method_config(
            method,
            parse_number("--strength", strength, float, 0),
            rho=parse_number("--rho", rho, float, 0),
            mu=parse_number("--mu", mu, float, 0),
            gamma=parse_number("--gamma", gamma, float, 0),
            n_recur=parse_number("--n-recur", n_recur, int, 1),
            n_iter=parse_number("--n-iter", n_iter, int, 0),
            n_mc=parse_number("--n-mc", n_mc, int, 1),
            eta=parse_number("--eta", eta, float, 0),
        )
    except (ValueError, TypeError) as err:
        raise TFGSearchError(f"invalid guidance setting: {err}") from None
    scale = parse_number("--guidance-scale", guidance_scale, float, 0)
    if grid_file is not None:
        common.output_file("--save-grid", grid_file, force=True)
    on_cpu = resolve_device(device, flag="--device").type == "cpu"
    the_task = get_task(task, with_dtype(parse_options(option), dtype, on_cpu))
    the_task.parse_target(target)
    config = config.replace(guidance_scale=the_task.guidance_scale if scale is None else scale)
    if config.guidance_scale != 1 and not the_task.conditional(target):
        raise TFGSearchError(
            f"--guidance-scale {config.guidance_scale:g} needs a conditional model; task {task!r} has no "
            f"condition for target {target!r}"
        )
    from tfg_search.run.threads import set_threads
    from tfg_search.run.validate import check_run

    check_run(the_task, target, config, n, seed_value, n_steps, device, n_threads)
    set_threads(n_threads)
    result = evaluate(
        the_task,
        target,
        config,
        n,
        seed_value,
        device=device,
        num_inference_steps=n_steps,
        return_samples=grid_file is not None,
    )
    if grid_file is not None and result.samples is not None:
        ref = the_task.reference(target) if result.samples.dim() == 2 else None
        try:
            save_samples(result.samples, grid_file, title=f"{task} {target}", reference=ref)
        except OSError as err:
            raise TFGSearchError(f"cannot write {grid_file}: {err.strerror or err}") from None
    if as_json:
        typer.echo(json.dumps({k: _json_value(v) for k, v in result.metrics.items()}))
        return
    _print_metrics(the_task, target, result, score(result.metrics, the_task.objective))


def _print_metrics(task: Any, target: str, result: Any, total: float) -> None:

    from tfg_search.cli import output

    title = f"{task.name} target {target} ({result.wall_time_s:.1f} s, {result.device})"
    cells = [[k, f"{v:.4f}"] for k, v in result.metrics.items()]
    cells.append([f"score ({', '.join(task.objective)})", f"{total:.4f}"])
    table = output.table(title, ["metric", "value"], cells, keep={"metric"}, justify={"value": "right"})
    output.console().print(table)


def register(app: typer.Typer) -> None:
    """Add ``tasks``, ``train`` and ``evaluate`` to the ``tfg-search`` app."""
    app.command("tasks")(cmd_tasks)
    app.command("train")(cmd_train)
    app.command("evaluate")(cmd_evaluate)

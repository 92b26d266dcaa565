"""``tfg-search suggest``: what the study database predicts for a target, before any search.

Zero model passes: the finished searches of other targets of the same model (those a new search
would start from, :mod:`tfg_search.run.transfer`) each fit a Gaussian process to their own
points, and the lattice point of highest mean over them is the suggestion.
"""

from __future__ import annotations

import json
import sys

import typer
from rich.markup import escape

from tfg_search.cli import common, output

out = output.console()


def suggest(
    task: str = typer.Option(..., "--task", help="task name (see `tfg-search tasks`)"),
    target: str = typer.Option(..., "--target", help="the target to suggest for"),
    method: str = typer.Option("tfg", "--method", help="the method whose searches to read"),
    steps: int | None = typer.Option(None, "--steps", help="DDIM steps (default: task's)"),
    objective: str | None = typer.Option(None, "--objective", help="comma list (default: task's)"),
    option: list[str] | None = typer.Option(None, "--option", "-o", help="task option KEY=VALUE"),
    storage: str | None = typer.Option(None, "--storage", help=common.STORAGE_HELP),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """The configuration the earlier searches of other targets predict for a target (no search).

    Exits 1 when the storage holds no finished search of another target of this model with the
    same steps, objective and lattices.
    """
    from tfg_search.cli.task_commands import parse_options
    from tfg_search.run.transfer import NoHistory
    from tfg_search.run.transfer import suggest as predict

    options = dict(
        method=method,
        steps=steps,
        objective=tuple(o.strip() for o in objective.split(",")) if objective else None,
        task_options=parse_options(option),
    )
    try:
        answer = predict(task, target, storage, **options)
    except NoHistory as err:  # not a bad input: an answer ("nothing known yet"), exit 1
        print(f"error: {err}", file=sys.stderr)
        raise typer.Exit(1) from None
    if as_json:
        out.print_json(json.dumps(answer))
        return
    params = ", ".join(f"{k}={v}" for k, v in answer["params"].items())
    out.print(f"suggested for {escape(task)} target {escape(target)}: {escape(params)} (0 model passes)")
    for s in answer["sources"]:
        score = "?" if s["score"] is None else f"{s['score']:.4f}"
        out.print(
            f"  from {escape(s['study'])} (target {escape(str(s['target']))}, answer score {score}, "
            f"{s['points']} points)"
        )

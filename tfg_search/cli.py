"""The ``tfg-search`` command line: one Typer app; each group of commands lives in its own module."""

from __future__ import annotations

import sys

import typer

from tfg_search.errors import TFGSearchError

app = typer.Typer(
    name="tfg-search",
    help="Training-free guidance for diffusion models, with a beam search over its strengths.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register() -> None:
    from tfg_search import task_commands

    task_commands.register(app)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the console script; user errors print one line and exit with code 2."""
    _register()
    try:
        app(args=argv, standalone_mode=True)
    except TFGSearchError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)

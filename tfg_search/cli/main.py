"""The ``tfg-search`` command line: one Typer app; each group of commands lives in its own module."""

from __future__ import annotations

import sys

import typer

from tfg_search.errors import SettingError, TFGSearchError

app = typer.Typer(
    name="tfg-search",
    help="Training-free guidance for diffusion models, with a beam search over its strengths.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register() -> None:
    from tfg_search.cli import search_commands, task_commands

    task_commands.register(app)
    search_commands.register(app)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the console script; user errors print one line and exit with code 2."""
    _register()
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the CLI says what happens itself
    try:
        code = app(args=argv, standalone_mode=False)
    except SettingError as err:  # a library parameter: say it as the command's flag
        print(f"error: --{err.param.replace('_', '-')} {err.detail}", file=sys.stderr)
        sys.exit(2)
    except TFGSearchError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        sys.exit(130)
    except Exception as err:
        # Typer may vendor its own copy of click: recognise its exceptions by class name.
        names = {cls.__name__ for cls in type(err).__mro__}
        if "Abort" in names:
            print("interrupted; rerun the same command to resume", file=sys.stderr)
            sys.exit(130)
        if "ClickException" not in names:
            raise
        ctx = getattr(err, "ctx", None)
        hint = f" (see `tfg-search {ctx.info_name} --help`)" if ctx is not None and ctx.parent else ""
        message = " ".join(err.format_message().split())  # type: ignore[attr-defined]
        print(f"error: {message}{hint}", file=sys.stderr)
        sys.exit(getattr(err, "exit_code", 2))
    sys.exit(code if isinstance(code, int) else 0)

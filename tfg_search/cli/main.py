"""The ``tfg-search`` command line: one Typer app; each group of commands lives in its own module."""

from __future__ import annotations

import errno
import os
import sys
import traceback

import typer

from tfg_search.errors import SettingError, TFGSearchError

app = typer.Typer(
    name="tfg-search",
    help="Training-free guidance for diffusion models, with a search over its strengths (the rung search "
    "by default). An error is one line; --debug (anywhere on the line) or TFG_SEARCH_DEBUG=1 also "
    "prints its traceback.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register() -> None:
    """Add the commands to the app, once (``main`` may run many times in one process)."""
    if app.registered_commands:
        return
    from tfg_search.cli import study_commands, task_commands

    task_commands.register(app)
    study_commands.register(app)


INTERRUPTED = "interrupted; rerun the same command to resume"
"""What a command stopped by Ctrl-C says (``search`` also says how many evaluations it stopped)."""


def _one_line(text: str) -> str:
    """An error message on one line (a message quoting user text could hold a line break)."""
    return " ".join(str(text).split())


DEBUG_FLAG = "--debug"
DEBUG_ENV = "TFG_SEARCH_DEBUG"


def _debug(argv: list[str]) -> tuple[list[str], bool]:
    """The arguments without ``--debug`` (any command takes it, anywhere before a ``--``), and
    whether to print an error's traceback (the flag, or ``TFG_SEARCH_DEBUG=1``)."""
    end = argv.index("--") if "--" in argv else len(argv)
    kept = [a for a in argv[:end] if a != DEBUG_FLAG] + argv[end:]
    wanted = len(kept) < len(argv) or os.environ.get(DEBUG_ENV, "").strip().lower() in ("1", "true", "yes")
    return kept, wanted


def _traceback(err: BaseException) -> None:
    """An error's traceback on stderr (``--debug``); a trial's, when it ran in a worker."""
    text = getattr(err, "details", None) or "".join(traceback.format_exception(err))
    print(text.rstrip(), file=sys.stderr)


WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EROFS})
"""Errors of a write that the machine, not the program, caused: one line, not a traceback."""


def output_failure(err: BaseException) -> None:
    """Exit with one line (code 1) when ``err`` is a failed write (a full disk, ``/dev/full``,
    a read-only file system); return otherwise."""
    if isinstance(err, OSError) and err.errno in WRITE_ERRNOS:
        where = f" {err.filename}" if err.filename else ""
        print(_one_line(f"error: cannot write{where}: {err.strerror}"), file=sys.stderr)
        sys.exit(1)


def _ignore_stop_signals() -> None:
    """Ignore SIGINT / SIGTERM from now on (the process exits; torch and Ray take a moment)."""
    import signal

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the console script; user errors print one line and exit with code 2;
    Ctrl-C / SIGTERM (search) print one line and exit with code 130."""
    from tfg_search.cli import stdout
    from tfg_search.cli.common import Interrupted

    args, debug = _debug(list(sys.argv[1:] if argv is None else argv))
    previous = sys.stdout
    stdout.install()  # a write to stdout that fails raises OutputError (one line, exit 1)
    try:
        _register()
        code = app(args=args, standalone_mode=False)
        stdout.finish()
    except stdout.OutputError as err:
        stdout.discard()
        if not err.pipe_closed:  # a reader that stopped reading (`| head`) is not an error to show
            print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    except SettingError as err:  # a library parameter: say it as the command's flag
        if debug:
            _traceback(err)
        print(_one_line(f"error: --{err.param.replace('_', '-')} {err.detail}"), file=sys.stderr)
        sys.exit(2)
    except TFGSearchError as err:
        if debug:
            _traceback(err)
        print(_one_line(f"error: {err}"), file=sys.stderr)
        sys.exit(2)
    except Interrupted as err:
        if argv is None:  # the console script is on its way out: a second signal changes nothing
            _ignore_stop_signals()
        print(err.message, file=sys.stderr)
        sys.exit(130)
    except KeyboardInterrupt:
        print(INTERRUPTED, file=sys.stderr)
        sys.exit(130)
    except Exception as err:
        # Typer may vendor its own copy of click: recognise its exceptions by class name.
        names = {cls.__name__ for cls in type(err).__mro__}
        if "Abort" in names:
            print(INTERRUPTED, file=sys.stderr)
            sys.exit(130)
        if "ClickException" not in names:
            output_failure(err)
            raise
        ctx = getattr(err, "ctx", None)
        hint = f" (see `tfg-search {ctx.info_name} --help`)" if ctx is not None and ctx.parent else ""
        message = _one_line(err.format_message())  # type: ignore[attr-defined]
        print(f"error: {message}{hint}", file=sys.stderr)
        sys.exit(getattr(err, "exit_code", 2))
    finally:
        sys.stdout = previous
    if code == 130:  # Typer turns a KeyboardInterrupt inside a command into exit code 130
        print(INTERRUPTED, file=sys.stderr)
    sys.exit(code if isinstance(code, int) else 0)

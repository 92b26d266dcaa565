"""Input checks shared by the commands, and the exception that ends a command interrupted.

Every check raises :class:`~tfg_search.errors.TFGSearchError` with a message that names the flag and
says how to fix it; ``tfg_search.cli.main`` prints it as one ``error: ...`` line (exit code 2).

Example:
    >>> text("--device", "cpu", "give cpu, cuda or cuda:N")
    'cpu'
    >>> text("--device", None, "give cpu, cuda or cuda:N") is None
    True
    >>> text("--device", " ", "give cpu, cuda or cuda:N")
    Traceback (most recent call last):
    ...
    tfg_search.errors.TFGSearchError: --device is empty; give cpu, cuda or cuda:N
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tfg_search.errors import TFGSearchError

RESUME_HINT = "rerun the same command to resume"
STORAGE_HELP = "SQLAlchemy URL [env TFG_SEARCH_STORAGE]"
THREADS_DEFAULT = "this process's CPU share less the cores the load average shows busy, at least 1"
"""The default of ``--threads`` in a few words (the rule: :func:`tfg_search.run.threads.default_threads`;
here, so that the query commands' module does not import ``tfg_search.run``)."""
STORAGE_FIX = "pass a URL such as sqlite:///tfg-studies.db, or leave --storage out for the default"


class Interrupted(Exception):
    """A command stopped by Ctrl-C or SIGTERM; ``main`` prints :attr:`message` and exits with 130.

    Attributes:
        stopped: how many evaluations were in flight (re-run in place when the command is rerun).
    """

    def __init__(self, stopped: int = 0) -> None:
        self.stopped = stopped
        super().__init__(
            f"interrupted: {stopped} evaluation(s) stopped, left to re-run in place; {RESUME_HINT}"
        )

    @property
    def message(self) -> str:
        return str(self)


def text(flag: str, value: str | None, fix: str) -> str | None:
    """``value`` unchanged, None for an absent option; an empty (or blank) value is an error."""
    if value is not None and not value.strip():
        raise TFGSearchError(f"{flag} is empty; {fix}")
    return value


def path(flag: str, value: str | None, fix: str = "give a file name") -> Path | None:
    """A path option read as text (``Path("")`` would silently be the current folder)."""
    checked = text(flag, value, fix)
    return None if checked is None else Path(checked)


def output_file(flag: str, file: Path, force: bool) -> None:
    """Refuse to write ``file`` over an existing one (unless ``force``), over a folder, or into a
    folder that does not exist."""
    if file.is_dir():
        raise TFGSearchError(f"{flag} {file} is a folder; give a file name")
    if file.is_symlink() and not file.exists() and not force:  # a link to nothing is still the user's
        raise TFGSearchError(
            f"{file} is a link to {os.readlink(file)}, which does not exist; pass --force to write "
            f"there, or choose another {flag}"
        )
    if file.exists() and not force:
        raise TFGSearchError(f"{file} exists; pass --force to overwrite it, or choose another {flag}")
    if not file.parent.is_dir():
        raise TFGSearchError(f"folder {file.parent} does not exist; create it or choose another {flag}")


def write_file(file: Path, write: Callable[[Path], Any]) -> None:
    """``write(path)`` the contents of ``file``, whole or not at all: a regular file (or a new one)
    is written to a temporary file beside it, then renamed into place (through a link: beside the
    file it names); a device or a pipe (``/dev/stdout``) is written in place, never replaced; a
    failure (a full disk) is one line.

    Raises:
        TFGSearchError: the write failed; nothing is left half-written in a regular file.
    """
    target = Path(os.path.realpath(file))
    tmp = target.with_name(f".{target.stem}.tmp{os.getpid()}{target.suffix}")
    try:
        if file.exists() and not file.is_file():  # a device or a pipe
            write(file)
            return
        write(tmp)
        tmp.replace(target)
    except OSError as err:
        raise TFGSearchError(
            f"cannot write {file}: {err.strerror or err}; free space or choose another file"
        ) from None
    finally:
        tmp.unlink(missing_ok=True)


def study(value: str | None, fix: str, *, new: bool = False) -> str | None:
    """A ``--study`` value: not empty, and a name every storage can hold
    (:func:`tfg_search.store.database.check_study_name`); ``new``: the name of a search to create or
    resume, which may not end in ``:search`` (the suffix of a search's search study)."""
    from tfg_search.store.database import check_study_name
    from tfg_search.store.layout import SEARCH_SUFFIX

    if text("--study", value, fix) is None:
        return None
    assert value is not None
    check_study_name(value)
    if new and value.endswith(SEARCH_SUFFIX):
        raise TFGSearchError(
            f"--study may not end in {SEARCH_SUFFIX!r} (the search trials of study N are kept in study "
            f"N{SEARCH_SUFFIX}); choose another name"
        )
    return value


def device(value: str | None) -> str | None:
    """A ``--device`` value: not empty, and a name torch knows (whether it is usable is checked
    where it is used; both by :func:`tfg_search.run.devices.resolve_device`)."""
    if text("--device", value, "give cpu, cuda or cuda:N, or leave --device out for the default") is None:
        return None
    from tfg_search.run.devices import resolve_device

    resolve_device(value, usable=False, flag="--device")
    return value


def quiet_optuna() -> None:
    """Optuna's INFO lines off (the command says what happens itself); called by the commands
    that use Optuna, so that the others (``--help``, ``tasks``) never import it."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)

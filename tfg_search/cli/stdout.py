"""Standard output that reports its write errors (a full disk, ``> /dev/full``, a closed stdout).

Python drops what is printed to a closed stdout (``sys.stdout`` is None) and reports a failed
write to a full one only at exit, as a multi-line "Exception ignored" with exit code 120. The CLI
puts :class:`CheckedStdout` in front of ``sys.stdout`` instead: a failed write raises
:class:`OutputError`, which ``tfg_search.cli.main`` prints as one line (exit code 1); a pipe closed
by its reader (``| head``) ends the command quietly, as other command-line tools do.

Example:
    >>> import io
    >>> out = CheckedStdout(io.StringIO())
    >>> out.write("ok\\n")
    3
    >>> try:
    ...     CheckedStdout(None).write("lost")
    ... except OutputError as err:
    ...     print(err)
    cannot write to standard output: it is closed
"""

from __future__ import annotations

import errno
import os
import sys
from typing import IO, Any


class OutputError(Exception):
    """Standard output failed; ``pipe_closed``: its reader went away (EPIPE: no message)."""

    def __init__(self, reason: str, pipe_closed: bool = False) -> None:
        self.pipe_closed = pipe_closed
        super().__init__(f"cannot write to standard output: {reason}")


def _failure(err: OSError) -> OutputError:
    closed = isinstance(err, BrokenPipeError) or err.errno == errno.EPIPE
    return OutputError(err.strerror or str(err), pipe_closed=closed)


class CheckedStdout:
    """``sys.stdout`` whose ``write`` and ``flush`` raise :class:`OutputError` when they fail
    (``file`` None: a stdout closed when the process started); everything else is the file's."""

    def __init__(self, file: IO[str] | None) -> None:
        self._file = file

    def write(self, text: str) -> int:
        if self._file is None:
            raise OutputError("it is closed")
        try:
            return self._file.write(text)
        except OSError as err:
            raise _failure(err) from None

    def flush(self) -> None:
        if self._file is None:
            return
        try:
            self._file.flush()
        except OSError as err:
            raise _failure(err) from None

    def isatty(self) -> bool:
        return self._file is not None and self._file.isatty()

    def __getattr__(self, name: str) -> Any:
        if self._file is None:
            raise AttributeError(name)
        return getattr(self._file, name)


def install() -> CheckedStdout:
    """Put a :class:`CheckedStdout` in front of the current ``sys.stdout`` (once)."""
    if not isinstance(sys.stdout, CheckedStdout):
        sys.stdout = CheckedStdout(sys.stdout)
    return sys.stdout


def finish() -> None:
    """Flush what a command printed (raising :class:`OutputError` if it cannot be written)."""
    if isinstance(sys.stdout, CheckedStdout):
        sys.stdout.flush()


def discard() -> None:
    """After an :class:`OutputError`: send what is still buffered to ``/dev/null``, so that the
    interpreter's own flush at exit does not report the same failure again."""
    file = sys.stdout._file if isinstance(sys.stdout, CheckedStdout) else sys.stdout
    try:
        fd = file.fileno() if file is not None else -1
    except (OSError, ValueError, AttributeError):
        return  # not a file of the process (a test's capture)
    if fd >= 0:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, fd)
        os.close(null)

"""Consoles and tables of the command line that a script can read.

On a terminal, Rich's width applies, but the columns that hold names (tasks, studies, targets,
configurations, URLs) never wrap: the other columns shrink first. On anything else (a pipe, a log
file, CI) nothing wraps at all: lines are as long as their content.

Example:
    >>> t = table("studies", ["study", "best"], [["a-very-long-study-name", "0.9"]], keep={"study"})
    >>> t.columns[0].min_width
    22
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from rich.console import Console
from rich.table import Table

UNWRAPPED_WIDTH = 100_000
"""The width of a console that is not a terminal (so that nothing wraps)."""


def console(stderr: bool = False) -> Console:
    """A console for results (stdout) or progress and messages (stderr)."""
    probe = Console(stderr=stderr)
    if probe.is_terminal:
        return Console(stderr=stderr, soft_wrap=True)
    return Console(stderr=stderr, soft_wrap=True, width=UNWRAPPED_WIDTH)


def table(
    title: str,
    columns: Sequence[str],
    rows: Iterable[Sequence[str]],
    keep: Iterable[str] = (),
    justify: dict[str, str] | None = None,
) -> Table:
    """A table whose ``keep`` columns are never wrapped nor cut (their widest cell is their minimum)."""
    from rich.markup import escape

    rows = [list(map(str, r)) for r in rows]
    kept = set(keep)
    out = Table(title=escape(title))
    for i, col in enumerate(columns):
        if col in kept:
            width = max([len(col), *(len(r[i]) for r in rows)])
            out.add_column(col, no_wrap=True, min_width=width, justify=(justify or {}).get(col, "left"))
        else:
            out.add_column(col, overflow="fold", justify=(justify or {}).get(col, "left"))
    for r in rows:
        out.add_row(*(escape(cell) for cell in r))
    return out

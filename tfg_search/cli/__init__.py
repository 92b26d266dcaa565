"""The ``tfg-search`` command line (Typer): ``main`` is the console script's entry point.

Commands live by group: :mod:`~tfg_search.cli.task_commands` (tasks, train, evaluate),
:mod:`~tfg_search.cli.search_command` (search, with its :mod:`~tfg_search.cli.progress` display
and its :mod:`~tfg_search.cli.results`) and :mod:`~tfg_search.cli.study_commands` (studies, best,
export, sample); pictures and tables in :mod:`~tfg_search.cli.report` and
:mod:`~tfg_search.cli.images`; shared checks in :mod:`~tfg_search.cli.common`.
"""

from __future__ import annotations

from tfg_search.cli.main import app, main

__all__ = ["app", "main"]

"""Tasks of tfg-search: what is guided and how it is judged (see ``tasks.base`` and docs/tasks.md).

``from tasks import get_task, task_names, describe`` does not load torch; ``tasks.Task`` (the base
class) is imported on first use.
"""

from __future__ import annotations

from typing import Any

from tasks.registry import describe, get_task, task_names

__all__ = ["Task", "describe", "get_task", "task_names"]


def __getattr__(name: str) -> Any:
    if name == "Task":
        from tasks.base import Task

        return Task
    raise AttributeError(f"module 'tasks' has no attribute {name!r}")

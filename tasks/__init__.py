"""Tasks of tfg-search: what is guided and how it is judged (see ``tasks.base`` and docs/tasks.md)."""

from __future__ import annotations

from tasks.base import Task
from tasks.registry import get_task, task_names

__all__ = ["Task", "get_task", "task_names"]

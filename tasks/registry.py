"""Find tasks by name: entry points of group ``tfg_search.tasks`` plus a built-in fallback.

A third-party package registers a task class (or any factory ``(**options) -> Task``) with::

    [project.entry-points."tfg_search.tasks"]
    my-task = "my_package.tasks:MyTask"

The bundled tasks are registered the same way in tfg-search's pyproject.toml; :data:`BUILTIN_TASKS`
makes them available from an uninstalled checkout too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib import import_module
from importlib.metadata import entry_points

from tasks.base import Task
from tfg_search.errors import TFGSearchError

GROUP = "tfg_search.tasks"
BUILTIN_TASKS: dict[str, str] = {
    "gmm2d": "tasks.gmm2d:Gmm2dTask",
    "digits": "tasks.digits:DigitsTask",
    "digits-attrs": "tasks.digits_attrs:DigitsAttrsTask",
    "digits-inpaint": "tasks.inverse:DigitsInpaintTask",
    "digits-superres": "tasks.inverse:DigitsSuperresTask",
    "digits-deblur": "tasks.inverse:DigitsDeblurTask",
    "custom": "tasks.custom:CustomTask",
}


def _entry_point_specs() -> dict[str, str]:
    return {ep.name: ep.value for ep in entry_points(group=GROUP)}


def task_names() -> list[str]:
    """Every registered task name (bundled first, then third-party, in name order)."""
    eps = _entry_point_specs()
    return list(BUILTIN_TASKS) + sorted(set(eps) - set(BUILTIN_TASKS))


def _load_factory(name: str, spec: str) -> Callable[..., Task]:
    module, _, attr = spec.partition(":")
    try:
        obj = import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as err:
        raise TFGSearchError(f"task {name!r} is registered as {spec!r} but cannot be loaded: {err}") from err
    return obj  # type: ignore[return-value]


def get_task(name: str, options: Mapping[str, str] | None = None) -> Task:
    """An instance of the task registered as ``name``, built with ``options`` (strings).

    Raises:
        TFGSearchError: unknown name, a registration that does not load, or bad options.
    """
    specs = {**_entry_point_specs(), **BUILTIN_TASKS}
    if name not in specs:
        raise TFGSearchError(f"unknown task {name!r}; available: {', '.join(task_names())}")
    factory = _load_factory(name, specs[name])
    try:
        task = factory(**dict(options or {}))
    except TypeError as err:
        raise TFGSearchError(f"bad options for task {name!r}: {err}") from err
    if not isinstance(task, Task):
        raise TFGSearchError(f"task {name!r} ({specs[name]}) did not build a tasks.base.Task")
    return task

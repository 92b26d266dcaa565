"""Find tasks by name: entry points of group ``tfg_search.tasks`` plus a built-in fallback.

A third-party package registers a task class (or any factory ``(**options) -> Task``) with::

    [project.entry-points."tfg_search.tasks"]
    my-task = "my_package.tasks:MyTask"

The bundled tasks are registered the same way in tfg-search's pyproject.toml; :data:`BUILTIN_TASKS`
makes them available from an uninstalled checkout too.

:func:`describe` feeds ``tfg-search tasks``. For the bundled tasks it reads ``tasks/catalog.json``,
the descriptions their classes give, written by ``python -m tasks`` (a test checks that it
equals what the classes say), so that listing tasks loads neither torch nor any model.
"""

from __future__ import annotations

import copy
import json
import os
import sys
from collections.abc import Callable, Mapping
from functools import lru_cache
from importlib import import_module
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from tfg_search.errors import TFGSearchError

if TYPE_CHECKING:
    from tasks.base import Task

GROUP = "tfg_search.tasks"
BUILTIN_TASKS: dict[str, str] = {
    "gmm2d": "tasks.gmm2d:Gmm2dTask",
    "digits": "tasks.digits:DigitsTask",
    "digits-attrs": "tasks.digits_attrs:DigitsAttrsTask",
    "digits-inpaint": "tasks.inverse:DigitsInpaintTask",
    "digits-superres": "tasks.inverse:DigitsSuperresTask",
    "digits-deblur": "tasks.inverse:DigitsDeblurTask",
    "shapes": "tasks.shapes:ShapesTask",
    "shapes-latent": "tasks.shapes_latent:ShapesLatentTask",
    "custom": "tasks.custom:CustomTask",
}


_IN_PROCESS: dict[str, Any] = {}
"""Tasks registered from Python (:func:`register_task`): name -> a Task or a factory."""


def register_task(name: str, task: Task | Callable[..., Task]) -> str:
    """Make a :class:`tasks.base.Task` object (or a factory ``(**options) -> Task``) a task of this
    process under ``name``, the identity its studies are named and found by (declare the same name
    for the same task: a study continues under it). The search API then takes it like a bundled
    task: ``run_search(SearchSettings(task=name, ...))``, in-process (``LocalExecutor``; Ray
    workers know only installed tasks). Returns ``name``.

    Example:
        >>> from tasks.gmm2d import Gmm2dTask
        >>> register_task("my-gmm", Gmm2dTask())
        'my-gmm'
        >>> get_task("my-gmm").name
        'gmm2d'

    Raises:
        TFGSearchError: an empty name, or the name of an installed task.
    """
    text = str(name).strip()
    if not text or text != name or any(c in text for c in "\n\t:"):
        raise TFGSearchError(f"a task name must be non-empty text without ':' or spaces around, got {name!r}")
    if text in registered_specs():
        raise TFGSearchError(f"task {name!r} is an installed task; declare another name for yours")
    _IN_PROCESS[text] = task
    return text


def registered_specs() -> dict[str, str]:
    """``name -> "module:attr"`` of every registered task (entry points, then the bundled ones)."""
    return {**{ep.name: ep.value for ep in entry_points(group=GROUP)}, **BUILTIN_TASKS}


def task_names() -> list[str]:
    """Every registered task name (bundled first, then third-party, in name order)."""
    installed = list(BUILTIN_TASKS) + sorted(set(registered_specs()) - set(BUILTIN_TASKS))
    return installed + sorted(set(_IN_PROCESS) - set(installed))


def load_object(spec: str, what: str) -> Any:
    """Import ``module:attr`` (``attr`` may be dotted); TFGSearchError saying why when it cannot.

    A module that is not importable from ``sys.path`` is looked up in the current working folder
    too (the folder a command runs in), so that ``-o predictor=my_guides:log_f`` finds
    ``./my_guides.py`` without ``PYTHONPATH=.``; the folder is appended to ``sys.path``, after the
    installed packages, and only when the module is not found otherwise.

    Example:
        >>> load_object("tasks.base:Task", "a class").__name__
        'Task'
    """
    module, sep, attr = str(spec).partition(":")
    if not sep or not module or not attr:
        raise TFGSearchError(f"{what} must be given as module:function, got {spec!r}")
    try:
        obj: Any = _import_here(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as err:
        raise TFGSearchError(f"cannot import {what} {spec!r}: {err}") from err
    return obj


def _import_here(module: str) -> ModuleType:
    """``import_module``, retried with the current working folder on ``sys.path`` when the module
    itself (not something it imports) is missing."""
    try:
        return import_module(module)
    except ModuleNotFoundError as err:
        cwd = os.getcwd()
        missing = err.name or ""
        if cwd in sys.path or not (module == missing or module.startswith(missing + ".")):
            raise
    sys.path.append(cwd)
    return import_module(module)


def task_factory(name: str) -> Callable[..., Task]:
    """The class (or factory) registered as ``name``, not yet built.

    Raises:
        TFGSearchError: unknown name, or a registration that does not load.
    """
    specs = registered_specs()
    if name not in specs:
        raise TFGSearchError(f"unknown task {name!r}; available: {', '.join(task_names())}")
    return load_object(specs[name], f"task {name!r} (registered as {specs[name]!r})")


def get_task(name: str, options: Mapping[str, str] | None = None) -> Task:
    """An instance of the task registered as ``name``, built with ``options`` (strings).

    The option ``dtype`` (float32, float16, bfloat16) is every task's: the dtype its models run in
    (:meth:`tasks.base.Task.set_dtype`); the others go to the task's factory.

    Raises:
        TFGSearchError: unknown name, a registration that does not load, or bad options.
    """
    kwargs = dict(options or {})
    dtype = kwargs.pop("dtype", "float32")
    given = _IN_PROCESS.get(name)
    from tasks.base import Task

    if isinstance(given, Task):
        if kwargs:
            raise TFGSearchError(f"task {name!r} was registered as an object; it takes no options")
        return copy.copy(given).set_dtype(dtype)  # shares its models, keeps its own dtype
    factory = given if given is not None else task_factory(name)
    try:
        task = factory(**kwargs)
    except TypeError as err:
        raise TFGSearchError(f"bad options for task {name!r}: {err}") from err
    if not isinstance(task, Task):
        raise TFGSearchError(f"task {name!r} ({registered_specs()[name]}) did not build a tasks.base.Task")
    return task.set_dtype(dtype)


CATALOG = Path(__file__).resolve().with_name("catalog.json")
"""The bundled tasks' descriptions (see the module docstring)."""


def build_description(name: str) -> dict[str, Any]:
    """What the task's class says of itself (builds the task; a task that needs options, like
    ``custom``, is described from its class attributes)."""
    try:
        return get_task(name).describe()
    except TFGSearchError as err:
        try:
            cls = task_factory(name)
        except TFGSearchError:
            cls = None
        return {
            "name": name,
            "description": getattr(cls, "description", "") or str(err),
            "targets": getattr(cls, "targets_hint", "(needs task options)"),
            "metrics": list(getattr(cls, "metrics", ("validity",))),
            "objective": list(getattr(cls, "objective", ("validity",))),
        }


@lru_cache(maxsize=1)
def _catalog() -> dict[str, Any]:
    try:
        return json.loads(CATALOG.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def describe(name: str) -> dict[str, Any]:
    """A JSON-ready description of a registered task, for ``tfg-search tasks``.

    Raises:
        TFGSearchError: an unknown task.
    """
    specs = registered_specs()
    if name in _IN_PROCESS and name not in specs:  # registered from Python: described by itself
        return build_description(name)
    if name not in specs:
        raise TFGSearchError(f"unknown task {name!r}; available: {', '.join(task_names())}")
    entry = _catalog().get(name)
    if entry is not None and entry.get("spec") == specs[name]:
        return dict(entry["description"])
    return build_description(name)


def catalog() -> dict[str, Any]:
    """The catalog the bundled tasks' classes give now (what :data:`CATALOG` must hold)."""
    return {
        name: {"spec": spec, "description": build_description(name)} for name, spec in BUILTIN_TASKS.items()
    }


def write_catalog() -> Path:
    """Rewrite :data:`CATALOG` from the bundled tasks' classes."""
    CATALOG.write_text(json.dumps(catalog(), indent=2, sort_keys=True) + "\n")
    _catalog.cache_clear()
    return CATALOG

"""The search score: the objective's metrics averaged into one number (higher is better).

Torch-free, so that settings and queries can use it without loading a model.

Example:
    >>> score({"validity": 0.5, "fd": 2.0}, ["validity", "_fd"])
    -0.75
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from tfg_search.errors import TFGSearchError


def score(metrics: Mapping[str, float], objective: Sequence[str]) -> float:
    """Search score: the mean of the objective's metrics, each oriented so higher is better.

    A name with a leading ``_`` means lower is better (its value enters negated). A missing or
    non-finite metric makes the score ``-inf`` (the trial ranks last, never NaN in a sort).

    Raises:
        TFGSearchError: an empty objective.
    """
    if not objective:
        raise TFGSearchError("the objective needs at least one metric name")
    total = 0.0
    for name in objective:
        key, sign = (name[1:], -1.0) if name.startswith("_") else (name, 1.0)
        value = metrics.get(key)
        if value is None or not math.isfinite(float(value)):
            return -math.inf
        total += sign * float(value)
    return total / len(objective)


def check_objective(task: Any, objective: Sequence[str]) -> None:
    """Raise TFGSearchError when an objective names a metric the task does not produce."""
    unknown = [m for m in objective if m.lstrip("_") not in task.metrics]
    if unknown:
        raise TFGSearchError(
            f"objective metric(s) {', '.join(unknown)} not produced by task {task.name!r}; "
            f"its metrics: {', '.join(task.metrics)} (prefix '_' = lower is better)"
        )

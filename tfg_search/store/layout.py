"""The stored layout of a search, without Optuna: study and attribute names, and how a trial's user
attrs decode into the fields of its record.

:mod:`tfg_search.store.record` is the record as the library uses it (on Optuna's trials); this module is
its Optuna-free part, so that the query commands can read the database directly
(:mod:`tfg_search.store.query`) and decode trials exactly as :func:`tfg_search.store.record.read` does. The
layouts themselves are described in :mod:`tfg_search.store.record`.

Example:
    >>> attrs = record(role="beam", round=0, config={"rho": 0.5}, samples=64, seed=0, steps=50,
    ...                metrics={"validity": 0.8}, wall_time_s=1.5, device="cpu", node="n1")
    >>> sorted(attrs) == [TRIAL_ATTR]
    True
    >>> record_fields(attrs, failed=False, role=None)["role"]
    'beam'
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tfg_search.guidance.config import TFGConfig

STUDY_ATTR = "tfg_search"
"""Study user attr: what the study is (task, target, method, settings, versions, layout, role)."""
TRIAL_ATTR = "tfg_search:trial"
"""Trial user attr (layout 2): one JSON object with every field of :class:`tfg_search.store.record.TrialRecord`."""
LAYOUT = 2
"""The layout this version writes (see :mod:`tfg_search.store.record`); legacy studies have none."""
SEARCH_SUFFIX = ":search"
"""The beam trials of study ``N`` live in study ``N + SEARCH_SUFFIX``."""

BEAM = "beam"
FINAL = "final"

FAILURE_TRIAL = "trial"
"""The configuration itself failed (e.g. its samples went non-finite): final, never retried."""
FAILURE_ENVIRONMENT = "environment"
"""The machine failed the trial (device, import, memory, a dead worker): retried on resume."""
FAILURE_INTERRUPTED = "interrupted"
"""The launcher was stopped (Ctrl-C, SIGTERM, kill -9) while the trial ran: retried on resume."""
RETRIED_ON_RESUME = (FAILURE_ENVIRONMENT, FAILURE_INTERRUPTED)

_FIELDS = (
    "role",
    "round",
    "config",
    "samples",
    "seed",
    "steps",
    "source_trial",
    "metrics",
    "error",
    "failure",
    "wall_time_s",
    "device",
    "node",
    "attempts",
)
# Layout 1 stored each field but "failure" as its own user attr, under the same names (an "error"
# of "interrupted" meant an interrupted trial, any other error a failed configuration).
_LEGACY_KEYS = tuple(name for name in _FIELDS if name != "failure")


def search_study_name(name: str) -> str:
    """The name of the study that holds the beam trials of study ``name``.

    Example:
        >>> search_study_name("digits-3-tfg-1a2b3c4d")
        'digits-3-tfg-1a2b3c4d:search'
    """
    return name + SEARCH_SUFFIX


def record(**fields: Any) -> dict[str, Any]:
    """The user attrs of a trial: ``{TRIAL_ATTR: {...}}`` with the given fields (None dropped).

    Raises:
        ValueError: an unknown field name.
    """
    unknown = set(fields) - set(_FIELDS)
    if unknown:
        raise ValueError(f"unknown trial record field(s): {', '.join(sorted(unknown))}")
    body = {k: v for k, v in fields.items() if v is not None}
    if isinstance(body.get("config"), TFGConfig):
        body["config"] = body["config"].to_dict()
    if "wall_time_s" in body:
        body["wall_time_s"] = round(float(body["wall_time_s"]), 4)
    return {TRIAL_ATTR: body}


def final_marker(source_trial: int) -> dict[str, Any]:
    """The user attrs a final re-run is enqueued with (its role and the beam trial it re-runs)."""
    return record(role=FINAL, source_trial=source_trial)


def record_fields(user_attrs: Mapping[str, Any], *, failed: bool, role: str | None) -> dict[str, Any]:
    """The record fields of a trial from its user attrs (layout 2, else the legacy per-field attrs).

    Args:
        user_attrs: the trial's user attrs, decoded.
        failed: whether the trial's state is FAIL (a legacy failure kind is inferred then).
        role: what the trial's study implies (the search study holds beam trials) when the trial
            itself does not say (a beam trial not yet told).
    """
    body = user_attrs.get(TRIAL_ATTR)
    if isinstance(body, Mapping):
        fields = {k: body.get(k) for k in _FIELDS}
    else:
        fields = {k: user_attrs.get(k) for k in _LEGACY_KEYS}
        if failed:
            error = fields.get("error")
            fields["failure"] = FAILURE_INTERRUPTED if error == FAILURE_INTERRUPTED else FAILURE_TRIAL
    fields["role"] = fields.get("role") or role
    return fields

"""The stored layout of a search, without Optuna: the one module that spells what is stored.

Layout of a search named ``N`` (layout 2, written since tfg-search 0.2, :data:`LAYOUT`):

* study ``N``, the *answer*: the final re-runs only (each a top configuration of the search
  re-run at full size on a fresh seed). Optuna's own tools (``optuna best-trial``,
  ``study.best_trial``, optuna-dashboard) therefore name the same best as ``tfg-search best``.
* study ``N:search`` (:func:`search_study_name`): the search's trials, sampled by
  :class:`searchers.TFGRungSampler`, :class:`searchers.TFGBeamSampler` or one of Optuna's
  samplers (a rung-search trial is one point, evaluated at each rung it reaches: its record
  lists those ``evaluations``).

Both studies carry the study *system* attr :data:`STUDY_ATTR` (:class:`StudyInfo`: what the search
is, its settings, the versions that made it, its layout, and for ``N:search`` its role), where
``optuna studies`` and optuna-dashboard do not print it, and the short study user attr
:data:`SUMMARY_ATTR` (:meth:`StudyInfo.summary`: one line, what they show). Studies made by
tfg-search 0.1-0.3 hold the info as a *user* attr of the same key, read when the system attr is
absent (:meth:`StudyInfo.of`) and never rewritten. ``N`` also carries the search's summary
(:mod:`tfg_search.store.summary`, layout 3). Each trial
carries **one** user attr, :data:`TRIAL_ATTR`, a JSON object written in one go when the result is
told (:func:`told`), so that the dashboard shows every field; beside it, one numeric user attr per
metric (:func:`metric_attrs`, ``metric:validity``: what optuna-dashboard sorts and plots; read by
nothing here; benchmarks/trial_attrs.py measures their writes). A final re-run is enqueued with
``{"role": "final", "source_trial": n}`` under the same key (:func:`final_marker`) so that an
interrupted one can be told apart.

Studies of earlier layouts (1: tfg-search 0.1, one study with one user attr per record field; 2:
tfg-search 0.2, no summary) are brought to this one by ``tfg-search migrate``
(:mod:`tfg_search.run.migrate`); nothing here decodes them.

Example:
    >>> attrs = record(role="search", round=0, config={"rho": 0.5}, samples=64, seed=0, steps=50,
    ...                metrics={"validity": 0.8}, wall_time_s=1.5, device="cpu", node="n1")
    >>> sorted(attrs) == [TRIAL_ATTR]
    True
    >>> record_fields(attrs, role=None)["role"]
    'search'
    >>> from types import SimpleNamespace as Study  # (an Optuna FrozenStudy's two attr dicts)
    >>> info = StudyInfo("digits", "3", "tfg", {"steps": 50, "search": "rungs"}, layout=LAYOUT)
    >>> StudyInfo.of(Study(user_attrs={}, system_attrs={STUDY_ATTR: info.attr()})) == info
    True
    >>> StudyInfo.of(Study(user_attrs={STUDY_ATTR: info.attr()}, system_attrs={})) == info  # 0.1-0.3
    True
    >>> StudyInfo.of(Study(user_attrs={"other": 1}, system_attrs={})) is None
    True
    >>> info.summary()
    'digits 3 tfg, rungs search, 50 steps; answer: final re-runs (2 of 2)'
    >>> info.trial_studies("N")
    [('N:search', 'search'), ('N', 'final')]
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tfg_search.guidance.config import TFGConfig
from tfg_search.guidance.passes import read_passes, sample_passes, total_passes
from tfg_search.trial import FAILURE_INTERRUPTED, TrialOutcome, TrialSpec

STUDY_ATTR = "tfg_search"
"""Study system attr: what the study is (:class:`StudyInfo`, JSON); a user attr in studies of
tfg-search 0.1-0.3, read as such (:meth:`StudyInfo.stored`)."""
SUMMARY_ATTR = "tfg_search_summary"
"""Study user attr: :meth:`StudyInfo.summary`, one short line (what ``optuna studies`` prints)."""
TRIAL_ATTR = "tfg_search:trial"
"""Trial user attr (layout 2): one JSON object with every field of a trial's record."""
LAYOUT = 3
"""The layout this version writes: 3 (tfg-search 0.3: layout 2 and the answer study's summary,
:mod:`tfg_search.store.summary`); 2 for studies of tfg-search 0.2, 1 for those of 0.1 (which
stored none). ``tfg-search migrate`` brings a study of an earlier layout to this one."""
SEARCH_SUFFIX = ":search"
"""The search trials of study ``N`` live in study ``N + SEARCH_SUFFIX``."""

SEARCH = "search"
FINAL = "final"
"""Trial roles: a search trial (small fidelity) or a final re-run (full size)."""
ROLE_ALIASES = {"beam": SEARCH}
"""Roles as tfg-search 0.1 and 0.2 stored them ("beam" for every search trial), read as today's."""
SEARCH_STUDY = "search"
"""The role a search study's :class:`StudyInfo` stores (a main study stores none)."""

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
    "passes",
    "rung",
    "evaluations",
    "interruptions",
)


def search_study_name(name: str) -> str:
    """The name of the study that holds the search trials of study ``name``.

    Example:
        >>> search_study_name("digits-3-tfg-1a2b3c4d")
        'digits-3-tfg-1a2b3c4d:search'
    """
    return name + SEARCH_SUFFIX


@dataclass(frozen=True)
class StudyInfo:
    """What a tfg-search study is: the value of its :data:`STUDY_ATTR`.

    Attributes:
        task, target, method: what is searched.
        settings: the resolved settings (``ResolvedSettings.to_dict()``).
        layout: :data:`LAYOUT` (3 since tfg-search 0.3), 2 for 0.2, 1 for a study of tfg-search 0.1.
        role: ``None`` for the main study ``N``, :data:`SEARCH_STUDY` for ``N:search``.
        main_study: for ``N:search``, the name ``N``.
        versions, created: what made it, and when.
        warm_start: the earlier methods' points of round 0 (``--seed-presets``), fixed at creation.
        extended: when the study was continued with larger extendable settings, and how.
        model_identity: the searched model's identity (``Task.model_identity``: a sha256 of its
            configs and weights), recorded since tfg-search 0.3 (None in older studies).
        transfer: the earlier searches of other targets the rung search started from, frozen at
            creation (:mod:`tfg_search.run.transfer`): ``{"mode": "auto"|"named", "sources": [...]}``;
            None: made without transfer (``--no-transfer``, another search, or before 0.4).
    """

    task: str
    target: str
    method: str
    settings: dict[str, Any]
    layout: int = 1
    role: str | None = None
    main_study: str | None = None
    versions: dict[str, str] = field(default_factory=dict)
    created: str | None = None
    warm_start: list[dict[str, Any]] = field(default_factory=list)
    extended: list[dict[str, Any]] = field(default_factory=list)
    model_identity: str | None = None
    transfer: dict[str, Any] | None = None

    @staticmethod
    def stored(study: Any) -> Any:
        """The raw :data:`STUDY_ATTR` value of ``study`` (None: it has none): its system attr, else
        (a study of tfg-search 0.1-0.3, which stored it there) its user attr.

        Args:
            study: an ``optuna.Study``, or a ``FrozenStudy`` (``storage.get_all_studies()``); only
                its ``user_attrs`` and system attrs are read.
        """
        system = getattr(study, "system_attrs", None)  # a FrozenStudy has them
        if system is None:  # an optuna.Study: Optuna 5 keeps them to its storage
            from searchers import optuna_internals

            system = optuna_internals.study_system_attrs(study)
        if STUDY_ATTR in system:
            return system[STUDY_ATTR]
        return study.user_attrs.get(STUDY_ATTR)

    @classmethod
    def of(cls, study: Any) -> StudyInfo | None:
        """The info of a study (:meth:`stored`), or None: the one test of "a tfg-search study"."""
        return cls.parse(cls.stored(study))

    @classmethod
    def parse(cls, raw: Any) -> StudyInfo | None:
        """The info a stored :data:`STUDY_ATTR` value holds (None: not one, or without settings)."""
        if not isinstance(raw, Mapping) or not isinstance(raw.get("settings"), Mapping):
            return None
        return cls(
            task=raw.get("task"),  # type: ignore[arg-type]
            target=raw.get("target"),  # type: ignore[arg-type]
            method=raw.get("method"),  # type: ignore[arg-type]
            settings=dict(raw["settings"]),
            layout=int(raw.get("layout", 1)),
            role=raw.get("role"),
            main_study=raw.get("main_study"),
            versions=dict(raw.get("versions") or {}),
            created=raw.get("created"),
            warm_start=list(raw.get("warm_start") or []),
            extended=list(raw.get("extended") or []),
            model_identity=raw.get("model_identity"),
            transfer=dict(raw["transfer"]) if isinstance(raw.get("transfer"), Mapping) else None,
        )

    def attr(self) -> dict[str, Any]:
        """The stored value (what :meth:`of` reads back)."""
        out: dict[str, Any] = {
            "task": self.task,
            "target": self.target,
            "method": self.method,
            "settings": self.settings,
            "versions": self.versions,
            "created": self.created,
        }
        if self.layout >= 2:
            out["layout"] = self.layout
        if self.warm_start:
            out["warm_start"] = self.warm_start
        if self.extended:
            out["extended"] = self.extended
        if self.model_identity is not None:
            out["model_identity"] = self.model_identity
        if self.transfer is not None:
            out["transfer"] = self.transfer
        if self.role is not None:
            out["role"] = self.role
            out["main_study"] = self.main_study
        return out

    def summary(self) -> str:
        """One short line of what the study is (:data:`SUMMARY_ATTR`): the task, target and method,
        the search, its steps, and which of the search's two studies this is."""
        what = " ".join(_short(str(v)) for v in (self.task, self.target, self.method))
        search = self.settings.get("search", "rungs")
        which = "search trials (1 of 2)" if self.is_search_study else "answer: final re-runs (2 of 2)"
        return f"{what}, {search} search, {self.settings.get('steps')} steps; {which}"

    @property
    def is_search_study(self) -> bool:
        """Whether this is the ``N:search`` study of a search (not one to list or answer from)."""
        return self.role == SEARCH_STUDY

    def search_study(self, main: str) -> StudyInfo:
        """The info of the search study of main study ``main``."""
        return dataclasses.replace(self, role=SEARCH_STUDY, main_study=main)

    def with_settings(self, settings: Mapping[str, Any], extension: Mapping[str, Any]) -> StudyInfo:
        """The info after the study was continued with ``settings`` (``extension`` logged)."""
        return dataclasses.replace(self, settings=dict(settings), extended=[*self.extended, dict(extension)])

    def trial_studies(self, name: str) -> list[tuple[str, str]]:
        """Where the trials of search ``name`` live, in record order: (study name, the role of
        its trials)."""
        return [(search_study_name(name), SEARCH), (name, FINAL)]


def _short(text: str, width: int = 24) -> str:
    """``text`` cut to ``width`` characters (a long custom task or target: the summary stays one
    short line; the info keeps it whole)."""
    return text if len(text) <= width else text[: width - 3] + "..."


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


def told(
    spec: TrialSpec,
    outcome: TrialOutcome,
    *,
    role: str,
    round: int | None,
    source_trial: int | None,
    error: str | None,
    failure: str | None,
    interruptions: int | None = None,
) -> dict[str, Any]:
    """The user attrs of a told trial: its spec and its outcome (the one write of its results).

    ``error`` / ``failure``: None for a success (the outcome's metrics are stored), else why it
    failed (the metrics are not stored). ``interruptions``: how often the trial was re-run after
    its search stopped.
    """
    return record(
        role=role,
        round=round,
        config=spec.config,
        samples=spec.samples,
        seed=spec.seed,
        steps=spec.steps,
        source_trial=source_trial,
        metrics=dict(outcome.metrics) if error is None and outcome.metrics is not None else None,
        error=error,
        failure=failure,
        wall_time_s=outcome.wall_time_s,
        device=outcome.device,
        node=outcome.node,
        attempts=outcome.attempts,
        passes=outcome.passes or sample_passes(spec.config, spec.steps, spec.samples),
        interruptions=interruptions,
    )


METRIC_PREFIX = "metric:"
"""Trial user attrs beside the record: one number per metric (``metric:validity``), so that
optuna-dashboard can sort and plot them (it shows the record as one JSON text); written with the
record, read by nothing here (the record stays the source)."""


def metric_attrs(attrs: Mapping[str, Any]) -> dict[str, float]:
    """The numeric user attrs of a told trial's metrics (:data:`METRIC_PREFIX`; finite ones only).

    Example:
        >>> metric_attrs(record(role="search", metrics={"validity": 0.75, "fid": float("nan")}))
        {'metric:validity': 0.75}
    """
    metrics = (attrs.get(TRIAL_ATTR) or {}).get("metrics") or {}
    return {
        METRIC_PREFIX + str(k): float(v)
        for k, v in metrics.items()
        if isinstance(v, (int, float)) and math.isfinite(v)
    }


EVALUATION = (
    *("samples", "seed", "metrics", "passes", "wall_time_s"),
    *("device", "node", "attempts", "error", "failure"),
)
"""The fields of one evaluation of a rung-search point (its record's ``evaluations``)."""


def point_record(
    earlier: list[dict[str, Any]], attrs: Mapping[str, Any], *, rung: int, score: float | None
) -> dict[str, Any]:
    """The record of a rung-search point after its evaluation at ``rung``: ``attrs`` (the
    evaluation's own record, :func:`told`) becomes the last of its ``evaluations`` (with its
    ``score``), and the record's own fields sum them up: ``samples``, ``passes`` and
    ``wall_time_s`` in all, ``metrics`` their sample-weighted means (so that the score of the
    metrics is the point's estimate), the first rung's ``seed``, the last one's device, node,
    attempts and failure.

    Example:
        >>> first = point_record([], record(role="search", samples=8, seed=0, metrics={"v": 0.5},
        ...                      passes={"denoiser": 8}), rung=0, score=0.5)
        >>> both = point_record(first[TRIAL_ATTR]["evaluations"], record(role="search", samples=8,
        ...                     seed=2, metrics={"v": 0.7}, passes={"denoiser": 8}), rung=1, score=0.7)
        >>> body = both[TRIAL_ATTR]
        >>> body["samples"], body["seed"], body["metrics"], body["passes"]["denoiser"], body["rung"]
        (16, 0, {'v': 0.6}, 16, 1)
    """
    body = dict(attrs[TRIAL_ATTR])
    this = {k: body[k] for k in EVALUATION if body.get(k) is not None}
    evaluations = [*earlier, {"rung": rung, "score": score, **this}]
    body["evaluations"] = evaluations
    body["rung"] = rung
    body["samples"] = sum(int(e.get("samples") or 0) for e in evaluations)
    body["seed"] = evaluations[0].get("seed")
    body["wall_time_s"] = round(sum(float(e.get("wall_time_s") or 0.0) for e in evaluations), 4)
    spent = [e["passes"] for e in evaluations if isinstance(e.get("passes"), Mapping)]
    if spent:
        kinds = dict.fromkeys(k for p in spent for k in p)
        body["passes"] = {k: sum(int(p.get(k, 0)) for p in spent) for k in kinds}
    measured = [e for e in evaluations if e.get("metrics")]
    if measured and "error" not in body:
        total = sum(int(e["samples"]) for e in measured)
        names = dict.fromkeys(k for e in measured for k in e["metrics"])
        body["metrics"] = {
            k: sum(float(e["metrics"][k]) * int(e["samples"]) for e in measured if k in e["metrics"]) / total
            for k in names
        }
    return {TRIAL_ATTR: body}


def passes_of(fields: Mapping[str, Any]) -> dict[str, int] | None:
    """The model passes a told trial spent (:func:`tfg_search.guidance.passes.sample_passes`):
    as stored (:func:`~tfg_search.guidance.passes.read_passes`: a latent task's decoder passes
    kept, a kind an older record lacks 0), or (a trial of an earlier version, which did not store
    them) from its configuration, steps and samples; None for a trial that has not run (no
    configuration yet, or interrupted)."""
    stored = fields.get("passes")
    if isinstance(stored, Mapping):
        return read_passes(stored)
    config, steps, samples = fields.get("config"), fields.get("steps"), fields.get("samples")
    if fields.get("failure") == FAILURE_INTERRUPTED or not config or not steps or not samples:
        return None
    return sample_passes(TFGConfig.from_dict(config), int(steps), int(samples))


def compute(records: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """What a search spent, from its trials' record fields: told trials by role, their model
    passes summed (:func:`passes_of`), and their wall time (what ``tfg-search best --json`` and
    the search summary report as ``compute``; the decoder kinds when a trial has them:
    :func:`~tfg_search.guidance.passes.total_passes`)."""
    trials = {SEARCH: 0, FINAL: 0}
    spent = []
    wall = 0.0
    for fields in records:
        passes = fields.get("passes")
        if passes is None:
            continue
        role = fields.get("role") or SEARCH
        trials[role] = trials.get(role, 0) + 1
        spent.append(passes)
        wall += float(fields.get("wall_time_s") or 0.0)
    return {"trials": trials, "passes": total_passes(spent), "wall_time_s": round(wall, 2)}


def interrupted(fields: Any, role: str, reason: str) -> dict[str, Any]:
    """The user attrs of an unfinished trial marked interrupted: what its record (an object with
    the record's fields as attributes, e.g. a ``TrialRecord``) already says, with ``reason``."""
    return record(
        role=role,
        round=fields.round,
        config=fields.config or {},
        samples=fields.samples or 0,
        seed=fields.seed or 0,
        steps=fields.steps or 0,
        source_trial=fields.source_trial,
        error=reason,
        failure=FAILURE_INTERRUPTED,
        wall_time_s=0.0,
        device=fields.device or "unknown",
        node=fields.node or "unknown",
        attempts=fields.attempts or 1,
    )


def final_marker(source_trial: int) -> dict[str, Any]:
    """The user attrs a final re-run is made with (its role and the search trial it re-runs)."""
    return record(role=FINAL, source_trial=source_trial)


def record_fields(user_attrs: Mapping[str, Any], *, role: str | None) -> dict[str, Any]:
    """The record fields of a trial from its user attrs.

    Args:
        user_attrs: the trial's user attrs, decoded.
        role: what the trial's study implies (the search study holds search trials) when the
            trial itself does not say (a search trial not yet told).
    """
    body = user_attrs.get(TRIAL_ATTR)
    fields = {k: body.get(k) for k in _FIELDS} if isinstance(body, Mapping) else dict.fromkeys(_FIELDS)
    stored = fields.get("role")
    fields["role"] = ROLE_ALIASES.get(stored, stored) or role
    fields["passes"] = passes_of(fields)
    return fields

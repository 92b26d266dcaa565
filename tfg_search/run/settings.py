"""``SearchSettings``: what defines a search (and so a study), resolved against a task's defaults.

Two runs with the same resolved settings are the same study: the derived study name is a hash of
them, so rerunning a command resumes its study, and a study refuses to be continued with settings
that differ (the differences are listed).

Example:
    >>> s = SearchSettings(task="gmm2d", target="3", samples=32)
    >>> s.samples, s.method
    (32, 'tfg')
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from searchers import Lattice
from searchers.rungs import RungSchedule
from tfg_search.errors import SettingError, TFGSearchError
from tfg_search.guidance.config import DTYPES, METHODS, TFGConfig
from tfg_search.run.objective import check_objective

TFG_PARAMS = ("rho", "mu", "gamma")
"""What the TFG search varies; a baseline method varies one "strength"."""
CFG_PARAM = "guidance_scale"
"""The classifier-free guidance weight: searched beside the strengths on a conditional task
(its own lattice, ``Task.guidance_space``), else fixed (``--guidance-scale``, the task's default)."""

EXTENDABLE = ("rounds", "final_top", "trials")
"""Settings a study may be continued with larger values of (a search is deterministic for its seed: the first
rounds are the stored ones and only the new rounds / re-runs run). They are not in the study name."""

SEARCHES = ("rungs", "beam", "gp", "tpe", "random")
"""What searches (``--search``, docs/search.md): "rungs" (the default: a spread start,
surrogate-guided refinement and successive halving over sample sizes,
:class:`searchers.TFGRungSampler`), "beam" (the paper's beam doubling search, exact,
:class:`searchers.TFGBeamSampler`), or Optuna's Gaussian-process BO, TPE or random search on the
same lattices (their exponents), in waves of ``wave`` trials asked at once."""
OPTUNA_SEARCHES = ("gp", "tpe", "random")
"""The searches that are Optuna's own samplers (``trials`` and ``wave`` apply to them)."""
DEFAULT_SEARCH = "rungs"
DEFAULT_WAVE = 8
"""Trials asked at once by ``--search gp|tpe|random`` and per round of the rung search (one
wave of parallel workers)."""
DEFAULT_TOP_K = 2
"""Beam width of ``--search beam`` when ``top_k`` is not given."""
DEFAULT_ROUNDS = 6
"""Round limit of ``--search beam`` when ``rounds`` is not given (round 0 counts)."""


def legacy_spelling(search: str, steps_down: bool) -> dict[str, str]:
    """``search`` as tfg-search 0.2 stored it: ``{"sampler": ..., "mode": ...}`` (its
    ``--sampler`` and ``--mode``). Study names hash the settings in this spelling, so that a study
    made before ``--search`` is found by the same search after it (:meth:`ResolvedSettings.fingerprint`).

    Example:
        >>> legacy_spelling("rungs", False), legacy_spelling("beam", True)
        ({'sampler': 'beam', 'mode': 'rungs'}, {'sampler': 'beam', 'mode': 'refined'})
    """
    if search == "rungs":
        return {"sampler": "beam", "mode": "rungs"}
    if search == "beam":
        return {"sampler": "beam", "mode": "refined" if steps_down else "reference"}
    return {"sampler": search, "mode": "rungs"}  # 0.2 stored its default mode with Optuna's samplers


def current_spelling(stored: Mapping[str, Any]) -> dict[str, Any]:
    """Stored settings in this version's spelling (``search``, ``steps_down``; read compatibility
    of the ``sampler`` and ``mode`` that tfg-search 0.1 and 0.2 stored).

    Example:
        >>> current_spelling({"sampler": "beam", "mode": "reference", "seed": 0})
        {'seed': 0, 'search': 'beam', 'steps_down': False}
    """
    out = {k: v for k, v in stored.items() if k not in ("sampler", "mode")}
    if "search" not in stored:
        sampler, mode = stored.get("sampler", "beam"), stored.get("mode", "reference")
        out["search"] = sampler if sampler != "beam" else "rungs" if mode == "rungs" else "beam"
        out["steps_down"] = sampler == "beam" and mode == "refined"
    return out


def rung_schedule(wave: int | None = None) -> RungSchedule:
    """The rung search's budget at ``wave`` candidates per round (default :data:`DEFAULT_WAVE`)."""
    return RungSchedule(wave=wave or DEFAULT_WAVE)


def default_trials(wave: int | None = None) -> int:
    """Search trials of ``--search gp|tpe|random`` when ``--trials`` is not given: the sample
    units the default rung search draws at the same ``wave``, so that either search, run on its
    defaults, spends the same search passes (docs/searchers.md, "The rung search").

    Example:
        >>> default_trials(), default_trials(4)
        (40, 32)
    """
    return rung_schedule(wave).units()


def _count(name: str, value: object, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SettingError(name, f"must be an integer >= {minimum}, got {value!r}")


@dataclass(frozen=True)
class SearchSettings:
    """Everything that defines a search; ``None`` fields take the task's or method's default.

    Attributes:
        task, target: what is guided (a registered task and one of its targets).
        method: "tfg" (search rho, mu, gamma) or an earlier method (search its single strength).
        samples: samples per search evaluation (the small fidelity; default: the task's). In the
            rung search, the samples of a rung-0 evaluation (the unit: rung ``j`` draws
            ``2 ** (j - 1)`` units more).
        final_samples, final_top: the top ``final_top`` (>= 1) configurations are re-run on
            ``final_samples`` samples (default: the task's); the best of those is the answer.
        top_k, rounds: beam width (default 2) and round limit (default 6) of ``search="beam"``.
        n_recur, n_iter, n_mc, eta, steps: fixed during a search (they set its cost).
        objective: metric names averaged into the score ("_" prefix: lower is better).
        space: the lattice of each searched parameter.
        search_schedules: also search the increase / decrease / constant structures (True: of
            every parameter; or the names of some).
        seed: seed of every search evaluation (common random numbers: candidates are compared on
            the same noise); the final re-runs use ``seed + 1`` (fresh samples, no selection bias).
        seed_configs: warm start: configurations put into round 0.
        seed_presets: warm start from the earlier methods: their configurations (at their
            searched best in the storage when known) join round 0 (default: in the rung search
            of method tfg, yes; else no)
            (:func:`tfg_search.run.warm_start.preset_seeds`; fixed when the study is created).
        search: :data:`SEARCHES`: "rungs" (the default), "beam" (the paper's), or Optuna's "gp",
            "tpe", "random" (then ``trials`` and ``wave`` apply).
        steps_down: ``search="beam"`` only: a neighbour may also step one exponent down (the
            refined neighbourhood, :class:`searchers.TFGBeamSampler`).
        task_options: options of the task (e.g. the ``custom`` task's model folder; a path is
            stored absolute, as the task resolves it: :meth:`tasks.base.Task.stored_options`).
        guidance_scale: the classifier-free guidance weight when it is not searched (default:
            the task's, :attr:`tasks.base.Task.guidance_scale`; 1 on an unconditional task). On a
            conditional task the default space searches it (:meth:`tasks.base.Task.guidance_space`)
            unless this is given or ``space`` leaves it out.
        dtype: :data:`DTYPES`: the dtype of the models (the guidance arithmetic stays float32),
            stored as the task option ``dtype`` when not float32 (every task takes it:
            :meth:`tasks.base.Task.set_dtype`).
        trials: search trials of ``search`` gp, tpe or random (default :func:`default_trials`).
        wave: trials Optuna's samplers ask at once, or the candidates of a rung-search round
            (default :data:`DEFAULT_WAVE`).
        transfer: whether a new rung search starts from the finished searches of other targets
            of the same model in the storage (True, the default; :mod:`tfg_search.run.transfer`),
            from none (False), or from the studies named. Used when the study is created (its
            sources are frozen into it), not part of its name or stored settings.
    """

    task: str
    target: str
    method: str = "tfg"
    samples: int | None = None
    final_samples: int | None = None
    final_top: int = 2
    top_k: int | None = None
    rounds: int | None = None
    n_recur: int | None = None
    n_iter: int | None = None
    n_mc: int | None = None
    eta: float = 1.0
    steps: int | None = None
    objective: tuple[str, ...] | None = None
    space: Mapping[str, Lattice] | None = None
    search_schedules: bool | tuple[str, ...] = False
    seed: int = 0
    seed_configs: tuple[Mapping[str, Any], ...] = ()
    seed_presets: bool | None = None
    search: str = DEFAULT_SEARCH
    steps_down: bool = False
    task_options: Mapping[str, str] | None = None
    trials: int | None = None
    wave: int | None = None
    guidance_scale: float | None = None
    dtype: str = "float32"
    transfer: bool | tuple[str, ...] = True

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise SettingError("method", f"must be one of {', '.join(METHODS)}, got {self.method!r}")
        _count("final_top", self.final_top)
        for name in ("top_k", "rounds"):
            if getattr(self, name) is not None:
                _count(name, getattr(self, name))
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise SettingError("seed", f"must be an integer >= 0, got {self.seed!r}")
        for name, minimum in (
            ("samples", 1),
            ("final_samples", 1),
            ("n_recur", 1),
            ("n_iter", 0),
            ("n_mc", 1),
            ("steps", 1),
        ):
            if getattr(self, name) is not None:
                _count(name, getattr(self, name), minimum)
        if not isinstance(self.eta, (int, float)) or isinstance(self.eta, bool) or not 0 <= self.eta <= 1:
            raise SettingError("eta", f"must be a number in [0, 1], got {self.eta!r}")
        if self.space is not None:
            names = set(self.space)
            allowed = {*TFG_PARAMS, CFG_PARAM} if self.method == "tfg" else {"strength", CFG_PARAM}
            if not names or not names <= allowed or (self.method != "tfg" and "strength" not in names):
                need = (
                    "gamma / mu / rho and / or guidance_scale"
                    if self.method == "tfg"
                    else "strength (and guidance_scale, optionally)"
                )
                got = ", ".join(sorted(names)) or "nothing"
                raise SettingError("space", f"for method {self.method!r} must name {need}, got {got}")
            if CFG_PARAM in names and self.guidance_scale is not None:
                raise SettingError(
                    "guidance_scale",
                    "is fixed by --guidance-scale and searched by --space guidance_scale=...; give one",
                )
        if self.guidance_scale is not None:
            scale = self.guidance_scale
            if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 <= scale < math.inf:
                raise SettingError("guidance_scale", f"must be a finite number >= 0, got {scale!r}")
        if self.dtype not in DTYPES:
            raise SettingError("dtype", f"must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.search_schedules and self.method != "tfg":
            raise SettingError("search_schedules", "applies to method 'tfg' only")
        if (self.seed_configs or self.seed_presets) and self.method != "tfg":
            raise SettingError("seed_configs", "(warm start from presets) applies to method 'tfg' only")
        if self.search not in SEARCHES:
            raise SettingError("search", f"must be one of {', '.join(SEARCHES)}, got {self.search!r}")
        for name in ("trials", "wave"):
            value = getattr(self, name)
            if value is not None:
                _count(name, value)
        beam_given = [name for name in ("top_k", "rounds") if getattr(self, name) is not None]
        if self.steps_down:
            beam_given.append("steps_down")
        if beam_given and self.search != "beam":
            raise SettingError(beam_given[0], f"applies to --search beam, not --search {self.search}")
        if self.trials is not None and self.search not in OPTUNA_SEARCHES:
            raise SettingError(
                "trials",
                f"applies to --search gp, tpe or random; --search {self.search} plans its own rounds",
            )
        if self.wave is not None and self.search == "beam":
            raise SettingError(
                "wave", "applies to --search rungs, gp, tpe or random; the beam plans its rounds"
            )
        if self.search in OPTUNA_SEARCHES and (self.seed_configs or self.seed_presets):
            raise SettingError("seed_presets", "(a warm start) applies to --search rungs or beam")

    def resolve(self, task: Any) -> ResolvedSettings:
        """Fill the defaults from ``task`` (its steps, sample counts, objective, lattices, CFG
        weight, the stored form of its options) and the method.

        Raises:
            SettingError: a CFG weight other than 1 (or a searched one) on a target without a
                condition.
        """
        task.parse_target(self.target)  # validates; the string form is what is stored
        objective = tuple(self.objective) if self.objective else tuple(task.objective)
        check_objective(task, objective)
        conditional = task.conditional(self.target)
        if self.space is not None:
            space = dict(self.space)
        elif self.method == "tfg":
            space = {k: v for k, v in task.default_space.items() if k in TFG_PARAMS}
        else:
            space = {"strength": task.default_strength_space}
        if self.space is None and self.guidance_scale is None and conditional:
            space[CFG_PARAM] = task.guidance_space()
        scale = float(task.guidance_scale if self.guidance_scale is None else self.guidance_scale)
        if not conditional and (CFG_PARAM in space or scale != 1):
            raise SettingError(
                "guidance_scale",
                f"{scale:g} needs a conditional model; task {self.task!r} has no condition for target "
                f"{self.target!r} (leave --guidance-scale and guidance_scale in --space out)",
            )
        given = dict(self.task_options or {})
        if self.dtype != "float32":  # the models' dtype is an option of every task (Task.set_dtype)
            if given.get("dtype", self.dtype) != self.dtype:
                raise SettingError("dtype", f"is {self.dtype} but the task option dtype={given['dtype']}")
            given["dtype"] = self.dtype
        schedules: bool | list[str]
        if isinstance(self.search_schedules, bool):
            schedules = self.search_schedules
        else:
            schedules = [str(n) for n in self.search_schedules]
            unknown = sorted(set(schedules) - set(space))
            if unknown:
                raise SettingError("search_schedules", f"names parameters outside the space: {unknown}")
        base = base_config(self.method, 0.0, self.n_recur, self.n_iter, self.n_mc, self.eta, task.clip_x0)
        return ResolvedSettings(
            task=self.task,
            target=self.target,
            method=self.method,
            samples=self.samples or int(task.search_samples),
            final_samples=self.final_samples or int(task.final_samples),
            final_top=self.final_top,
            top_k=self.top_k or DEFAULT_TOP_K,
            rounds=self.rounds or DEFAULT_ROUNDS,
            n_recur=base.n_recur,
            n_iter=base.n_iter,
            n_mc=base.n_mc,
            eta=base.eta,
            clip_x0=base.clip_x0,
            steps=self.steps or int(task.num_inference_steps),
            objective=objective,
            space={k: v.as_tuple() for k, v in space.items()},
            search_schedules=schedules,
            seed=self.seed,
            task_options=dict(task.stored_options(given)),
            seed_configs=[
                {CFG_PARAM: scale, **c} if CFG_PARAM in space else dict(c) for c in self.seed_configs
            ],
            seed_presets=self._presets(),
            search=self.search,
            steps_down=self.steps_down,
            trials=(self.trials or default_trials(self.wave)) if self.search in OPTUNA_SEARCHES else None,
            wave=None if self.search == "beam" else (self.wave or DEFAULT_WAVE),
            guidance_scale=scale,
            given_options=given,
        )

    def planned_rounds(self) -> int:
        """How many rounds (waves of trials) the search plans: the rung search's rounds, the
        beam's round limit, or an Optuna sampler's ``trials`` in waves of ``wave``.

        Example:
            >>> [SearchSettings("gmm2d", "3", **kw).planned_rounds() for kw in
            ...  ({}, {"search": "beam"}, {"search": "gp", "trials": 20})]
            [6, 6, 3]
        """
        if self.search in OPTUNA_SEARCHES:
            return -(-(self.trials or default_trials(self.wave)) // (self.wave or DEFAULT_WAVE))
        if self.search == "rungs":
            return rung_schedule(self.wave).rounds
        return self.rounds or DEFAULT_ROUNDS

    def _presets(self) -> bool:
        """Whether the earlier methods' configurations join the start: as set, else in the rung
        search of TFG's space (its spread start holds them)."""
        if self.seed_presets is not None:
            return self.seed_presets
        return self.search == "rungs" and self.method == "tfg"


def base_config(
    method: str,
    strength: float,
    n_recur: int | None,
    n_iter: int | None,
    n_mc: int | None,
    eta: float,
    clip_x0: bool,
) -> TFGConfig:
    """The method's configuration at ``strength`` with the fixed settings applied."""
    overrides: dict[str, Any] = {"eta": eta, "clip_x0": clip_x0}
    for name, value in (("n_recur", n_recur), ("n_iter", n_iter), ("n_mc", n_mc)):
        if value is not None:
            overrides[name] = value
    try:
        if method == "tfg":
            return TFGConfig(**overrides)
        return TFGConfig.preset(method, strength, **overrides)
    except ValueError as err:
        raise TFGSearchError(str(err)) from None


@dataclass(frozen=True)
class ResolvedSettings:
    """:class:`SearchSettings` with every default filled in; stored with the study."""

    task: str
    target: str
    method: str
    samples: int
    final_samples: int
    final_top: int
    top_k: int
    rounds: int
    n_recur: int
    n_iter: int
    n_mc: int
    eta: float
    clip_x0: bool
    steps: int
    objective: tuple[str, ...]
    space: dict[str, tuple[float, ...]]
    """Each lattice as :meth:`searchers.Lattice.as_tuple` (3 numbers; 4 with a leading 0)."""
    search_schedules: bool | list[str]
    seed: int
    task_options: dict[str, str]
    seed_configs: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    seed_presets: bool = False
    search: str = "beam"
    steps_down: bool = False
    trials: int | None = None
    wave: int | None = None
    guidance_scale: float = 1.0
    """The CFG weight when not searched; the warm start's points take it when it is."""
    given_options: dict[str, str] | None = dataclasses.field(default=None, compare=False, repr=False)
    """The task options as given (a relative path as typed), when they differ from the stored
    ones: not stored, but a study made under that spelling before paths were stored absolute is
    still found (:meth:`study_names`)."""

    _NEW_DEFAULTS: ClassVar[dict[str, Any]] = {
        "seed_configs": [],
        "seed_presets": False,
        "mode": "reference",
        "sampler": "beam",
        "trials": None,
        "wave": None,
        "guidance_scale": 1.0,
    }
    """Settings added after the first release, with the value a study without them had (in the
    spelling of :func:`legacy_spelling`: a study of tfg-search 0.1 searched with the paper's beam)."""
    _ADDED_IN_0_3: ClassVar[tuple[str, ...]] = ("sampler", "trials", "wave", "guidance_scale")
    """Settings added since tfg-search 0.2: left out of the identity at their defaults, so that
    studies made by 0.2 keep their names."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (tuples become lists), as stored in the study's user attrs."""
        data = dataclasses.asdict(self)
        data.pop("given_options")
        return json.loads(json.dumps(data))

    @classmethod
    def from_stored(cls, stored: Mapping[str, Any]) -> ResolvedSettings:
        """The settings a study stored (by any version: :func:`current_spelling`)."""
        data = current_spelling({**cls._NEW_DEFAULTS, **stored})
        data["objective"] = tuple(data["objective"])
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def canonical(self) -> dict[str, Any]:
        """The identity of these settings: :meth:`to_dict` in the spelling tfg-search 0.2 stored
        (:func:`legacy_spelling`: ``sampler`` and ``mode`` for ``search`` and ``steps_down``), so
        that the study names of 0.2 are the names of the same searches now."""
        data = self.to_dict()
        data.pop("search")
        data.pop("steps_down")
        return {**data, **legacy_spelling(self.search, self.steps_down)}

    def _identity(self) -> dict[str, Any]:
        data = self.canonical()
        for key in EXTENDABLE:
            data.pop(key)
        for key in self._ADDED_IN_0_3:
            if key not in EXTENDABLE and data.get(key) == self._NEW_DEFAULTS[key]:
                data.pop(key)
        return data

    @property
    def fingerprint(self) -> str:
        """8 hex digits that identify these settings (the extendable ones left out; in the
        canonical spelling, :meth:`canonical`)."""
        blob = json.dumps(self._identity(), sort_keys=True)
        return hashlib.sha1(blob.encode()).hexdigest()[:8]

    @property
    def legacy_fingerprint(self) -> str | None:
        """The fingerprint tfg-search 0.1 gave these settings (every field in), when it could
        have made such a study (no setting added since at another value than the old default)."""
        data = self.canonical()
        for key, default in self._NEW_DEFAULTS.items():
            if data.pop(key) != default:
                return None
        if any(len(v) != 3 for v in self.space.values()) or not isinstance(self.search_schedules, bool):
            return None
        blob = json.dumps(data, sort_keys=True)
        return hashlib.sha1(blob.encode()).hexdigest()[:8]

    @property
    def study_name(self) -> str:
        """The derived study name, e.g. ``digits-3-tfg-1a2b3c4d``."""
        return f"{self.task}-{self.target}-{self.method}-{self.fingerprint}"

    @property
    def legacy_study_name(self) -> str | None:
        """The name tfg-search 0.1 derived for these settings (to resume its studies)."""
        fp = self.legacy_fingerprint
        return None if fp is None else f"{self.task}-{self.target}-{self.method}-{fp}"

    def study_names(self) -> list[str]:
        """The names a study of these settings may have, the current one first: :attr:`study_name`,
        :attr:`legacy_study_name`, and both with the task options as given when they were stored
        so before (a relative model path, before tfg-search 0.3 stored it absolute).

        Example:
            >>> s = SearchSettings("gmm2d", "3").resolve(__import__("tasks").get_task("gmm2d"))
            >>> s.study_names()[0] == s.study_name
            True
        """
        spellings = [self]
        if self.given_options is not None and self.given_options != self.task_options:
            spellings.append(dataclasses.replace(self, task_options=dict(self.given_options)))
        names = [s.study_name for s in spellings]
        names += [n for n in (s.legacy_study_name for s in spellings) if n is not None]
        return list(dict.fromkeys(names))

    def rung_schedule(self) -> RungSchedule | None:
        """The budget of the rung search (None for the other searches)."""
        if self.search != "rungs":
            return None
        return rung_schedule(self.wave)

    def lattices(self) -> dict[str, Lattice]:
        """The searched space as lattices."""
        return {k: Lattice.from_tuple(v) for k, v in self.space.items()}

    def schedule_params(self) -> list[str]:
        """The parameters whose schedule structure is searched."""
        if isinstance(self.search_schedules, bool):
            return list(self.space) if self.search_schedules else []
        return list(self.search_schedules)

    def config(self, params: Mapping[str, Any]) -> TFGConfig:
        """The configuration of one candidate (its params as the sampler hands them out; the CFG
        weight is its ``guidance_scale`` when searched, else :attr:`guidance_scale`)."""
        scale = float(params.get(CFG_PARAM, self.guidance_scale))
        if self.method == "tfg":
            fields: dict[str, Any] = {k: float(params.get(k, 0.0)) for k in TFG_PARAMS}
            for k in TFG_PARAMS:
                if f"{k}_schedule" in params:
                    fields[f"{k}_schedule"] = params[f"{k}_schedule"]
            base = base_config("tfg", 0.0, self.n_recur, self.n_iter, self.n_mc, self.eta, self.clip_x0)
            return base.replace(**fields, guidance_scale=scale)
        return base_config(
            self.method,
            float(params["strength"]),
            self.n_recur,
            self.n_iter,
            self.n_mc,
            self.eta,
            self.clip_x0,
        ).replace(guidance_scale=scale)

    def differences(self, stored: Mapping[str, Any]) -> list[str]:
        """Human-readable differences between these settings and a study's stored ones.

        A setting the stored study predates counts as its old default (stored settings are read
        in this version's spelling, :func:`current_spelling`); the extendable settings differ only
        when they would shrink (a larger value continues the study).
        """
        mine = self.to_dict()
        stored = current_spelling({**self._NEW_DEFAULTS, **stored})
        if self.given_options is not None and stored.get("task_options") == self.given_options:
            mine["task_options"] = self.given_options  # a study of the options as given (before 0.3)
        out = []
        for k in sorted(set(mine) | set(stored)):
            a, b = stored.get(k), mine.get(k)
            if k in EXTENDABLE and isinstance(a, int) and isinstance(b, int):
                if b < a:
                    out.append(f"{k}: stored {a!r}, requested {b!r} (it can only grow)")
                continue
            if a != b:
                out.append(f"{k}: stored {a!r}, requested {b!r}")
        return out

    def extensions(self, stored: Mapping[str, Any]) -> dict[str, tuple[int, int]]:
        """The extendable settings these settings raise: ``{name: (stored, requested)}``."""
        mine = self.to_dict()
        return {
            k: (int(stored[k]), int(mine[k]))
            for k in EXTENDABLE
            if isinstance(stored.get(k), int) and mine[k] > stored[k]
        }

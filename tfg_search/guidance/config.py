"""``TFGConfig``: every hyper-parameter of one training-free-guidance run, validated on construction.

The four mechanisms of TFG (docs/algorithm.md, section 2) are switched and weighted by:

- ``rho`` / ``rho_schedule``: variance guidance (gradient through the denoiser w.r.t. x_t);
- ``mu`` / ``mu_schedule`` with ``n_iter``: mean guidance (gradient steps on the clean estimate x0);
- ``gamma`` / ``gamma_schedule`` with ``n_mc``: implicit dynamics (Gaussian smoothing of log f);
- ``n_recur``: recurrence (re-noise and repeat each step);

plus ``eta`` (DDIM stochasticity), ``clip_x0`` (clamp the Tweedie estimate to [-1, 1]) and
``guidance_scale`` (the classifier-free guidance weight of a conditional model; docs/algorithm.md,
section 7).

Example:
    >>> from tfg_search.guidance.config import TFGConfig
    >>> cfg = TFGConfig(rho=0.5, mu=2.0, gamma=0.01, n_iter=4)
    >>> TFGConfig.from_dict(cfg.to_dict()) == cfg
    True
    >>> TFGConfig.preset("mpgd", 4.0).mu
    4.0

The config as a diffusers-style file: :meth:`TFGConfig.save_pretrained` /
:meth:`TFGConfig.from_pretrained` (``tfg_config.json``, :mod:`tfg_search.guidance.config_file`).
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STRUCTURES: tuple[str, ...] = ("increase", "decrease", "constant")
"""Schedule structures of docs/algorithm.md, section 3, valid for rho, mu and gamma."""

METHODS: tuple[str, ...] = ("tfg", "dps", "lgd", "freedom", "mpgd", "ugd")
"""Method names: TFG itself and the earlier methods that are points of its design space."""
DTYPES: tuple[str, ...] = ("float32", "float16", "bfloat16")
"""The dtypes a model (denoiser, VAE) may run in (``--dtype``); the guidance arithmetic stays float32
(docs/algorithm.md, section 7)."""


def _check_strength(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return value


def _check_count(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


@dataclass(frozen=True)
class TFGConfig:
    """The guidance hyper-parameters of one run (see docs/algorithm.md, sections 2 and 3).

    All strengths 0 is plain DDIM(eta) sampling. Construction validates every field and raises a
    ``ValueError`` that names the field and its allowed range.

    Attributes:
        rho: variance-guidance strength (mean over the steps of rho_i), >= 0.
        mu: mean-guidance strength (mean over the steps of mu_i), >= 0.
        gamma: smoothing scale of the implicit dynamics (sigma_i = gamma * structure), >= 0.
        rho_schedule: structure of rho_i over the steps: "increase", "decrease" or "constant".
        mu_schedule: structure of mu_i over the steps.
        gamma_schedule: structure of sigma_i over the steps.
        n_recur: recurrence rounds per step, >= 1 (1 = no recurrence).
        n_iter: gradient steps of mean guidance per round, >= 0.
        n_mc: Monte-Carlo samples M of the smoothed log f, >= 1.
        eta: DDIM stochasticity in [0, 1] (0 = deterministic DDIM, 1 = DDPM-like).
        clip_x0: clamp the Tweedie estimate x0 to [-1, 1] (pixels: on; latents, molecules: off).
        guidance_scale: classifier-free guidance weight w >= 0 of a conditional denoiser
            (docs/algorithm.md, section 7): the model output is out_u + w (out_c - out_u); 1 runs
            the conditional branch alone (and is the only value for an unconditional model).
    """

    rho: float = 0.0
    mu: float = 0.0
    gamma: float = 0.0
    rho_schedule: str = "increase"
    mu_schedule: str = "increase"
    gamma_schedule: str = "decrease"
    n_recur: int = 1
    n_iter: int = 4
    n_mc: int = 1
    eta: float = 1.0
    clip_x0: bool = True
    guidance_scale: float = 1.0

    def __post_init__(self) -> None:
        for name in ("rho", "mu", "gamma"):
            object.__setattr__(self, name, _check_strength(name, getattr(self, name)))
        for name in ("rho_schedule", "mu_schedule", "gamma_schedule"):
            value = getattr(self, name)
            if value not in STRUCTURES:
                raise ValueError(f"{name} must be one of {', '.join(STRUCTURES)}, got {value!r}")
        _check_count("n_recur", self.n_recur, 1)
        _check_count("n_iter", self.n_iter, 0)
        _check_count("n_mc", self.n_mc, 1)
        eta = _check_strength("eta", self.eta)
        if eta > 1:
            raise ValueError(f"eta must be a number in [0, 1], got {self.eta!r}")
        object.__setattr__(self, "eta", eta)
        if not isinstance(self.clip_x0, bool):
            raise ValueError(f"clip_x0 must be true or false, got {self.clip_x0!r}")
        object.__setattr__(self, "guidance_scale", _check_strength("guidance_scale", self.guidance_scale))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field; ``TFGConfig.from_dict`` inverts it exactly."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TFGConfig:
        """Build a config from ``to_dict()`` output (missing fields take their defaults, so a dict
        stored before a field existed, e.g. ``guidance_scale``, reads as it ran).

        Raises:
            ValueError: for an unknown field or an invalid value.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"unknown TFGConfig field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        return cls(**data)

    def save_pretrained(
        self, save_directory: str | os.PathLike[str], *, overwrite: bool = False, **metadata: Any
    ) -> Path:
        """Write ``save_directory/tfg_config.json`` in diffusers' config format, torch-free.

        ``metadata`` (JSON values, e.g. ``task="shapes", target="cyan-triangle"``) is stored beside
        the fields (:mod:`tfg_search.guidance.config_file`). Saving the same config and metadata
        again is harmless; a different file already there is kept unless ``overwrite=True``.

        Returns:
            The path of the file.

        Raises:
            FileExistsError: a different ``tfg_config.json`` is there (pass ``overwrite=True``).
            ValueError: a metadata key that is a field name or starts with ``_``.
        """
        from tfg_search.guidance.config_file import save_config

        return save_config(self, save_directory, overwrite, **metadata)

    @classmethod
    def from_pretrained(
        cls, pretrained_path: str | os.PathLike[str], *, return_metadata: bool = False
    ) -> TFGConfig | tuple[TFGConfig, dict[str, Any]]:
        """Read a folder's ``tfg_config.json`` (or that file): the config, and with
        ``return_metadata`` also its metadata dict (as diffusers' ``return_unused_kwargs``).

        Raises:
            FileNotFoundError: no such file.
            ValueError: not a TFGConfig file, or an invalid field.
        """
        from tfg_search.guidance.config_file import load_config

        config, metadata = load_config(cls, pretrained_path)
        return (config, metadata) if return_metadata else config

    def replace(self, **changes: Any) -> TFGConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    @property
    def guided(self) -> bool:
        """Whether any guidance term is active (rho, or mu with n_iter > 0)."""
        return self.rho > 0 or (self.mu > 0 and self.n_iter > 0)

    @classmethod
    def preset(cls, name: str, strength: float, **overrides: Any) -> TFGConfig:
        """The point of the design space that an earlier method is (docs/algorithm.md, section 4).

        ``strength`` is the method's single searched strength. ``overrides`` change other fields
        (e.g. ``n_recur=4``), validated as usual. Where a preset only approximates its method:

        - ``dps``: original DPS divides its step by the per-sample residual norm ||y - A(x0)||. With
          log f = -||y - A(x)||_2 (unsquared, as the tasks define it) the gradient is exactly that
          normalised step, so DPS is exact for inverse problems; for label guidance DPS has no
          normalisation and neither does the preset. rho is constant over the steps (DPS's zeta).
        - ``lgd``: Monte-Carlo smoothing with gamma = 1 (decrease: sigma_i = sqrt(1 - abar_i), the
          posterior std of LGD's Gaussian) and n_mc = 4 samples.
        - ``freedom``: time travel is recurrence; the preset uses n_recur = 2 and an "increase"
          schedule for rho; FreeDoM's own per-step gradient normalisation is not reproduced.
        - ``mpgd``: one gradient step on x0 (n_iter = 1) with a constant mu; MPGD's manifold
          projection through an autoencoder does not apply to pixel-space models.
        - ``ugd``: forward (rho) and backward (mu) universal guidance with the same strength,
          n_recur = 2 self-recurrence and n_iter = 2 backward steps.
        - ``tfg``: rho = mu = strength with the reference default schedules and no smoothing (a
          single-strength slice of TFG; the full TFG search varies rho, mu and gamma separately).

        Example:
            >>> cfg = TFGConfig.preset("dps", 0.1)
            >>> (cfg.rho, cfg.mu, cfg.gamma, cfg.n_recur, cfg.n_iter, cfg.rho_schedule)
            (0.1, 0.0, 0.0, 1, 0, 'constant')
        """
        s = _check_strength("strength", strength)
        presets: dict[str, dict[str, Any]] = {
            "dps": dict(rho=s, rho_schedule="constant", n_iter=0),
            "lgd": dict(
                rho=s, rho_schedule="constant", gamma=1.0, gamma_schedule="decrease", n_mc=4, n_iter=0
            ),
            "freedom": dict(rho=s, rho_schedule="increase", n_recur=2, n_iter=0),
            "mpgd": dict(mu=s, mu_schedule="constant", n_iter=1),
            "ugd": dict(rho=s, mu=s, n_recur=2, n_iter=2),
            "tfg": dict(rho=s, mu=s),
        }
        key = name.lower()
        if key not in presets:
            raise ValueError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
        return cls(**{**presets[key], **overrides})


EVAL_METHODS: tuple[str, ...] = ("unguided", *METHODS)
"""Methods accepted by :func:`method_config`: ``unguided`` (all strengths 0) plus the presets."""

DRIVERS: dict[str, str] = {"dps": "rho", "lgd": "rho", "freedom": "rho", "mpgd": "mu", "ugd": "rho"}
"""The parameter through which each earlier method's single strength may also be given."""


def method_config(method: str, strength: float | None = None, **overrides: Any) -> TFGConfig:
    """The configuration of ``method`` at ``strength``, with field ``overrides`` (None = unset).

    ``tfg`` without a strength starts from all strengths 0 (set rho / mu / gamma by overrides);
    ``tfg`` with a strength sets rho = mu = strength. ``unguided`` is plain DDIM. The other methods
    are :meth:`TFGConfig.preset` points; their strength defaults to 0 and may also be given through
    the parameter it drives (:data:`DRIVERS`, e.g. ``rho`` for dps, ``mu`` for mpgd).

    Example:
        >>> method_config("mpgd", mu=0.5).mu, method_config("unguided").guided
        (0.5, False)

    Raises:
        ValueError: unknown method or an invalid value (the message names the field).
    """
    key = method.lower().strip()
    if key not in EVAL_METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(EVAL_METHODS)}")
    changes = {k: v for k, v in overrides.items() if v is not None}
    if key == "unguided":
        if strength is not None or any(changes.get(k) for k in ("rho", "mu", "gamma")):
            raise ValueError("method 'unguided' takes no strength (rho, mu, gamma)")
        return TFGConfig(**changes)
    if key == "tfg" and strength is None:
        return TFGConfig(**changes)
    if strength is None:
        strength = changes.pop(DRIVERS[key], 0.0)
        if key == "ugd":
            changes.pop("mu", None)
    return TFGConfig.preset(key, strength, **changes)


def search_point(config: TFGConfig) -> dict[str, float | str]:
    """The point of the TFG search space a configuration is: its strengths, schedules and CFG
    weight (``guidance_scale``, searched on a conditional task), with ``mu`` counted as 0 when
    ``n_iter`` is 0 (no mean-guidance step is taken).

    n_recur, n_iter, n_mc and eta are fixed during a search, so a preset whose own values differ
    (FreeDoM's n_recur 2, LGD's n_mc 4) maps to the same strengths at the search's fixed cost.

    Example:
        >>> point = search_point(TFGConfig.preset("dps", 0.5, guidance_scale=3.0))
        >>> point["rho"], point["mu"], point["rho_schedule"], point["guidance_scale"]
        (0.5, 0.0, 'constant', 3.0)
    """
    return {
        "rho": config.rho,
        "mu": config.mu if config.n_iter > 0 else 0.0,
        "gamma": config.gamma,
        "rho_schedule": config.rho_schedule,
        "mu_schedule": config.mu_schedule,
        "gamma_schedule": config.gamma_schedule,
        "guidance_scale": config.guidance_scale,
    }

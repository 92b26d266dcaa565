"""``custom``: bring your own diffusers model, guiding predictor and held-out evaluator.

Options (``--option KEY=VALUE`` on the CLI, keyword arguments in Python):

* ``model``: a local folder written by diffusers ``save_pretrained`` (or a hub id where the hub is
  reachable; nothing is downloaded otherwise). Either a pipeline folder with ``unet/`` and
  ``scheduler/`` subfolders, or a model folder (``config.json`` + weights) with a
  ``scheduler_config.json`` beside it. Any diffusers scheduler is converted to a ``DDIMScheduler``
  with the same noise schedule.
* ``predictor``: ``module:function`` with ``function(x, target) -> log f [B]`` (differentiable).
* ``evaluator``: ``module:function`` with ``function(x, target)`` returning either a tensor ``[B]``
  of per-sample success in [0, 1] (validity = its mean) or a dict of metrics including
  ``validity``. Use a predictor of a different family or training split from the guide.
* ``targets``: optional comma-separated list of valid targets (default: any non-empty string).
* ``metrics``: optional comma-separated names of the evaluator's metrics (default: validity).
* ``objective``: optional comma-separated default objective (default: validity).
* ``clip_x0``: ``true`` (pixels in [-1, 1], default) or ``false``.
* ``steps``: default number of DDIM steps (default 50).

Example:
    tfg-search evaluate --task custom --target 3 -o model=./my-unet \\
        -o predictor=my_pkg.guides:log_f -o evaluator=my_pkg.judges:success
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from tasks.base import LogF, Task, cached, frozen
from tasks.registry import load_object
from tfg_search.errors import TFGSearchError


def load_callable(spec: str, what: str) -> Callable[..., Any]:
    """Import ``module:function`` (:func:`tasks.registry.load_object`) and check it is callable."""
    obj = load_object(spec, what)
    if not callable(obj):
        raise TFGSearchError(f"{what} {spec!r} is not callable")
    return obj


def _read_config(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _locate(model: str) -> tuple[str, str | None, str, str | None]:
    """(model path, model subfolder, scheduler path, scheduler subfolder) of a diffusers folder."""
    root = Path(model).expanduser()
    hint = (
        "give a folder written by diffusers save_pretrained: a pipeline folder with unet/ and "
        "scheduler/, or a model folder with config.json and scheduler_config.json"
    )
    if not root.exists():
        if model.count("/") == 1 and not model.startswith((".", "/", "~")):
            return model, "unet", model, "scheduler"  # a hub id; from_pretrained decides
        raise TFGSearchError(f"custom model folder {model!r} does not exist; {hint}")
    if not root.is_dir():
        raise TFGSearchError(f"custom model {model!r} is not a folder; {hint}")
    if (root / "unet" / "config.json").is_file() and (root / "scheduler" / "scheduler_config.json").is_file():
        return str(root), "unet", str(root), "scheduler"
    if (root / "config.json").is_file() and (root / "scheduler_config.json").is_file():
        return str(root), None, str(root), None
    raise TFGSearchError(f"{model!r} is not a diffusers model folder; {hint}")


def _load_model(path: str, subfolder: str | None) -> torch.nn.Module:
    import diffusers

    cfg_path = Path(path) / (subfolder or "") / "config.json"
    cfg = _read_config(cfg_path) if cfg_path.exists() else None
    class_name = (cfg or {}).get("_class_name", "UNet2DModel")
    cls = getattr(diffusers, str(class_name), None)
    if cls is None or not hasattr(cls, "from_pretrained"):
        raise TFGSearchError(f"{cfg_path}: unknown diffusers model class {class_name!r}")
    try:
        return cls.from_pretrained(path, subfolder=subfolder)
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise TFGSearchError(f"cannot load the diffusers model from {path!r}: {first}") from err


def _load_scheduler(path: str, subfolder: str | None) -> Any:
    from diffusers import DDIMScheduler

    try:
        config = DDIMScheduler.load_config(path, subfolder=subfolder)
    except (OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise TFGSearchError(f"cannot load the scheduler from {path!r}: {first}") from err
    return DDIMScheduler.from_config(config)


def _split(text: str | None) -> tuple[str, ...]:
    return tuple(s.strip() for s in (text or "").split(",") if s.strip())


class CustomTask(Task):
    """A user's diffusers model with user-given guiding and evaluating functions."""

    name = "custom"
    description = "your diffusers model folder + predictor/evaluator given as module:function"
    targets_hint = "any string your predictor accepts (or the list given by -o targets=...)"

    def __init__(
        self,
        model: str | None = None,
        predictor: str | None = None,
        evaluator: str | None = None,
        targets: str | None = None,
        metrics: str | None = None,
        objective: str | None = None,
        clip_x0: str | bool = True,
        steps: str | int = 50,
    ) -> None:
        missing = [
            k for k, v in (("model", model), ("predictor", predictor), ("evaluator", evaluator)) if not v
        ]
        if missing:
            raise TFGSearchError(
                "task 'custom' needs options "
                + ", ".join(f"{k}=..." for k in missing)
                + " (e.g. -o model=DIR -o predictor=module:function -o evaluator=module:function)"
            )
        assert model is not None and predictor is not None and evaluator is not None
        self.model_spec = model
        self._where = _locate(model)
        self._predictor = load_callable(predictor, "predictor")
        self._evaluator = load_callable(evaluator, "evaluator")
        self._targets = _split(targets)
        names = _split(metrics) or ("validity",)
        self.metrics = names if "validity" in names else ("validity", *names)
        self.objective = _split(objective) or ("validity",)
        unknown = [m for m in self.objective if m.lstrip("_") not in self.metrics]
        if unknown:
            raise TFGSearchError(f"custom objective names unknown metric(s): {', '.join(unknown)}")
        if isinstance(clip_x0, str):
            if clip_x0.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise TFGSearchError(f"clip_x0 must be true or false, got {clip_x0!r}")
            clip_x0 = clip_x0.lower() in ("true", "1", "yes")
        self.clip_x0 = bool(clip_x0)
        try:
            self.num_inference_steps = int(steps)
        except ValueError:
            raise TFGSearchError(f"steps must be an integer, got {steps!r}") from None
        model_obj, _ = self.diffusion("cpu")  # fails early on a folder that is not a model
        self.sample_shape = _sample_shape(model_obj)

    @property
    def targets(self) -> tuple[str, ...]:
        return self._targets

    @property
    def targets_help(self) -> str:
        return ", ".join(self._targets) if self._targets else self.targets_hint

    def parse_target(self, target: str) -> str:
        text = str(target).strip()
        if not text:
            raise TFGSearchError("the target must be a non-empty string")
        if self._targets and text not in self._targets:
            raise TFGSearchError(f"unknown target {target!r}; valid targets: {self.targets_help}")
        return text

    def diffusion(self, device: torch.device | str | None = None) -> tuple[Any, Any]:
        dev = str(torch.device(device or "cpu"))
        mpath, msub, spath, ssub = self._where
        model = cached(("custom", mpath, msub, dev), lambda: frozen(_load_model(mpath, msub), dev))
        return model, _load_scheduler(spath, ssub)

    def log_f(self, target: str, device: torch.device | str | None = None) -> LogF:
        text = self.parse_target(target)
        predictor = self._predictor

        def log_f(x: torch.Tensor) -> torch.Tensor:
            return predictor(x, text)

        return log_f

    def compute_metrics(self, samples: torch.Tensor, target: str) -> dict[str, float]:
        text = self.parse_target(target)
        out = self._evaluator(samples, text)
        if isinstance(out, dict):
            metrics = {k: float(v) for k, v in out.items()}
        else:
            metrics = {"validity": float(torch.as_tensor(out, dtype=torch.float64).mean())}
        if "validity" not in metrics:
            raise TFGSearchError("the custom evaluator must return 'validity' (or a tensor [B])")
        return metrics


def _sample_shape(model: Any) -> tuple[int, ...]:
    """Shape of one sample from a diffusers model config (channels, size[, size])."""
    cfg = model.config
    channels = cfg.get("in_channels") or 1
    size = cfg.get("sample_size")
    if size is None:
        raise TFGSearchError("the custom model's config has no sample_size; cannot infer its shape")
    if isinstance(size, (list, tuple)):
        return (int(channels), *map(int, size))
    if type(model).__name__ == "UNet1DModel":
        return (int(channels), int(size))
    return (int(channels), int(size), int(size))

"""``custom``: bring your own diffusers model or pipeline, guiding predictor and held-out evaluator.

Options (``--option KEY=VALUE`` on the CLI, keyword arguments in Python):

* ``model``: a local folder written by diffusers ``save_pretrained`` (:mod:`tasks.custom_loading`):
  a pipeline folder with ``unet/`` and ``scheduler/``, optionally ``vae/`` (a latent model: the
  chain runs on latents, the predictor and evaluator see decoded images) and ``text_encoder/`` +
  ``tokenizer/`` (a text-conditional model), or a model folder (``config.json`` + weights) with a
  ``scheduler_config.json`` beside it. Any diffusers scheduler is converted to a ``DDIMScheduler``
  with the same noise schedule. Weights load from safetensors only. The path is resolved to an
  absolute one (workers started in another folder find it).
* ``predictor``: ``module:function`` with ``function(x, target) -> log f [B]`` (differentiable).
* ``evaluator``: ``module:function`` with ``function(x, target)`` returning either a tensor ``[B]``
  of per-sample success in [0, 1] (validity = its mean) or a dict of metrics including
  ``validity``. Use a predictor of a different family or training split from the guide.
  A module that is not importable otherwise is looked up in the current folder
  (:func:`tasks.registry.load_object`).
* ``prompt``, ``negative_prompt``: the text condition of a pipeline with a text encoder (the
  negative prompt, default empty, conditions the unconditional branch of classifier-free guidance).
* ``class_label``, ``null_class``: the class condition of a denoiser with ``num_class_embeds``
  (``null_class``, default the last class id, conditions the unconditional branch).
* ``guidance_scale``: the task's default classifier-free guidance weight (default 1: no
  unconditional branch); it needs a condition.
* ``checkpointing``: ``true`` recomputes the VAE decoder in the backward pass of guidance (less
  memory, same values); default ``false``.
* ``targets``: optional comma-separated list of valid targets (default: any non-empty string).
* ``metrics``: optional comma-separated names of the evaluator's metrics (default: validity).
* ``objective``: optional comma-separated default objective (default: validity).
* ``clip_x0``: ``true`` (pixels in [-1, 1], the default of a pixel model) or ``false`` (always for
  a latent model).
* ``steps``: default number of DDIM steps (default 50).

The prompt or class label is the condition; the target is what the predictor guides toward.

Example:
    tfg-search evaluate --task custom --target cat -o model=./my-pipeline -o prompt="a photo" \\
        -o guidance_scale=5 -o predictor=my_guides:log_f -o evaluator=my_judges:success
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from tasks.base import LogF, Task, cached, frozen
from tasks.custom_loading import (
    DENOISER_CLASSES,
    ModelFolder,
    class_name,
    encode_prompts,
    load_component,
    load_scheduler,
    locate_folder,
)
from tasks.model_errors import guard
from tasks.registry import load_object
from tfg_search.errors import TFGSearchError, UserCodeError

if TYPE_CHECKING:
    from tfg_search.guidance import Conditioning, LatentDecoder


@dataclass(frozen=True)
class UserFunction:
    """A user's ``module:function``: calls it and re-raises its exceptions as :class:`UserCodeError`."""

    role: str
    spec: str
    function: Callable[..., Any]

    def __call__(self, *args: Any) -> Any:
        try:
            return self.function(*args)
        except Exception as err:
            raise UserCodeError(self.role, self.spec, err) from err


def load_callable(spec: str, what: str) -> Callable[..., Any]:
    """Import ``module:function`` (:func:`tasks.registry.load_object`) and check it is callable."""
    obj = load_object(spec, what)
    if not callable(obj):
        raise TFGSearchError(f"{what} {spec!r} is not callable")
    return obj


def user_function(role: str, given: str | Callable[..., Any]) -> UserFunction:
    """The predictor or evaluator: a ``module:function`` spec (the CLI's ``-o``), or, from Python, the
    function itself (named by its qualified name in errors).

    Example:
        >>> user_function("predictor", lambda x, target: x.sum(1)).spec
        '<lambda>'
    """
    if callable(given):
        return UserFunction(role, getattr(given, "__qualname__", type(given).__name__), given)
    return UserFunction(role, given, load_callable(given, role))


def _split(text: str | None) -> tuple[str, ...]:
    return tuple(s.strip() for s in (text or "").split(",") if s.strip())


def _flag(value: str | bool | None, name: str, default: bool) -> bool:
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text not in ("true", "false", "1", "0", "yes", "no"):
        raise TFGSearchError(f"{name} must be true or false, got {value!r}")
    return text in ("true", "1", "yes")


def _number(value: str | float, name: str, kind: type, low: float) -> Any:
    try:
        number = kind(value)
    except (TypeError, ValueError):
        number = None
    if number is None or not math.isfinite(number) or number < low or isinstance(value, bool):
        what = "an integer" if kind is int else "a number"
        raise TFGSearchError(f"{name} must be {what} >= {low:g}, got {value!r}")
    return number


class CustomTask(Task):
    """A user's diffusers model or pipeline with user-given guiding and evaluating functions."""

    name = "custom"
    description = "your diffusers model or pipeline folder + predictor/evaluator given as module:function"
    targets_hint = "any string your predictor accepts (or the list given by -o targets=...)"

    def __init__(
        self,
        model: str | None = None,
        predictor: str | Callable[..., Any] | None = None,
        evaluator: str | Callable[..., Any] | None = None,
        targets: str | None = None,
        metrics: str | None = None,
        objective: str | None = None,
        clip_x0: str | bool | None = None,
        steps: str | int = 50,
        prompt: str | None = None,
        negative_prompt: str | None = None,
        class_label: str | int | None = None,
        null_class: str | int | None = None,
        guidance_scale: str | float = 1.0,
        checkpointing: str | bool = False,
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
        self.folder: ModelFolder = locate_folder(model)
        self._predictor = user_function("predictor", predictor)
        self._evaluator = user_function("evaluator", evaluator)
        self._targets = _split(targets)
        names = _split(metrics) or ("validity",)
        self.metrics = names if "validity" in names else ("validity", *names)
        self.objective = _split(objective) or ("validity",)
        unknown = [m for m in self.objective if m.lstrip("_") not in self.metrics]
        if unknown:
            raise TFGSearchError(f"custom objective names unknown metric(s): {', '.join(unknown)}")
        self.clip_x0 = _flag(clip_x0, "clip_x0", not self.folder.latent)
        if self.clip_x0 and self.folder.latent:
            raise TFGSearchError("clip_x0=true clamps pixels; a pipeline with vae/ samples latents, drop it")
        self.checkpointing = _flag(checkpointing, "checkpointing", False)
        self.num_inference_steps = _number(steps, "steps", int, 1)
        self.guidance_scale = float(_number(guidance_scale, "guidance_scale", float, 0))
        self.prompt, self.negative_prompt = self._text_condition(prompt, negative_prompt)
        self.class_label, self.null_class = self._class_condition(class_label, null_class)
        if self.guidance_scale != 1 and self.prompt is None and self.class_label is None:
            raise TFGSearchError(
                f"guidance_scale={self.guidance_scale:g} needs a conditional model "
                "(prompt=... or class_label=...)"
            )
        self.sample_shape = _sample_shape(self.folder)
        self._image_shape = _image_shape(self.folder, self.sample_shape)

    # -- conditions --------------------------------------------------------------------------
    def _text_condition(self, prompt: str | None, negative: str | None) -> tuple[str | None, str]:
        unet = self.folder.configs["unet"]
        if not self.folder.text:
            if prompt is not None or negative is not None:
                raise TFGSearchError(
                    f"prompt/negative_prompt need a pipeline with text_encoder/ and tokenizer/; "
                    f"{self.folder.root} has none"
                )
            if class_name(self.folder, "unet") == "UNet2DConditionModel":
                raise TFGSearchError(
                    f"{self.folder.root}: a UNet2DConditionModel needs text_encoder/ and tokenizer/ beside "
                    "unet/ (a pipeline folder written by save_pretrained)"
                )
            return None, ""
        if prompt is None:
            raise TFGSearchError("this pipeline is text-conditional: give the condition as -o prompt=TEXT")
        for key in ("addition_embed_type", "encoder_hid_dim_type"):
            if unet.get(key):
                raise TFGSearchError(
                    f"the unet's {key}={unet[key]!r} needs inputs beyond a prompt embedding (e.g. SDXL); "
                    "the custom task guides UNet2DConditionModel with encoder_hidden_states only"
                )
        width = self.folder.configs["text_encoder"].get("hidden_size")
        cross = unet.get("cross_attention_dim")
        if isinstance(cross, int) and width is not None and width != cross:
            raise TFGSearchError(
                f"the text encoder's hidden_size {width} differs from the unet's cross_attention_dim "
                f"{cross}; the folder's components do not belong together"
            )
        return str(prompt), str(negative or "")

    def _class_condition(
        self, label: str | int | None, null: str | int | None
    ) -> tuple[int | None, int | None]:
        classes = self.folder.configs["unet"].get("num_class_embeds")
        if classes is None:
            if label is not None or null is not None:
                raise TFGSearchError(
                    "class_label/null_class need a unet with num_class_embeds; this one has none"
                )
            return None, None
        if label is None:
            raise TFGSearchError(
                f"this unet is class-conditional ({classes} classes): give the condition as -o class_label=ID"
            )
        ids = []
        for name, value in (("class_label", label), ("null_class", classes - 1 if null is None else null)):
            number = _number(value, name, int, 0)
            if number >= classes:
                raise TFGSearchError(f"{name} must be a class id in 0..{classes - 1}, got {value!r}")
            ids.append(number)
        return ids[0], ids[1]

    def conditioning(self, target: str, device: torch.device | str | None = None) -> Conditioning | None:
        """The condition of both branches of classifier-free guidance (None: an unconditional model).

        The prompt embeddings are computed once per process and device (:func:`tasks.base.cached`).
        """
        from tfg_search.guidance import Conditioning

        if self.prompt is None and self.class_label is None:
            return None
        dev = torch.device(device or "cpu")
        cond: dict[str, torch.Tensor] = {}
        uncond: dict[str, torch.Tensor] = {}
        if self.prompt is not None:
            key = ("custom-prompt", str(self.folder.root), self.prompt, self.negative_prompt, str(dev))
            emb, neg = cached(
                key, lambda: encode_prompts(self.folder, self.prompt, self.negative_prompt, dev)
            )
            cond["encoder_hidden_states"], uncond["encoder_hidden_states"] = emb, neg
        if self.class_label is not None:
            cond["class_labels"] = torch.tensor([self.class_label], device=dev)
            uncond["class_labels"] = torch.tensor([self.null_class], device=dev)
        return Conditioning(cond, uncond)

    # -- targets -----------------------------------------------------------------------------
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

    # -- models ------------------------------------------------------------------------------
    @property
    def image_shape(self) -> tuple[int, ...]:
        """Shape of one image the evaluator sees (the decoded shape of a latent model)."""
        return self._image_shape

    def diffusion(self, device: torch.device | str | None = None) -> tuple[Any, Any]:
        dev = str(torch.device(device or "cpu"))
        key = ("custom", str(self.folder.root), "unet", dev)
        spec = f"unet of {self.folder.root}"  # raising when called: the user's model (tasks/model_errors.py)
        model = cached(key, lambda: frozen(guard(load_component(self.folder, "unet"), spec), dev))
        return model, load_scheduler(self.folder)

    def decoder(self, device: torch.device | str | None = None) -> LatentDecoder | None:
        """The VAE decoder of a latent pipeline (None for a pixel model)."""
        if not self.folder.latent:
            return None
        from tfg_search.guidance import LatentDecoder

        dev = str(torch.device(device or "cpu"))
        key = ("custom", str(self.folder.root), "vae", dev)
        spec = f"vae of {self.folder.root}"
        vae = cached(
            key, lambda: frozen(guard(load_component(self.folder, "vae"), spec, ("forward", "decode")), dev)
        )
        return LatentDecoder(vae, checkpointing=self.checkpointing)

    def model_folder(self) -> Path:
        """The model folder, absolute (its identity: :mod:`tasks.custom_identity`)."""
        return self.folder.root

    def stored_options(self, options: Mapping[str, str]) -> dict[str, str]:
        """The options with ``model`` as the absolute, resolved folder (``./x``, ``x/../x`` and
        ``/abs/x`` are one study, and workers started in another folder find it)."""
        return {**options, "model": str(self.folder.root)} if "model" in options else dict(options)

    def conditional(self, target: str) -> bool:
        """Whether a condition is given (``prompt`` or ``class_label``); cheap: nothing is loaded."""
        return self.prompt is not None or self.class_label is not None

    def log_f(self, target: str, device: torch.device | str | None = None) -> LogF:
        """The predictor on images; on a latent model, composed with the VAE decoder."""
        text = self.parse_target(target)
        predictor = self._predictor

        def log_f(x: torch.Tensor) -> torch.Tensor:
            out = predictor(x, text)
            if not isinstance(out, torch.Tensor) or tuple(out.shape) != (x.shape[0],):
                got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                raise TFGSearchError(
                    f"predictor {predictor.spec} returned {got}; it must return log f as a tensor of "
                    f"shape [B] = [{x.shape[0]}]"
                )
            return out

        decoder = self.decoder(device)
        return log_f if decoder is None else decoder.log_f(log_f)

    def compute_metrics(self, samples: torch.Tensor, target: str) -> dict[str, float]:
        """The evaluator on images (decoded images of a latent model, clamped to [-1, 1])."""
        text = self.parse_target(target)
        images = samples.clamp(-1, 1) if self.folder.latent else samples
        out = self._evaluator(images, text)
        if isinstance(out, dict):
            metrics = {k: float(v) for k, v in out.items()}
        else:
            metrics = {"validity": float(torch.as_tensor(out, dtype=torch.float64).mean())}
        if "validity" not in metrics:
            raise TFGSearchError(
                f"evaluator {self._evaluator.spec} must return 'validity' in its dict (or a tensor [B])"
            )
        return metrics

    def describe(self) -> dict[str, Any]:
        condition = (
            f"prompt {self.prompt!r}, negative {self.negative_prompt!r}"
            if self.prompt is not None
            else (
                f"class {self.class_label}, null class {self.null_class}"
                if self.class_label is not None
                else None
            )
        )
        return {
            **super().describe(),
            "model": str(self.folder.root),
            "image_shape": list(self.image_shape),
            "condition": condition,
            "guidance_scale": self.guidance_scale,
        }


def _sample_shape(folder: ModelFolder) -> tuple[int, ...]:
    """Shape of one sample from the denoiser's config (channels, size[, size]): latents with a VAE."""
    cfg = folder.configs["unet"]
    cls = class_name(folder, "unet")
    if cls not in DENOISER_CLASSES:
        raise TFGSearchError(
            f"{folder.parts['unet']}: the denoiser is a {cls}; the custom task guides "
            + ", ".join(DENOISER_CLASSES)
        )
    channels = int(cfg.get("in_channels") or 1)
    if int(cfg.get("out_channels") or channels) != channels:
        raise TFGSearchError(
            f"{folder.parts['unet']}: out_channels {cfg.get('out_channels')} != in_channels {channels} "
            "(a learned-variance output); the sampler needs the noise (or v) prediction alone"
        )
    size = cfg.get("sample_size")
    if size is None:
        raise TFGSearchError("the custom model's config has no sample_size; cannot infer its shape")
    if isinstance(size, (list, tuple)):
        return (channels, *map(int, size))
    if cls == "UNet1DModel":
        return (channels, int(size))
    return (channels, int(size), int(size))


def _image_shape(folder: ModelFolder, sample_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The decoded image shape of a latent model (diffusers' ``vae_scale_factor``); else the sample's."""
    if not folder.latent:
        return sample_shape
    vae = folder.configs["vae"]
    if int(vae.get("latent_channels", 4)) != sample_shape[0]:
        raise TFGSearchError(
            f"the vae's latent_channels {vae.get('latent_channels')} differ from the unet's in_channels "
            f"{sample_shape[0]}; the folder's components do not belong together"
        )
    factor = 2 ** (len(vae.get("block_out_channels", (0,))) - 1)
    return (int(vae.get("out_channels", 3)), *(s * factor for s in sample_shape[1:]))

"""The task interface: what is guided (model + scheduler, guiding log f) and how it is judged.

A :class:`Task` bundles

* the diffusion model and its DDIM scheduler (:meth:`Task.diffusion`, loaded once per process and
  cached per device); a conditional model's condition for a target (:meth:`Task.conditioning`,
  with classifier-free guidance when the config's ``guidance_scale`` != 1) and a latent model's
  VAE decoder (:meth:`Task.decoder`; docs/algorithm.md, section 7);
* the guiding log-likelihood for a target (:meth:`Task.log_f`), a differentiable map from a batch of
  clean samples ``[B, *sample_shape]`` to ``[B]``;
* a held-out judge of a different model family or training split and the metrics it produces
  (:meth:`Task.compute_metrics`), always including ``validity`` in [0, 1];
* real reference data for fidelity (:meth:`Task.reference`);
* search defaults: the ``objective`` (metric names; a leading ``_`` means lower is better), the
  lattices ``default_space`` {param: :class:`searchers.Lattice`} for rho, mu and gamma, and
  ``default_strength_space`` (a :class:`searchers.Lattice`) for single-strength baselines.

Tasks are found by name through :mod:`tasks.registry` (entry-point group ``tfg_search.tasks``).

Example:
    >>> from tasks import get_task
    >>> task = get_task("gmm2d")
    >>> task.parse_target("3")
    3
    >>> "validity" in task.metrics
    True
"""

from __future__ import annotations

import copy
import functools
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch

from searchers.lattice import DEFAULT_SPACE, Lattice
from tfg_search.errors import TFGSearchError
from tfg_search.guidance.conditioning import Conditioning, model_dtype
from tfg_search.guidance.config import DTYPES, TFGConfig
from tfg_search.guidance.latent import LatentDecoder

LogF = Callable[[torch.Tensor], torch.Tensor]


def exp_fidelity(distance: float, scale: float) -> float:
    """Map a distance (>= 0, lower is better) to a fidelity in (0, 1]: ``exp(-distance / scale)``.

    ``scale`` is the task's reference distance (that of the unguided ideal sampler), so an exact
    unconditional sampler scores about exp(-1) = 0.37, an exact conditional sampler about 1.
    """
    if not torch.isfinite(torch.tensor(distance)):
        return 0.0
    return float(torch.exp(torch.tensor(-max(distance, 0.0) / scale)))


class Task(ABC):
    """Base class of every task (bundled or third-party).

    Class attributes (override in subclasses):
        name: registry name.
        description: one line for ``tfg-search tasks``.
        sample_shape: shape of one sample of the chain (without the batch dimension): a latent's
            for a latent model.
        image_shape: shape of one image the metrics judge (:attr:`sample_shape` unless latent).
        num_inference_steps: default number of DDIM steps.
        clip_x0: whether the Tweedie estimate is clamped to [-1, 1] (pixel data).
        metrics: names of the metrics :meth:`compute_metrics` returns (``validity`` first).
        objective: default search objective (metric names, ``_`` prefix = lower is better).
        default_space: lattices {"rho"|"mu"|"gamma": Lattice} of the TFG search (default: the
            reference space of docs/algorithm.md, section 5, ``searchers.DEFAULT_SPACE``).
        default_strength_space: the lattice of a single-strength baseline.
        search_samples, final_samples: default sample counts of a search and its final re-runs.
        guidance_scale: the classifier-free guidance weight of a conditional model when it is not
            searched, and of the warm start's points when it is (1: no CFG).
        default_guidance_space: the lattice of ``guidance_scale`` that a search of a conditional
            task varies (None: :meth:`guidance_space` derives one from :attr:`guidance_scale`).
        dtype: the dtype the models run in (:meth:`set_dtype`; every task takes the option
            ``dtype``).
        trainer, trained_by: how ``tfg-search train`` finds the task's training function.

    :meth:`diffusion` and :meth:`decoder` of every subclass return their models in the task's
    :attr:`dtype`: the base class casts what they load (a copy per dtype, cached like the models).
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    sample_shape: tuple[int, ...] = ()
    num_inference_steps: int = 50
    clip_x0: bool = True
    metrics: tuple[str, ...] = ("validity",)
    objective: tuple[str, ...] = ("validity",)
    default_space: Mapping[str, Lattice] = DEFAULT_SPACE
    default_strength_space: Lattice = Lattice(0.25, 2.0, 8.0)
    search_samples: int = 64
    """Default samples per search evaluation (``tfg-search search --samples``)."""
    final_samples: int = 512
    """Default samples per final re-run (``--final-samples``)."""
    trainer: ClassVar[str | None] = None
    """``module:function`` that trains the task's bundled models (``tfg-search train NAME``); it takes
    ``out``, ``seed``, ``progress`` and optionally ``steps`` / ``epochs``, and returns metadata."""
    trained_by: ClassVar[str | None] = None
    """The task whose ``tfg-search train`` writes this task's models, when it reuses another's."""
    guidance_scale: float = 1.0
    default_guidance_space: Lattice | None = None
    dtype: str = "float32"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in ("diffusion", "decoder"):
            method = cls.__dict__.get(name)
            if method is not None and not getattr(method, "casts_dtype", False):
                setattr(cls, name, _in_task_dtype(name, method))

    def set_dtype(self, dtype: str) -> Task:
        """Run the models in ``dtype`` (:data:`tfg_search.guidance.config.DTYPES`; the guidance
        arithmetic stays float32: the sampler casts to and from the model's dtype). Returns the task.

        Raises:
            TFGSearchError: an unknown dtype.
        """
        if dtype not in DTYPES:
            raise TFGSearchError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        self.dtype = dtype
        return self

    # -- targets -----------------------------------------------------------------------------
    @property
    @abstractmethod
    def targets(self) -> Sequence[str]:
        """Every valid target string (for big ranges: a representative, ordered list)."""

    @property
    def targets_help(self) -> str:
        """How targets are written, for ``tfg-search tasks`` (default: the list itself)."""
        return ", ".join(self.targets)

    def parse_target(self, target: str) -> Any:
        """Parse and validate a target string; return the task's own representation.

        Raises:
            TFGSearchError: unknown or out-of-range target (the message lists the valid ones).
        """
        target = str(target).strip()
        if target not in self.targets:
            raise TFGSearchError(
                f"unknown target {target!r} for task {self.name!r}; valid targets: {self.targets_help}"
            )
        return target

    # -- models ------------------------------------------------------------------------------
    @abstractmethod
    def diffusion(self, device: torch.device | str | None = None) -> tuple[Any, Any]:
        """(model, scheduler): the eps model on ``device`` (default CPU) and a DDIM scheduler.

        Models are loaded once per process and cached per device; the scheduler is a fresh
        ``DDIMScheduler`` (it holds per-run state).
        """

    @abstractmethod
    def log_f(self, target: str, device: torch.device | str | None = None) -> LogF:
        """The guiding log-likelihood for ``target``: samples ``[B, *sample_shape]`` -> ``[B]``.

        For a latent task it takes latents and composes the decoder itself
        (``self.decoder(device).log_f(pixel_log_f)``)."""

    def conditional(self, target: str) -> bool:
        """Whether the model is conditioned for ``target`` (:meth:`conditioning` is not None); a
        search of a conditional task searches :attr:`guidance_scale` too."""
        return self.conditioning(target, "cpu") is not None

    def guidance_space(self) -> Lattice:
        """The ``guidance_scale`` lattice a search of a conditional task varies:
        :attr:`default_guidance_space`, else one around :attr:`guidance_scale` w (w / 4 to 2 w in
        doublings; 1 to 8 when w <= 1).

        Example:
            >>> from tasks.gmm2d import Gmm2dTask
            >>> Gmm2dTask().guidance_space().values()
            (1.0, 2.0, 4.0, 8.0)
        """
        if self.default_guidance_space is not None:
            return self.default_guidance_space
        w = float(self.guidance_scale)
        return Lattice(w / 4, 2.0, 2 * w) if w > 1 else Lattice(1.0, 2.0, 8.0)

    def stored_options(self, options: Mapping[str, str]) -> dict[str, str]:
        """The task options as a study stores them (and hashes into its name): ``options`` with
        paths made absolute, so that the same model reached from another folder, or spelled
        another way, is the same study and workers started elsewhere find it. Default: as given."""
        return dict(options)

    def conditioning(self, target: str, device: torch.device | str | None = None) -> Conditioning | None:
        """The conditional denoiser's keyword arguments for ``target`` (e.g. a class label, a
        prompt's embedding), with the unconditional branch for classifier-free guidance; None for an
        unconditional model (the default)."""
        return None

    def decoder(self, device: torch.device | str | None = None) -> LatentDecoder | None:
        """A latent model's VAE decoder on ``device`` (cache it as the models are); None for a pixel
        model (the default). When given, the chain runs on latents (:attr:`sample_shape`),
        :meth:`log_f` takes latents, and the evaluation decodes samples before
        :meth:`compute_metrics`, which always receives images (:attr:`image_shape`)."""
        return None

    @property
    def image_shape(self) -> tuple[int, ...]:
        """Shape of one image :meth:`compute_metrics` receives: :attr:`sample_shape` for a pixel
        task; a latent task sets it (e.g. ``(3, 32, 32)`` for ``(4, 8, 8)`` latents)."""
        return self.sample_shape

    def batch_bytes(self, n_samples: int, config: TFGConfig, steps: int, target: str | None = None) -> int:
        """Estimated peak memory (bytes) of one guided batch of ``n_samples`` samples of ``config``,
        for refusing absurd sizes before a run (:mod:`tfg_search.guidance.memory`: the denoiser's
        graph of one sample, both CFG branches, log f's graph with the decoder's, the sampler's
        tensors, measured once by a probe on the CPU models and ``target`` (the run's; default the
        task's first target), plus the weights). Each step frees the last one's graph, so ``steps``
        does not change the peak.

        Raises:
            TFGSearchError: no ``target`` given and the task lists none (e.g. ``custom`` without
                ``targets=``).
        """
        from tfg_search.guidance.memory import estimate

        key = (config.guidance_scale != 1, config.n_mc)
        probes = self.__dict__.setdefault("_batch_memory", {})
        if key not in probes and self.dtype == "float16":  # no float16 on a CPU: probe in float32
            float32 = copy.copy(self).set_dtype("float32")  # a shallow copy: it fills the same probes
            float32.batch_bytes(n_samples, config, steps, target)
        if key not in probes:
            if target is None:
                if not self.targets:
                    raise TFGSearchError(
                        f"task {self.name!r} lists no targets: pass the run's target to batch_bytes"
                    )
                target = self.targets[0]
            model, _ = self.diffusion("cpu")
            probes[key] = estimate(
                model,
                self.log_f(target, "cpu"),
                config,
                tuple(self.sample_shape),
                conditioning=self.conditioning(target, "cpu"),
                decoder=self.decoder("cpu"),
            )
        return probes[key].of(config).bytes(n_samples)

    def model_folder(self) -> Path | None:
        """The diffusers folder the model is loaded from (``unet/`` + ``scheduler/``, ``vae/`` of
        a latent model, ``text_encoder/`` + ``tokenizer/``; or a model folder), which
        :meth:`model_identity` hashes; None for a model without one (built in Python, or stored
        in a task's own format). Default: None."""
        return None

    def model_identity(self) -> str:
        """The model's identity, a sha256 (hex) recorded in each study (the transfer of answers
        between studies matches on it): for a model with a :meth:`model_folder`, the hash of its
        components' canonical configs and weight files (:func:`tfg_search.pipelines.identity.
        folder_identity`: the same for a copy of the folder, another spelling of its path, or
        another task loading it); otherwise the hash of the loaded denoiser, scheduler config and
        VAE as they are now (:func:`tfg_search.pipelines.identity.model_identity`). A folder's is
        computed once per task."""
        from tfg_search.pipelines.identity import folder_identity, model_identity

        folder = self.model_folder()
        if folder is None:
            model, scheduler = self.diffusion("cpu")
            decoder = self.decoder("cpu")
            return model_identity(model, scheduler, decoder.vae if decoder is not None else None)
        if "_folder_identity" not in self.__dict__:
            self.__dict__["_folder_identity"] = folder_identity(folder)
        return str(self.__dict__["_folder_identity"])

    # -- judging -----------------------------------------------------------------------------
    @abstractmethod
    def compute_metrics(self, samples: torch.Tensor, target: str) -> dict[str, float]:
        """Held-out metrics of guided samples (images ``[B, *image_shape]``, decoded for a latent
        task) for ``target``; keys are :attr:`metrics`."""

    def reference(self, target: str) -> torch.Tensor:
        """Real samples of the guided distribution for ``target`` (for fidelity); default: none."""
        raise TFGSearchError(f"task {self.name!r} has no reference data")

    # -- description -------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """A JSON-ready summary for ``tfg-search tasks``."""
        return {
            "name": self.name,
            "description": self.description,
            "targets": self.targets_help,
            "sample_shape": list(self.sample_shape),
            "num_inference_steps": self.num_inference_steps,
            "search_samples": self.search_samples,
            "final_samples": self.final_samples,
            "metrics": list(self.metrics),
            "objective": list(self.objective),
            "default_space": {k: str(v) for k, v in self.default_space.items()},
            "default_strength_space": str(self.default_strength_space),
        }


_MODEL_CACHE: dict[tuple[Any, ...], Any] = {}


def cached(key: tuple[Any, ...], build: Callable[[], Any]) -> Any:
    """Per-process cache of loaded models (``key`` must include the device and the weights path)."""
    if key not in _MODEL_CACHE:
        _MODEL_CACHE[key] = build()
    return _MODEL_CACHE[key]


def clear_model_cache() -> None:
    """Forget every cached model (tests; after retraining in the same process)."""
    _MODEL_CACHE.clear()


def frozen(module: torch.nn.Module, device: torch.device | str | None) -> torch.nn.Module:
    """``module`` in eval mode on ``device`` with gradients of its parameters switched off."""
    module = module.to(torch.device(device or "cpu")).eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def in_dtype(module: torch.nn.Module, dtype: str) -> torch.nn.Module:
    """``module`` in ``dtype`` (:data:`tfg_search.guidance.config.DTYPES`): itself when it is in
    it already, else a converted copy, made once per process (:func:`cached`; the original stays
    as it was, for the runs in float32)."""
    want = getattr(torch, dtype)
    if model_dtype(module) in (None, want):
        return module
    # torch's own .to: diffusers' override warns on every cast of a model without float32-only parts
    return cached(("dtype", module, dtype), lambda: torch.nn.Module.to(copy.deepcopy(module), want))


def _in_task_dtype(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
    """``Task.diffusion`` / ``Task.decoder`` of a subclass, returning its models in the task's
    dtype (float16 refused on a CPU, where torch has no float16 kernels for every layer)."""

    @functools.wraps(method)
    def in_task_dtype(self: Task, device: torch.device | str | None = None) -> Any:
        out = method(self, device)
        if self.dtype == "float32" or out is None:
            return out
        if self.dtype == "float16" and torch.device(device or "cpu").type == "cpu":
            raise TFGSearchError(
                "dtype float16 needs a GPU; on a CPU use --dtype bfloat16 or float32 (the default)"
            )
        if name == "diffusion":
            model, scheduler = out
            return in_dtype(model, self.dtype), scheduler
        return LatentDecoder(in_dtype(out.vae, self.dtype), checkpointing=out.checkpointing)

    in_task_dtype.casts_dtype = True  # type: ignore[attr-defined]
    return in_task_dtype


def check_images(samples: torch.Tensor, shape: tuple[int, ...], task: str) -> torch.Tensor:
    """Samples as float32 CPU images ``[B, *shape]`` clamped to [-1, 1].

    Raises:
        TFGSearchError: non-finite samples, or samples of another shape.
    """
    x = samples.detach().float().cpu()
    if not torch.isfinite(x).all():
        raise TFGSearchError("samples contain NaN/inf; cannot compute metrics")
    if x.dim() != len(shape) + 1 or tuple(x.shape[1:]) != tuple(shape):
        want = ", ".join(str(d) for d in shape)
        raise TFGSearchError(f"{task} samples must have shape [B, {want}], got {tuple(x.shape)}")
    return x.clamp(-1, 1)

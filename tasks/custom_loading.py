"""The ``custom`` task's model folder: find its components, check their weights, load them.

A folder written by diffusers ``save_pretrained`` takes one of two forms:

* a pipeline folder: ``unet/`` and ``scheduler/``, optionally ``vae/`` (a latent model) and
  ``text_encoder/`` + ``tokenizer/`` (a text-conditional model), as ``StableDiffusionPipeline`` or
  ``DDPMPipeline`` write them (``model_index.json`` is not needed);
* a model folder: a denoiser's ``config.json`` and weights with a ``scheduler_config.json`` beside.

Weights load from safetensors only (``use_safetensors=True``): a component that holds only pickle
``.bin`` weights is refused with the command that converts it, because unpickling runs code.

Example:
    >>> import tempfile
    >>> locate_folder(tempfile.mkdtemp())  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    tfg_search.errors.TFGSearchError: ... is not a diffusers model folder; give a folder ...
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tasks.model_errors import guard
from tfg_search.errors import TFGSearchError

DENOISER_CLASSES = ("UNet2DModel", "UNet2DConditionModel", "UNet1DModel")
"""The diffusers denoisers the guided sampler calls as ``model(x, t, **conditioning)``."""
_LAYOUT_HINT = (
    "give a folder written by diffusers save_pretrained: a pipeline folder with unet/ and scheduler/ "
    "(optionally vae/, text_encoder/ and tokenizer/), or a model folder with config.json and "
    "scheduler_config.json"
)


@dataclass(frozen=True)
class ModelFolder:
    """Where the components of a model folder are (absolute paths) and their configs.

    Attributes:
        root: the folder, absolute and resolved (symbolic links and ``..`` removed).
        parts: component name (``unet``, ``scheduler``, ``vae``, ``text_encoder``, ``tokenizer``) ->
            its folder; in a model folder ``unet`` and ``scheduler`` are both ``root``.
        configs: component name -> its parsed config (tokenizer excluded).
    """

    root: Path
    parts: dict[str, Path]
    configs: dict[str, dict[str, Any]] = field(repr=False)

    def subfolder(self, name: str) -> str | None:
        """The ``subfolder`` argument of ``from_pretrained`` for a component (None: the root)."""
        return None if self.parts[name] == self.root else name

    @property
    def latent(self) -> bool:
        """Whether the folder has a VAE (the chain then runs on its latents)."""
        return "vae" in self.parts

    @property
    def text(self) -> bool:
        """Whether the folder has a text encoder and its tokenizer."""
        return "text_encoder" in self.parts


CONFIG_FILES = {"scheduler": "scheduler_config.json"}
"""Config file name of a component when it is not ``config.json`` (the tokenizer has several)."""


def config_file(folder: ModelFolder, name: str) -> Path:
    """The config file of component ``name``."""
    return folder.parts[name] / CONFIG_FILES.get(name, "config.json")


def locate_folder(model: str) -> ModelFolder:
    """Find the components of a diffusers folder and check that each has safetensors weights.

    Raises:
        TFGSearchError: no such folder, not a diffusers layout, text encoder without tokenizer,
            unreadable configs, pickle-only or missing weights (one line saying what to do).
    """
    given = Path(model).expanduser()
    if not given.exists():
        hub = ""
        if model.count("/") == 1 and not model.startswith((".", "/", "~")):
            hub = f"; for a hub model, download it first: hf download {model} --local-dir DIR"
        raise TFGSearchError(f"custom model folder {model!r} does not exist{hub}; {_LAYOUT_HINT}")
    if not given.is_dir():
        raise TFGSearchError(f"custom model {model!r} is not a folder; {_LAYOUT_HINT}")
    root = given.resolve()
    if (root / "unet" / "config.json").is_file() and (root / "scheduler" / "scheduler_config.json").is_file():
        parts = {"unet": root / "unet", "scheduler": root / "scheduler"}
        parts.update({n: root / n for n in ("vae", "text_encoder") if (root / n / "config.json").is_file()})
        if (root / "tokenizer").is_dir():
            parts["tokenizer"] = root / "tokenizer"
        if ("text_encoder" in parts) != ("tokenizer" in parts):
            have, lack = (
                ("text_encoder", "tokenizer") if "text_encoder" in parts else ("tokenizer", "text_encoder")
            )
            raise TFGSearchError(f"{root} has {have}/ but no {lack}/; a text-conditional pipeline needs both")
    elif (root / "config.json").is_file() and (root / "scheduler_config.json").is_file():
        parts = {"unet": root, "scheduler": root}
    else:
        raise TFGSearchError(f"{model!r} is not a diffusers model folder; {_LAYOUT_HINT}")
    configs = {
        n: read_json(p / CONFIG_FILES.get(n, "config.json")) for n, p in parts.items() if n != "tokenizer"
    }
    folder = ModelFolder(root, parts, configs)
    for name in ("unet", "vae", "text_encoder"):
        if name in parts:
            weight_files(folder, name)
    return folder


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object read from a file (TFGSearchError saying which file when it is not one)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise TFGSearchError(f"cannot read {path}: {err}; write it again with save_pretrained") from err
    if not isinstance(data, dict):
        raise TFGSearchError(f"{path} is not a JSON object; write it again with save_pretrained")
    return data


def class_name(folder: ModelFolder, name: str) -> str:
    """The class a component's config names (diffusers ``_class_name``, transformers ``architectures``)."""
    cfg = folder.configs[name]
    if name == "text_encoder":
        archs = cfg.get("architectures") or ["CLIPTextModel"]
        return str(archs[0])
    return str(cfg.get("_class_name", "UNet2DModel" if name == "unet" else "AutoencoderKL"))


_WEIGHT_STEM = {"text_encoder": "model"}
"""File stem of a component's weights (transformers' ``model``; diffusers' otherwise)."""


def weight_files(folder: ModelFolder, name: str) -> tuple[Path, ...]:
    """The safetensors files ``from_pretrained`` reads for a component (one, or the shards of its
    index), without a variant.

    Raises:
        TFGSearchError: only pickle weights (with the command that converts them), or none at all.
    """
    part = folder.parts[name]
    stem = _WEIGHT_STEM.get(name, "diffusion_pytorch_model")
    single = part / f"{stem}.safetensors"
    if single.is_file():
        return (single,)
    index = part / f"{stem}.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(read_json(index).get("weight_map", {}).values()))
        missing = [s for s in shards if not (part / s).is_file()]
        if not shards or missing:
            raise TFGSearchError(f"{index} names missing shards ({', '.join(missing) or 'none listed'})")
        return tuple(part / s for s in shards)
    pickles = sorted(p.name for p in part.glob("*.bin"))
    if pickles:
        module = "transformers" if name == "text_encoder" else "diffusers"
        sub = folder.subfolder(name)
        load = f"'{folder.root}'" + (f", subfolder='{sub}'" if sub else "")
        raise TFGSearchError(
            f"{part / pickles[0]} is a pickle file (loading one can run code); tfg-search loads "
            f'safetensors only: convert it once, where you trust the file, with python -c "from '
            f"{module} import {class_name(folder, name)} as M; M.from_pretrained({load})"
            f".save_pretrained('{part}', safe_serialization=True)\""
        )
    raise TFGSearchError(f"{part} has no weights ({stem}.safetensors); write it with save_pretrained")


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


_LOAD_ERRORS = (OSError, ValueError, RuntimeError, KeyError, TypeError, AttributeError)


def load_component(folder: ModelFolder, name: str) -> torch.nn.Module:
    """Load the denoiser (``unet``), the ``vae`` or the ``text_encoder`` from safetensors, on CPU.

    Raises:
        TFGSearchError: an unknown class, or weights that do not load.
    """
    library = "transformers" if name == "text_encoder" else "diffusers"
    module = __import__(library)
    cls_name = class_name(folder, name)
    cls = getattr(module, cls_name, None)
    if cls is None or not hasattr(cls, "from_pretrained"):
        raise TFGSearchError(f"{config_file(folder, name)}: unknown {library} class {cls_name!r}")
    try:
        return cls.from_pretrained(str(folder.root), subfolder=folder.subfolder(name), use_safetensors=True)
    except _LOAD_ERRORS as err:
        raise TFGSearchError(f"cannot load {name} from {folder.parts[name]}: {_first_line(err)}") from err


def load_scheduler(folder: ModelFolder) -> Any:
    """A fresh ``DDIMScheduler`` with the noise schedule of the folder's scheduler (any class)."""
    from diffusers import DDIMScheduler

    try:
        return DDIMScheduler.from_config(folder.configs["scheduler"])
    except _LOAD_ERRORS as err:
        raise TFGSearchError(
            f"cannot build a DDIM scheduler from {config_file(folder, 'scheduler')}: {_first_line(err)}"
        ) from err


def encode_prompts(
    folder: ModelFolder, prompt: str, negative_prompt: str, device: torch.device | str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Text embeddings ``[1, L, D]`` of the prompt and of the negative prompt of a pipeline folder:
    its tokenizer and text encoder loaded, then :func:`tfg_search.pipelines.prompts.encode_prompt`
    (the encoding :class:`~tfg_search.pipelines.TFGPipeline` uses, as diffusers'
    ``StableDiffusionPipeline.encode_prompt`` computes it).

    The text encoder is loaded on ``device`` for the call and not kept.
    """
    from transformers import AutoTokenizer

    from tfg_search.pipelines.prompts import encode_prompt

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder.root), subfolder="tokenizer")
    except _LOAD_ERRORS as err:
        raise TFGSearchError(
            f"cannot load the tokenizer from {folder.parts['tokenizer']}: {_first_line(err)}"
        ) from err
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a loading bar would break the search's progress display
    try:
        encoder = (
            guard(load_component(folder, "text_encoder"), f"text_encoder of {folder.root}").to(device).eval()
        )
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    return encode_prompt(tokenizer, encoder, prompt, negative_prompt, device)

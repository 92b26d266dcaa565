"""Weights of the bundled tasks: safetensors files plus a small JSON of how they were made.

Layout: ``<dir>/<name>.safetensors`` and ``<dir>/<name>.json``; the JSON holds the format version, the
seed, the number of steps, the data split, the quality reached and the wall time. A task's diffusion
model is a diffusers pipeline folder in the same ``<dir>`` (:func:`save_pipeline_folder`:
``unet/``, ``scheduler/``, ``model_index.json``; its training record in ``unet.json``), which
``TFGPipeline.from_pretrained`` and diffusers' ``DDIMPipeline.from_pretrained`` load. The default
folder is ``tasks/weights/<task>/`` inside the installed package (shipped as package data).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from tfg_search.errors import TFGSearchError

FORMAT_VERSION = 1
WEIGHTS_ROOT = Path(__file__).resolve().parent / "weights"


def weights_dir(task: str) -> Path:
    """The shipped weights folder of a bundled task."""
    return WEIGHTS_ROOT / task


def save_weights(folder: Path, name: str, state: dict[str, torch.Tensor], meta: dict[str, Any]) -> Path:
    """Write ``name.safetensors`` and ``name.json`` (adding the format version) into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    save_file(tensors, str(folder / f"{name}.safetensors"))
    (folder / f"{name}.safetensors").chmod(0o644)  # safetensors writes 0600; weights are shared
    meta = {"format_version": FORMAT_VERSION, **meta}
    (folder / f"{name}.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return folder / f"{name}.safetensors"


def load_weights(folder: Path, name: str, task: str) -> tuple[dict[str, torch.Tensor], dict]:
    """Read a state dict and its JSON, checking presence and the format version.

    Raises:
        TFGSearchError: a file is missing or was written by another format version; the message
            says how to retrain (``tfg-search train <task>``).
    """
    folder = Path(folder)
    st, js = folder / f"{name}.safetensors", folder / f"{name}.json"
    retrain = f"retrain with `tfg-search train {task} --out {folder}`"
    if not st.is_file() or not js.is_file():
        missing = st if not st.is_file() else js
        raise TFGSearchError(f"task {task!r}: weight file {missing} is missing; {retrain}")
    try:
        meta = json.loads(js.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise TFGSearchError(f"task {task!r}: cannot read {js} ({err}); {retrain}") from err
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise TFGSearchError(
            f"task {task!r}: {st} has weights format version {version}, this tfg-search reads "
            f"version {FORMAT_VERSION}; {retrain}"
        )
    try:
        state = load_file(str(st))
    except Exception as err:  # safetensors raises several types for corrupt files
        raise TFGSearchError(f"task {task!r}: cannot read {st} ({err}); {retrain}") from err
    return state, meta


def save_pipeline_folder(folder: Path, unet: Any, scheduler: Any) -> None:
    """Write a diffusion model as a diffusers pipeline folder: ``unet/`` (``save_pretrained``,
    safetensors), ``scheduler/`` and ``model_index.json`` naming diffusers' ``DDIMPipeline`` (so
    that diffusers loads it as one, and ``TFGPipeline.from_pretrained`` too)."""
    import diffusers

    folder = Path(folder)
    unet.save_pretrained(folder / "unet", safe_serialization=True)
    for f in (folder / "unet").glob("*.safetensors"):
        f.chmod(0o644)  # safetensors writes 0600; weights are shared
    scheduler.save_pretrained(folder / "scheduler")
    index = {
        "_class_name": "DDIMPipeline",
        "_diffusers_version": diffusers.__version__,
        "scheduler": ["diffusers", type(scheduler).__name__],
        "unet": ["diffusers", type(unet).__name__],
    }
    (folder / "model_index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")


def load_pipeline_unet(folder: Path, task: str) -> Any:
    """The ``UNet2DModel`` of a :func:`save_pipeline_folder` folder (safetensors only).

    Raises:
        TFGSearchError: no ``unet/`` there (the message says how to train one).
    """
    from diffusers import UNet2DModel

    folder = Path(folder)
    if not (folder / "unet" / "config.json").is_file():
        raise TFGSearchError(
            f"task {task!r}: the UNet folder {folder / 'unet'} is missing; "
            f"retrain with `tfg-search train {task} --out {folder}`"
        )
    return UNet2DModel.from_pretrained(folder / "unet", use_safetensors=True, low_cpu_mem_usage=False)

"""Weights of the bundled tasks: safetensors files plus a small JSON of how they were made.

Layout: ``<dir>/<name>.safetensors`` and ``<dir>/<name>.json``; the JSON holds the format version, the
seed, the number of steps, the data split, the quality reached and the wall time. The default folder is
``tasks/weights/<task>/`` inside the installed package (shipped as package data).
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

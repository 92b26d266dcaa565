"""A model's identity: one hash of its components' configs and weights, recorded in each study.

A model loaded from a diffusers folder (every bundled task but ``gmm2d``, and ``custom``) is
identified by its files: :func:`folder_identity`, the sha256 of its components' canonical configs
and the sha256 of each weight file (``tasks/custom_identity.py`` defines the document), which a
user recomputes without loading the model; a copy of the folder, another spelling of its path
and every task that loads it give the same identity. A model without a folder (built in Python,
or stored in a task's own format) is identified by its loaded tensors: :func:`model_identity`.
Either way a retrained or edited model has another identity.

Example:
    >>> import torch
    >>> a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    >>> model_identity(a) == model_identity(a), model_identity(a) == model_identity(b)
    (True, False)
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import torch


def folder_identity(folder: str | os.PathLike[str]) -> str:
    """The identity of the model in a diffusers folder (a pipeline folder or a model folder, as the
    ``custom`` task reads it: :func:`tasks.custom_loading.locate_folder`): the hex sha256 of its
    components' configs (without the keys that say where or by which library version they were
    written) and of its weight files' bytes.

    Raises:
        TFGSearchError: not a diffusers folder, or a component without safetensors weights.
    """
    from tasks.custom_identity import folder_identity as of_folder
    from tasks.custom_loading import locate_folder

    return of_folder(locate_folder(os.fspath(folder)))


def _config_of(part: Any) -> dict[str, Any] | None:
    config = getattr(part, "config", None)
    if config is None:
        return None
    items = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    return {k: v for k, v in items.items() if not str(k).startswith("_")}  # drop versions, paths


def model_identity(*parts: Any) -> str:
    """The sha256 (hex) of the parts' class names, configs (diffusers' and transformers' ``config``,
    without their ``_``-keys such as the library version or the folder it was loaded from) and
    tensors (names, dtypes, shapes and bytes of every parameter and buffer). ``None`` parts are
    skipped; a part that is neither a module nor has a config contributes its class name only."""
    digest = hashlib.sha256()
    for part in parts:
        if part is None:
            continue
        digest.update(type(part).__qualname__.encode())
        config = _config_of(part)
        if config is not None:
            digest.update(json.dumps(config, sort_keys=True, default=str).encode())
        if isinstance(part, torch.nn.Module):
            for name, tensor in sorted(part.state_dict().items()):
                t = tensor.detach().to("cpu").contiguous()
                digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
                digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()

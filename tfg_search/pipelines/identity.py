"""A model's identity: one hash of its components' configs and weights (as loaded, any layout).

Two folders with the same weights and configs (a copy, another path, a re-save) have one identity;
a retrained or edited model has another. Hashing the loaded tensors, not the files, makes the
identity independent of how the weights were stored (safetensors shards, a diffusers folder or a
task's own files).

Example:
    >>> import torch
    >>> a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    >>> model_identity(a) == model_identity(a), model_identity(a) == model_identity(b)
    (True, False)
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch


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

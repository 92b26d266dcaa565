"""The identity of a model folder: one hash of its components' configs and weights.

The identity is the sha256 of a canonical JSON document (sorted keys, no spaces)::

    {"format": 1, "components": {NAME: {"configs": {FILE: CONFIG}, "files": {FILE: SHA256}}}}

for each component the task loads (``unet``, ``scheduler``, and where present ``vae``,
``text_encoder``, ``tokenizer``): ``configs`` are its JSON files parsed, without the keys that record
where or with which library version the folder was written (:data:`VOLATILE_KEYS`); ``files`` maps
each weight file it loads (safetensors) and each other tokenizer file (hidden files skipped) to the
sha256 of its bytes, read in 1 MiB chunks. File names are relative to the component, so the identity
does not depend on where the folder is, how its path is spelled, or whether it is a copy; a model
folder (``config.json`` + ``scheduler_config.json``) and a pipeline folder with the same denoiser and
scheduler share it.
``model_index.json`` is not part of it (it names classes, not the model).

Example:
    >>> import json, tempfile
    >>> from pathlib import Path
    >>> a, b = Path(tempfile.mkdtemp()), Path(tempfile.mkdtemp())
    >>> for d, version in ((a, "0.30.0"), (b, "0.42.1")):
    ...     _ = (d / "c.json").write_text(json.dumps({"x": 1, "_diffusers_version": version}))
    >>> canonical_config(a / "c.json") == canonical_config(b / "c.json") == {"x": 1}
    True
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from tasks.custom_loading import ModelFolder, config_file, read_json, weight_files

FORMAT = 1
"""Version of the hashed document; a change of its definition bumps it."""
VOLATILE_KEYS = frozenset(
    {
        "_diffusers_version",
        "transformers_version",
        "_name_or_path",
        "name_or_path",
        "_commit_hash",
        "is_local",
        "local_files_only",
    }
)
"""Config keys that say where or by which library version a folder was written, not what it is."""
_CHUNK = 1 << 20


def canonical_config(path: Path) -> dict[str, Any]:
    """A JSON object's content without :data:`VOLATILE_KEYS` (at its top level).

    Raises:
        TFGSearchError: the file is not a JSON object.
    """
    return {k: v for k, v in read_json(path).items() if k not in VOLATILE_KEYS}


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes, streamed."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _component(folder: ModelFolder, name: str) -> dict[str, dict[str, Any]]:
    part = folder.parts[name]
    if name == "tokenizer":
        files = sorted(p for p in part.rglob("*") if p.is_file() and not p.name.startswith("."))
        configs = [p for p in files if p.suffix == ".json"]
        hashed = [p for p in files if p.suffix != ".json"]
    else:
        configs = [config_file(folder, name)]
        hashed = [] if name == "scheduler" else list(weight_files(folder, name))
    return {
        "configs": {p.relative_to(part).as_posix(): canonical_config(p) for p in configs},
        "files": {p.relative_to(part).as_posix(): file_sha256(p) for p in hashed},
    }


def folder_identity(folder: ModelFolder) -> str:
    """The hex sha256 identity of a located model folder (see the module docstring)."""
    document = {"format": FORMAT, "components": {n: _component(folder, n) for n in sorted(folder.parts)}}
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()

"""A :class:`~tfg_search.guidance.config.TFGConfig` as a file in diffusers' config format. Torch-free.

``tfg_config.json`` in a folder, written as diffusers writes a scheduler's or a model's
``config.json`` (``json.dumps(indent=2, sort_keys=True)``): ``_class_name`` ("TFGConfig"),
``_diffusers_version`` (of the installed diffusers, read from its package metadata without importing
it) and ``_tfg_search_version``, every field of the config, and free metadata as further keys
(e.g. ``task``, ``target``, ``model_identity``). A folder saved by
:meth:`~tfg_search.pipelines.TFGPipeline.save_pretrained` can hold it beside ``model_index.json``.

Example:
    >>> import tempfile
    >>> from tfg_search.guidance.config import TFGConfig
    >>> folder = tempfile.mkdtemp()
    >>> path = TFGConfig(rho=0.5, guidance_scale=3.0).save_pretrained(folder, task="shapes")
    >>> path.name
    'tfg_config.json'
    >>> config, metadata = TFGConfig.from_pretrained(folder, return_metadata=True)
    >>> config.guidance_scale, metadata
    (3.0, {'task': 'shapes'})
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from importlib import metadata as package_metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tfg_search.guidance.config import TFGConfig

CONFIG_NAME = "tfg_config.json"
"""The file name in a folder (diffusers names its component configs ``config.json``,
``scheduler_config.json``; this one sits beside them in a pipeline folder)."""
CLASS_NAME = "TFGConfig"


def _versions() -> dict[str, str]:
    from tfg_search import __version__

    return {"_diffusers_version": package_metadata.version("diffusers"), "_tfg_search_version": __version__}


def config_text(config: TFGConfig, **metadata: Any) -> str:
    """The file's text: diffusers' layout, the config's fields, then ``metadata`` as further keys.

    Raises:
        ValueError: a metadata key that is a config field or starts with ``_`` (diffusers' private
            keys), or a value JSON cannot write.
    """
    fields = config.to_dict()
    for key in metadata:
        if key in fields or key.startswith("_"):
            raise ValueError(
                f"metadata key {key!r} is taken: use a name that is not a TFGConfig field and does "
                "not start with '_'"
            )
    body = {"_class_name": CLASS_NAME, **_versions(), **fields, **metadata}
    try:
        return json.dumps(body, indent=2, sort_keys=True) + "\n"
    except TypeError as err:
        raise ValueError(f"metadata must be JSON values (str, number, bool, list, dict): {err}") from None


def save_config(config: TFGConfig, folder: str | os.PathLike[str], overwrite: bool, **metadata: Any) -> Path:
    """Write ``folder/tfg_config.json`` (folder created); see :meth:`TFGConfig.save_pretrained`.

    The file is written whole or not at all (a temporary file renamed into place). An existing file
    with the same fields and metadata is left as it is (saving twice is harmless), one that differs
    is replaced only with ``overwrite=True``.

    Raises:
        FileExistsError: a different ``tfg_config.json`` is there and ``overwrite`` is False.
        ValueError: bad metadata (:func:`config_text`).
    """
    path = Path(folder) / CONFIG_NAME
    text = config_text(config, **metadata)
    if path.exists() and not overwrite:
        if _same_content(path, text):
            return path
        raise FileExistsError(
            f"{path} already holds another configuration; pass overwrite=True to replace it, or "
            "save into another folder"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tfg_config.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _same_content(path: Path, text: str) -> bool:
    """Whether the file at ``path`` holds what ``text`` holds, versions aside."""
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    new = json.loads(text)
    drop = {"_diffusers_version", "_tfg_search_version"}
    return {k: v for k, v in old.items() if k not in drop} == {k: v for k, v in new.items() if k not in drop}


def load_config(cls: type[TFGConfig], folder: str | os.PathLike[str]) -> tuple[TFGConfig, dict[str, Any]]:
    """Read ``folder/tfg_config.json`` (or that file's path itself): (config, metadata).

    Keys starting with ``_`` are diffusers' bookkeeping and skipped; the config's fields build the
    config (missing ones take their defaults), every other key is metadata.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a TFGConfig file, unreadable JSON, or an invalid field value.
    """
    path = Path(folder)
    if path.is_dir() or not path.suffix:
        path = path / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no {CONFIG_NAME} at {path}; write one with TFGConfig.save_pretrained")
    try:
        body = json.loads(path.read_text())
    except ValueError as err:
        raise ValueError(f"{path} is not JSON ({err}); write it with TFGConfig.save_pretrained") from None
    if not isinstance(body, dict) or body.get("_class_name") != CLASS_NAME:
        found = body.get("_class_name") if isinstance(body, dict) else type(body).__name__
        raise ValueError(f"{path} is not a {CLASS_NAME} file (its _class_name is {found!r})")
    names = {f.name for f in dataclasses.fields(cls)}
    fields = {k: v for k, v in body.items() if k in names}
    extra = {k: v for k, v in body.items() if k not in names and not k.startswith("_")}
    try:
        return cls.from_dict(fields), extra
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: {err}") from None

"""The one device check: a name torch knows, and (where it is used) a device this torch can use.

Used by ``tfg-search search`` (before anything is written), ``evaluate`` and ``sample``, by
:func:`~tfg_search.run.evaluation.evaluate_batch` and by the workers.

Example:
    >>> resolve_device("cpu").type, resolve_device(None, default="cpu").type
    ('cpu', 'cpu')
    >>> resolve_device("tpu9", flag="--device")
    Traceback (most recent call last):
    ...
    tfg_search.errors.TFGSearchError: --device 'tpu9' is not a device name; use cpu, cuda or cuda:N
"""

from __future__ import annotations

from typing import Any

from tfg_search.errors import TFGSearchError

SUPPORTED = ("cpu", "cuda", "mps")


def resolve_device(device: Any, *, default: str = "auto", usable: bool = True, flag: str = "device") -> Any:
    """``device`` as a ``torch.device``.

    Args:
        device: a name ("cpu", "cuda", "cuda:1", "mps"), a ``torch.device``, or None.
        default: what None means: ``"auto"`` (CUDA when this torch has a device, else CPU) or a name.
        usable: also check that this process can use it (False: the device of other machines,
            e.g. Ray workers, of which only the name is checked).
        flag: how the messages name the setting (e.g. ``"--device"``).

    Raises:
        TFGSearchError: not a device name, a type other than cpu / cuda / mps, or (``usable``)
            CUDA or MPS where this torch has none, or a CUDA index beyond the devices.
    """
    import torch

    if device is None and default != "auto":
        device = default
    elif device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise TFGSearchError(f"{flag} {device!r} is not a device name; use cpu, cuda or cuda:N") from None
    if dev.type not in SUPPORTED:
        raise TFGSearchError(f"device {dev} is not supported; use cpu, cuda or cuda:N")
    if not usable:
        return dev
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise TFGSearchError(f"device {dev} requested but this torch has no CUDA device; use cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise TFGSearchError(
                f"device {dev} requested but only {torch.cuda.device_count()} CUDA device(s) exist"
            )
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise TFGSearchError(f"device {dev} requested but MPS is not available; use cpu")
    return dev

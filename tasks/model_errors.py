"""A custom task's own models (its UNet, VAE, text encoder) that raise are the user's error.

A model folder the user brought can hold a model that fails when called (a sample size its blocks
cannot halve and double back, a config that does not match its weights' use): the exception
becomes :class:`~tfg_search.errors.UserCodeError` naming the component, so a search stops at the
first with one line (issue 27, item 2) instead of reporting "a reason of the machine". What is
truly the machine's stays so: out of memory, and the accelerator's own errors.

Example:
    >>> import torch
    >>> layer = guard(torch.nn.Linear(2, 3), "unet of /m")
    >>> layer(torch.zeros(1, 2)).shape
    torch.Size([1, 3])
    >>> import copy
    >>> copy.deepcopy(layer).double()(torch.zeros(1, 2, dtype=torch.float64)).dtype  # the copy's own
    torch.float64
    >>> try:
    ...     layer(torch.zeros(1, 5))
    ... except UserCodeError as err:
    ...     print(str(err)[:42])
    model unet of /m raised RuntimeError: mat1
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

import torch

from tfg_search.errors import TFGSearchError, UserCodeError

M = TypeVar("M", bound=torch.nn.Module)

MACHINE_WORDS = ("CUDA", "cuDNN", "cuBLAS", "NCCL", "HIP", "MPS", "out of memory")
"""A RuntimeError naming one of these is the accelerator's (the machine's), not the model's."""


def machine_error(err: BaseException) -> bool:
    """Whether ``err`` is the machine's: out of memory, or an error of the accelerator's runtime."""
    if isinstance(err, (MemoryError, torch.OutOfMemoryError, KeyboardInterrupt)):
        return True
    first = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return isinstance(err, RuntimeError) and any(word in first for word in MACHINE_WORDS)


class _Guarded:
    """A module's method ``name`` (its class's, called on ``module``) raising :class:`UserCodeError`
    for the user's exceptions. It holds the module, not a bound method, so that a deep copy of the
    module (:func:`tasks.base.in_dtype`) calls the copy."""

    def __init__(self, module: torch.nn.Module, name: str, spec: str) -> None:
        self.module = module
        self.name = name
        self.spec = spec

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return getattr(type(self.module), self.name)(self.module, *args, **kwargs)
        except TFGSearchError:
            raise
        except Exception as err:
            if machine_error(err):
                raise
            raise UserCodeError("model", self.spec, err) from err


def guard(module: M, spec: str, methods: Sequence[str] = ("forward",)) -> M:
    """``module`` with ``methods`` (``forward``; a VAE's ``decode``) raising
    :class:`UserCodeError` (role ``model``, ``spec``) for any exception but the machine's; the
    module is otherwise unchanged (its config, parameters and gradients)."""
    for name in methods:
        setattr(module, name, _Guarded(module, name, spec))
    return module

"""The answer as a diffusers object: :class:`TFGPipeline` (a ``DiffusionPipeline`` that samples with
training-free guidance), a model's identity (:func:`~tfg_search.pipelines.identity.model_identity`)
and the one prompt encoding (:func:`~tfg_search.pipelines.prompts.encode_prompt`).

``TFGPipeline`` is imported on first use (it loads diffusers' pipeline machinery).

Example:
    >>> from tfg_search.pipelines import TFGPipeline   # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

__all__ = ["TFGPipeline", "encode_prompt", "model_identity"]


def __getattr__(name: str) -> Any:
    if name == "TFGPipeline":
        from tfg_search.pipelines.pipeline import TFGPipeline

        return TFGPipeline
    if name == "encode_prompt":
        from tfg_search.pipelines.prompts import encode_prompt

        return encode_prompt
    if name == "model_identity":
        from tfg_search.pipelines.identity import model_identity

        return model_identity
    raise AttributeError(f"module 'tfg_search.pipelines' has no attribute {name!r}")

"""Prompt embeddings as Stable Diffusion's pipeline computes them: the one encoding of a text
condition, used by :class:`~tfg_search.pipelines.TFGPipeline` and by the ``custom`` task.

A prompt is tokenized, padded to the tokenizer's ``model_max_length`` and truncated, and encoded to
the text encoder's last hidden state (no clip skip), in the text encoder's dtype; the negative
prompt (the unconditional branch of classifier-free guidance, ``""`` by default) is padded to the
same length (diffusers' ``StableDiffusionPipeline.encode_prompt``). One function for both callers
keeps the service's samples and the pipeline's equal bit for bit on a text-conditional model.

Example:
    >>> from tfg_search.pipelines.prompts import encode_prompt              # doctest: +SKIP
    >>> cond, uncond = encode_prompt(tokenizer, text_encoder, "a cat", None, "cpu")  # doctest: +SKIP
    >>> cond.shape == uncond.shape                                           # doctest: +SKIP
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["encode_prompt"]


def _texts(value: str | Sequence[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


@torch.no_grad()
def encode_prompt(
    tokenizer: Any,
    text_encoder: Any,
    prompt: str | Sequence[str],
    negative_prompt: str | Sequence[str] | None,
    device: torch.device | str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(prompt embeddings, negative prompt embeddings), each ``[P, L, D]`` for P prompts.

    Args:
        tokenizer: a transformers tokenizer (e.g. ``CLIPTokenizer``).
        text_encoder: its text encoder (e.g. ``CLIPTextModel``), already on ``device``.
        prompt: one prompt or several.
        negative_prompt: one per prompt (a single one for a single prompt), or None for ``""``.
        device: where the embeddings are computed and returned.

    Raises:
        ValueError: a number of negative prompts that differs from the number of prompts.
    """
    prompts = _texts(prompt)
    negatives = [""] * len(prompts) if negative_prompt is None else _texts(negative_prompt)
    if len(negatives) != len(prompts):
        raise ValueError(f"give one negative prompt per prompt: {len(negatives)} for {len(prompts)} prompts")
    use_mask = bool(getattr(text_encoder.config, "use_attention_mask", False))

    def embed(texts: list[str], length: int) -> torch.Tensor:
        tokens = tokenizer(
            texts, padding="max_length", max_length=length, truncation=True, return_tensors="pt"
        )
        mask = tokens.attention_mask.to(device) if use_mask else None
        out = text_encoder(tokens.input_ids.to(device), attention_mask=mask)[0]
        return out.to(dtype=text_encoder.dtype, device=device)

    embeds = embed(prompts, tokenizer.model_max_length)
    return embeds, embed(negatives, embeds.shape[1])

"""Tiny random diffusers pipeline folders, written with ``save_pretrained`` (nothing downloaded).

* :func:`sd_pipeline` a Stable-Diffusion-shaped folder: ``UNet2DConditionModel`` on 4x8x8 latents,
  ``AutoencoderKL`` (16x16 RGB images), ``CLIPTextModel`` + ``CLIPTokenizer`` and a DDIM scheduler,
  saved by ``StableDiffusionPipeline.save_pretrained`` (with ``model_index.json``);
* :func:`class_pipeline` a class-conditional pixel folder: ``UNet2DModel(num_class_embeds=...)`` on
  1x8x8 images with a DDPM scheduler, saved by ``DDPMPipeline.save_pretrained``;
* :func:`tiny_tokenizer` a byte-level ``CLIPTokenizer`` whose ``vocab.json`` and ``merges.txt`` are
  written here (every byte as a token, alone and word-final, a few merges).

Every component is built from a config with a fixed seed, so two calls with the same arguments write
the same weights. Pickle ``.bin`` weights (``safe=False``) are for the tests that check they are
refused.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    DDPMPipeline,
    DDPMScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
    UNet2DModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

MAX_TOKENS = 16
"""The tiny tokenizer's ``model_max_length`` (prompts are padded or truncated to it)."""
NUM_CLASSES = 4
"""Class ids of :func:`class_pipeline` (the last one, 3, is meant as the null class)."""
MERGES = ("c a", "ca t</w>", "d o", "do g</w>")


def _byte_chars() -> list[str]:
    """The 256 printable characters that byte-level BPE (GPT-2, CLIP) writes for the 256 bytes."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    shifted = iter(range(256, 512))
    return [chr(b) if b in printable else chr(next(shifted)) for b in range(256)]


def tiny_tokenizer(folder: Path) -> CLIPTokenizer:
    """A byte-level CLIP tokenizer from a vocabulary written to ``folder`` (about 520 tokens)."""
    folder.mkdir(parents=True, exist_ok=True)
    chars = _byte_chars()
    tokens = ["<|startoftext|>", "<|endoftext|>", *chars, *(c + "</w>" for c in chars)]
    tokens += ["".join(m.split()) for m in MERGES]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(MERGES) + "\n")
    (folder / "tokenizer_config.json").write_text(json.dumps({"model_max_length": MAX_TOKENS}))
    return CLIPTokenizer.from_pretrained(folder)


def _tiny_unet_blocks() -> dict[str, object]:
    return {"block_out_channels": (8, 16), "layers_per_block": 1, "norm_num_groups": 4}


def sd_pipeline(folder: Path, seed: int = 0, safe: bool = True) -> Path:
    """Write a tiny Stable-Diffusion-shaped pipeline to ``folder``; returns ``folder``."""
    with tempfile.TemporaryDirectory() as vocab:
        tokenizer = tiny_tokenizer(Path(vocab))
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16,
        attention_head_dim=2,
        **_tiny_unet_blocks(),
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16),
        latent_channels=4,
        norm_num_groups=4,
        sample_size=16,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer.get_vocab()),
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=MAX_TOKENS,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        )
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=DDIMScheduler(
            beta_schedule="scaled_linear",
            beta_start=0.00085,
            beta_end=0.012,
            clip_sample=False,
            steps_offset=1,
        ),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder, safe_serialization=safe)
    return folder


def class_pipeline(folder: Path, seed: int = 0, safe: bool = True) -> Path:
    """Write a tiny class-conditional pixel pipeline (1x8x8, :data:`NUM_CLASSES` classes)."""
    torch.manual_seed(seed)
    unet = UNet2DModel(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        num_class_embeds=NUM_CLASSES,
        **_tiny_unet_blocks(),
    )
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=1000)).save_pretrained(
        folder, safe_serialization=safe
    )
    return folder

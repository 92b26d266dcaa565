"""Latent diffusion models: the VAE decoder between the latent chain and the predictor (section 7).

The guided chain of a latent model (Stable Diffusion and its kin) runs on latents z; the predictor
judges images. As in the TFG paper's Stable Diffusion task, log f of a latent is log f of its
decoded image, and its gradient flows back through the decoder:

    log f(z) = log f_pixel(D(z)),   D(z) = vae.decode(z / scaling_factor (+ shift_factor))

:class:`LatentDecoder` is D (in float32, whatever the VAE's dtype), with an optional gradient
checkpointing of the decode (``torch.utils.checkpoint``, ``use_reentrant=False``): its activations
are not kept between the forward and the backward pass but recomputed in the backward (same values,
same gradient, less memory, one more decoder forward per gradient). Where the VAE supports it
(diffusers' ``AutoencoderKL``), the recomputation itself runs block by block with diffusers' own
checkpointing, so that only one decoder block's activations are alive at a time.

The sampler stays latent-agnostic: it samples latents (``clip_x0`` off) with ``decoder.log_f(...)``
as its log f, and the caller decodes the result: :func:`sample_and_decode` is that one path, which
the service's evaluation and :class:`~tfg_search.pipelines.TFGPipeline` both take.

Example:
    >>> import torch
    >>> from diffusers import AutoencoderKL
    >>> vae = AutoencoderKL(block_out_channels=(8,), norm_num_groups=4, latent_channels=4)
    >>> decoder = LatentDecoder(vae, checkpointing=True)
    >>> log_f = decoder.log_f(lambda x: -(x**2).flatten(1).sum(1))   # a predictor on images
    >>> z = torch.randn(2, 4, 8, 8, requires_grad=True)
    >>> tuple(decoder(z).shape), tuple(torch.autograd.grad(log_f(z).sum(), z)[0].shape)
    ((2, 3, 8, 8), (2, 4, 8, 8))
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch.utils.checkpoint import checkpoint

from tfg_search.errors import NonFiniteSampleError
from tfg_search.guidance.conditioning import Conditioning, model_dtype, model_output
from tfg_search.guidance.config import TFGConfig
from tfg_search.guidance.sampler import guided_sample_many


class LatentDecoder(torch.nn.Module):
    """D(z): a diffusers VAE's decoder from the chain's latents to images in [-1, 1] (roughly).

    Args:
        vae: an ``AutoencoderKL`` (or any module with ``decode(z).sample`` and a ``config`` with
            ``scaling_factor``; ``shift_factor`` is applied when set, as diffusers pipelines do).
        checkpointing: recompute the decode in the backward pass instead of keeping its
            activations (same values and gradients, less memory).

    The VAE may be float16 / bfloat16: latents are cast to its dtype and images back, to float32
    (float64 latents give float64 images, for exactness tests).
    """

    def __init__(self, vae: Any, *, checkpointing: bool = False) -> None:
        super().__init__()
        self.vae = vae
        self.checkpointing = bool(checkpointing)
        config = vae.config
        self.scaling_factor = float(config.scaling_factor)
        shift = getattr(config, "shift_factor", None)
        self.shift_factor = None if shift is None else float(shift)

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        return model_output(self.vae.decode(z))

    def _decode_by_blocks(self, z: torch.Tensor) -> torch.Tensor:
        with _blockwise_checkpointing(self.vae):
            return self._decode(z)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Decoded images ``[B, C, H, W]`` of latents ``z`` (float32, or float64 for float64 z)."""
        out_dtype = torch.promote_types(z.dtype, torch.float32)
        z = z / self.scaling_factor
        if self.shift_factor is not None:
            z = z + self.shift_factor
        dtype = model_dtype(self.vae)
        z_in = z if dtype is None else z.to(dtype)
        if self.checkpointing and torch.is_grad_enabled() and z_in.requires_grad:
            x = checkpoint(self._decode_by_blocks, z_in, use_reentrant=False)
        else:
            x = self._decode(z_in)
        return x.to(out_dtype)

    def log_f(self, pixel_log_f: Callable[[torch.Tensor], torch.Tensor]) -> LatentLogF:
        """log f on latents: ``lambda z: pixel_log_f(self(z))`` (a module, so that the sampler
        freezes the VAE, and the predictor when it is a module, for the run)."""
        return LatentLogF(self, pixel_log_f)


class LatentLogF(torch.nn.Module):
    """log f(z) = pixel_log_f(decoder(z)), per sample [B] (see :meth:`LatentDecoder.log_f`)."""

    def __init__(self, decoder: LatentDecoder, pixel_log_f: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.decoder = decoder
        self.pixel_log_f = pixel_log_f

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Per-sample log f of the decoded latents."""
        return self.pixel_log_f(self.decoder(z))


@contextlib.contextmanager
def _blockwise_checkpointing(vae: Any) -> Iterator[None]:
    """The VAE's own per-block gradient checkpointing switched on, then restored (a no-op for
    a VAE that has none)."""
    enable = getattr(vae, "enable_gradient_checkpointing", None)
    if enable is None or getattr(vae, "is_gradient_checkpointing", True):
        yield
        return
    try:
        enable()
    except ValueError:  # diffusers: this model does not support gradient checkpointing
        yield
        return
    try:
        yield
    finally:
        vae.disable_gradient_checkpointing()


def sample_and_decode(
    model: Callable[..., object],
    scheduler: object,
    log_f: Callable[[torch.Tensor], torch.Tensor],
    configs: Sequence[TFGConfig],
    shape: tuple[int, ...],
    generators: Sequence[torch.Generator | None],
    num_inference_steps: int,
    device: torch.device | str | None,
    *,
    conditioning: Conditioning | None = None,
    decoder: LatentDecoder | None = None,
    latents: torch.Tensor | None = None,
) -> tuple[list[torch.Tensor], list[NonFiniteSampleError | None]]:
    """:func:`~tfg_search.guidance.guided_sample_many`, then each configuration's latents decoded
    (no gradient) when a ``decoder`` is given; a configuration that failed keeps its samples
    undecoded. The one sampling path of the evaluation and of the pipeline: the same seed, batch,
    device and dtype give the same images in both."""
    samples, errors = guided_sample_many(
        model,
        scheduler,
        log_f,
        configs,
        shape,
        generators,
        num_inference_steps=num_inference_steps,
        latents=latents,
        device=device,
        conditioning=conditioning,
    )
    if decoder is not None:
        with torch.no_grad():
            samples = [part if err else decoder(part) for part, err in zip(samples, errors, strict=True)]
    return samples, errors

"""An estimate of the peak memory of one guided batch, for refusing absurd batch sizes up front.

Memory, not time, is what limits a guided batch on a GPU: variance guidance keeps the denoiser's
graph (its activations) alive while the predictor's gradient is taken, and a latent model adds its
decoder's. The estimate (docs/algorithm.md, section 7) for a batch of n samples is

    bytes(n) = W + n * (S_den + M * (S_f + S_rec) + S_state)

* W: the bytes of the weights (parameters and buffers) of the denoiser and of log f where it is a
  module (a latent log f holds the VAE);
* S_den: the bytes autograd keeps for the backward of one denoiser call on one sample, both CFG
  branches when ``guidance_scale`` != 1 (measured by a probe: one call on one sample);
* S_f: the same for log f on one sample (a latent model's log f includes its decoder, or, with
  checkpointing, only what the checkpoint keeps), times the M Monte-Carlo copies (``n_mc``);
* S_rec: a checkpointing decoder's activations, which its backward recomputes (measured without
  checkpointing; 0 otherwise);
* S_state: the sampler's own tensors of one sample (x, x0, the gradients, the guidance terms, the
  noise): (12 + 2 M) copies of one sample.

Activations grow linearly with the batch, so one probe of one sample gives every n. What it leaves
out: the transient tensors of a backward pass and of a no-graph forward (rho = 0 counts the graph
anyway), the predictor's weights where log f is a plain function, the framework's workspace and
fragmentation; a checkpointing decoder's recomputation is counted whole although the VAE's own
block checkpointing keeps one block alive at a time. Measured on this project's CPU (growth of the
process's peak RSS over a 2-step guided run, rho = mu = 1): shapes 64 samples 357 MiB against an
estimate of 314, 256 samples 1,422 against 1,257, digits 512 samples 318 against 353: within 15%,
enough to refuse a batch that cannot fit, not a promise that one fits.

Example:
    >>> import torch
    >>> from tfg_search.guidance.config import TFGConfig
    >>> model = torch.nn.Conv2d(1, 1, 3, padding=1)
    >>> est = estimate(lambda x, t: model(x), lambda x: -(x**2).flatten(1).sum(1), TFGConfig(rho=1),
    ...                (1, 8, 8))
    >>> est.bytes(64) > est.bytes(1) > est.weights
    True
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch

from tfg_search.guidance.conditioning import Conditioning, Denoiser
from tfg_search.guidance.config import TFGConfig
from tfg_search.guidance.latent import LatentDecoder
from tfg_search.guidance.sampler import frozen_models

STATE_COPIES = 12
"""Per-sample tensors the guided step holds besides the graphs: x, x_in and its gradient, x0 and its
clamped graph output, the variance term, y and its gradient, eps, x_prev, the DDIM noise and the
re-noising draw (docs/algorithm.md, section 2); the smoothing noise adds 2 per Monte-Carlo copy."""


def _key(t: torch.Tensor) -> tuple[str, int]:
    return (str(t.device), t.untyped_storage().data_ptr())


def _weights(*objects: object) -> dict[tuple[str, int], int]:
    seen: dict[tuple[str, int], int] = {}
    for obj in objects:
        if isinstance(obj, torch.nn.Module):
            for t in (*obj.parameters(), *obj.buffers()):
                seen[_key(t)] = t.untyped_storage().nbytes()
    return seen


def saved_bytes(fn: Callable[..., object], *args: Any, weights_of: tuple[object, ...] = ()) -> int:
    """Bytes autograd keeps for the backward of ``fn(*args)``: the storages of every saved tensor,
    each counted once, but the weights of the modules in ``weights_of`` (counted apart, in W); a
    measurement of the graph's activations (no backward is run).

    Example:
        >>> x = torch.ones(10, requires_grad=True)
        >>> saved_bytes(lambda v: (v * v).sum(), x)   # x * x saves x (once): 10 floats
        40
    """
    skip = _weights(*weights_of)
    storages: dict[tuple[str, int], int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if _key(t) not in skip:
            storages[_key(t)] = t.untyped_storage().nbytes()
        return t

    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(*args)
    return sum(storages.values())


def weight_bytes(*objects: object) -> int:
    """Bytes of the parameters and buffers of the modules among ``objects`` (shared ones once)."""
    return sum(_weights(*objects).values())


@dataclass(frozen=True)
class MemoryEstimate:
    """The terms of the estimate (bytes; per-sample terms for one sample), see the module doc.

    Attributes:
        weights: W.
        denoiser: S_den (both CFG branches when they run).
        log_f: M * S_f.
        recompute: M * S_rec.
        state: S_state.
    """

    weights: int
    denoiser: int
    log_f: int
    recompute: int
    state: int

    @property
    def per_sample(self) -> int:
        """Bytes each further sample adds."""
        return self.denoiser + self.log_f + self.recompute + self.state

    def bytes(self, n_samples: int) -> int:
        """The estimated peak of a batch of ``n_samples`` samples."""
        return self.weights + n_samples * self.per_sample

    def of(self, config: TFGConfig) -> MemoryEstimate:
        """The estimate of ``config``: without log f's graph (and its recomputation) when no TFG
        term is on (rho = mu = 0: the sampler never calls log f). The denoiser's term stays: its
        graph when rho > 0, else a bound of the forward pass's own activations."""
        if config.rho > 0 or config.mu > 0:
            return self
        return replace(self, log_f=0, recompute=0)


def estimate(
    model: Callable[..., object],
    log_f: Callable[[torch.Tensor], torch.Tensor],
    config: TFGConfig,
    sample_shape: tuple[int, ...],
    *,
    conditioning: Conditioning | None = None,
    decoder: LatentDecoder | None = None,
    timestep: int = 500,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> MemoryEstimate:
    """Probe the models on one sample and return the terms of the estimate (module doc).

    Args:
        model: the denoiser, as :func:`~tfg_search.guidance.guided_sample` takes it.
        log_f: the guiding log f (on latents for a latent model).
        config: the configuration (its ``guidance_scale`` and ``n_mc`` matter).
        sample_shape: one sample's shape (a latent's for a latent model).
        conditioning: the denoiser's condition (its branches are probed).
        decoder: a latent model's decoder; with checkpointing its recomputation is added.
        timestep: the timestep of the probe call (memory does not depend on it).
        device, dtype: where and in which dtype the sampler runs.
    """
    dev = torch.device(device)
    x = torch.zeros(1, *sample_shape, device=dev, dtype=dtype, requires_grad=True)
    t = torch.tensor(timestep, dtype=torch.long, device=dev)
    denoiser = Denoiser(model, conditioning, [config.guidance_scale], 1, dev)
    modules = (model, log_f, decoder)
    with frozen_models(*modules):
        s_den = saved_bytes(denoiser, x, t, weights_of=modules)
        s_f = saved_bytes(log_f, x, weights_of=modules)
        s_rec = 0
        if decoder is not None and decoder.checkpointing:
            s_rec = saved_bytes(LatentDecoder(decoder.vae), x, weights_of=modules)
    return MemoryEstimate(
        weights=weight_bytes(*modules),
        denoiser=s_den,
        log_f=config.n_mc * s_f,
        recompute=config.n_mc * s_rec,
        state=(STATE_COPIES + 2 * config.n_mc) * x.numel() * x.element_size(),
    )

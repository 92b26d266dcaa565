"""Conditional denoisers and classifier-free guidance (docs/algorithm.md, section 7). Pure torch, no I/O.

A conditional diffusers model takes its condition as keyword arguments of its call:
``UNet2DModel(num_class_embeds=...)`` as ``class_labels``, ``UNet2DConditionModel`` as
``encoder_hidden_states`` (a text encoder's output). :class:`Conditioning` holds them for the
conditional branch and, for classifier-free guidance (CFG), the unconditional one (the null class,
the empty prompt's embedding). :class:`Denoiser` is the one model call of the sampler: it runs both
branches in one batch, unconditional first, as diffusers pipelines concatenate them, and combines
the raw outputs (eps or v, before Tweedie) as diffusers pipelines do::

    out = out_u + w (out_c - out_u)

with a weight w per sample, so that configurations of different ``guidance_scale`` share a batch;
samples with w = 1 run the conditional branch alone (no unconditional pass, as diffusers pipelines
skip it for guidance_scale <= 1). The model runs in its own dtype (float16 / bfloat16 on a GPU):
its input is cast to that dtype and its output back, so the guidance arithmetic stays in the
sampler's dtype (float32, or float64 in tests).

Example:
    >>> import torch
    >>> model = lambda x, t, class_labels: x * class_labels.reshape(-1, 1).to(x.dtype)
    >>> cond = Conditioning({"class_labels": torch.tensor([2])}, {"class_labels": torch.tensor([0])})
    >>> call = Denoiser(model, cond, scales=[3.0], n=2, device=torch.device("cpu"))
    >>> call(torch.ones(2, 1), torch.tensor(5)).flatten().tolist()   # 0 + 3 * (2 - 0)
    [6.0, 6.0]
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class Conditioning:
    """Keyword arguments of the denoiser call ``model(x, t, **kwargs)``, per branch.

    Each value is a tensor whose first (batch) dimension is 1 (the same condition for every sample)
    or the per-configuration batch n (one condition per sample; repeated for each configuration of
    a batch). Both branches must name the same keywords.

    Attributes:
        cond: the conditional branch, e.g. ``{"class_labels": torch.tensor([c])}`` or
            ``{"encoder_hidden_states": emb_c}`` with emb of shape [1, L, D].
        uncond: the unconditional branch (the null class, the empty prompt's embedding); required
            when a configuration has ``guidance_scale`` != 1.

    Example:
        >>> c = Conditioning({"class_labels": torch.tensor([3])}, {"class_labels": torch.tensor([9])})
        >>> c.keys, c.has_uncond
        (('class_labels',), True)
    """

    cond: Mapping[str, torch.Tensor] = field(default_factory=dict)
    uncond: Mapping[str, torch.Tensor] | None = None

    def __post_init__(self) -> None:
        if self.uncond is not None and set(self.uncond) != set(self.cond):
            raise ValueError(
                "Conditioning: the conditional and unconditional branches must name the same "
                f"keywords, got {sorted(self.cond)} and {sorted(self.uncond)}"
            )
        for branch in (self.cond, self.uncond or {}):
            for key, value in branch.items():
                if not isinstance(value, torch.Tensor) or value.dim() == 0:
                    raise ValueError(
                        f"Conditioning: {key!r} must be a tensor with a batch dimension (1 or the "
                        f"batch size), got {type(value).__name__}"
                        + (" of no dimension" if isinstance(value, torch.Tensor) else "")
                    )

    @property
    def keys(self) -> tuple[str, ...]:
        """The keyword names passed to the denoiser."""
        return tuple(sorted(self.cond))

    @property
    def has_uncond(self) -> bool:
        """Whether classifier-free guidance is possible (an unconditional branch is given)."""
        return self.uncond is not None


def model_dtype(model: object) -> torch.dtype | None:
    """The dtype of a module's first floating parameter (None for a plain callable or no parameter)."""
    if isinstance(model, torch.nn.Module):
        for p in model.parameters():
            if p.is_floating_point():
                return p.dtype
    return None


def model_output(out: object) -> torch.Tensor:
    """The tensor of a model call: diffusers' ``.sample``, a tuple's first item, or the tensor."""
    if hasattr(out, "sample"):
        return out.sample
    if isinstance(out, (tuple, list)):
        return out[0]
    return out  # type: ignore[return-value]


def _per_sample_rows(key: str, value: torch.Tensor, n: int, chunks: int) -> torch.Tensor:
    """``value`` as one row per sample of a batch of ``chunks`` configurations of ``n`` samples."""
    rows = value.shape[0]
    if rows == 1:
        return value.expand(n * chunks, *value.shape[1:])
    if rows == n:
        return value.repeat(chunks, *([1] * (value.dim() - 1)))
    raise ValueError(
        f"Conditioning: {key!r} has batch dimension {rows}; give 1 (one condition for all) or {n} "
        "(one per sample of a configuration)"
    )


class Denoiser:
    """The sampler's denoiser call: conditioning, classifier-free guidance, the model's dtype.

    The batch is ``len(scales)`` configurations of ``n`` samples each; ``scales[j]`` is the CFG
    weight of configuration j. Calling it with (x [B, ...], t) returns the CFG-combined output in
    x's dtype, with a graph through both branches when x requires grad (variance guidance).

    Raises:
        ValueError: a weight != 1 without an unconditional branch, or a conditioning tensor whose
            batch dimension is neither 1 nor n.
    """

    def __init__(
        self,
        model: Callable[..., object],
        conditioning: Conditioning | None,
        scales: Sequence[float],
        n: int,
        device: torch.device,
    ) -> None:
        self.model = model
        self.dtype = model_dtype(model)
        conditioning = conditioning or Conditioning()
        guided = [j for j, w in enumerate(scales) if w != 1]
        if guided and not conditioning.has_uncond:
            raise ValueError(
                f"guidance_scale {scales[guided[0]]} needs an unconditional branch: give "
                "conditioning=Conditioning(cond, uncond), or use guidance_scale 1"
            )
        batch = n * len(scales)
        self.cond = self._prepared(conditioning.cond, n, len(scales), device)
        # Rows of the batch that run the unconditional branch too (those with w != 1), as indices.
        rows = [j * n + i for j in guided for i in range(n)]
        self.all_guided = len(rows) == batch
        self.rows = None if self.all_guided else torch.tensor(rows, dtype=torch.long, device=device)
        self.uncond: dict[str, torch.Tensor] = {}
        self.scale: torch.Tensor | None = None
        if rows:
            uncond = self._prepared(conditioning.uncond or {}, n, len(scales), device)
            self.uncond = {k: v if self.all_guided else v[self.rows] for k, v in uncond.items()}
            weights = [float(scales[r // n]) for r in rows]
            self.scale = torch.tensor(weights, dtype=torch.float64, device=device)

    def _prepared(
        self, kwargs: Mapping[str, torch.Tensor], n: int, chunks: int, device: torch.device
    ) -> dict[str, torch.Tensor]:
        out = {}
        for key, value in kwargs.items():
            value = value.to(device)
            if self.dtype is not None and value.is_floating_point():
                value = value.to(self.dtype)  # e.g. text embeddings for a float16 UNet
            out[key] = _per_sample_rows(key, value, n, chunks)
        return out

    def _call(self, x: torch.Tensor, t: torch.Tensor, kwargs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        x_in = x if self.dtype is None else x.to(self.dtype)
        out = model_output(self.model(x_in, t.expand(x.shape[0]), **kwargs))
        return out.to(x.dtype)

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The (CFG-combined) model output at x_t, t (a 0-dim or [B] long tensor)."""
        if self.scale is None:
            return self._call(x, t, self.cond)
        x_u = x if self.all_guided else x[self.rows]
        g = x_u.shape[0]
        kwargs = {k: torch.cat([self.uncond[k], self.cond[k]]) for k in self.cond}
        both = self._call(torch.cat([x_u, x]), t, kwargs)
        out_u, out_c = both[:g], both[g:]
        w = self.scale.to(x.dtype).reshape(-1, *([1] * (x.dim() - 1)))
        c = out_c if self.all_guided else out_c[self.rows]
        combined = out_u + w * (c - out_u)
        return combined if self.all_guided else out_c.index_copy(0, self.rows, combined)

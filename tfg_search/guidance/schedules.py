"""Per-step strengths of TFG (docs/algorithm.md, section 3): pure functions of the noise schedule.

The K inference steps run from noisiest (i = 0) to cleanest (i = K - 1). ``alphas_cumprod`` holds
a_i = abar at step i, ``alphas_cumprod_prev`` holds a'_i = abar at the next, less noisy step, and
alpha_i = a_i / a'_i.

Example:
    >>> import torch
    >>> from tfg_search.guidance.schedules import strength_schedule
    >>> a = torch.tensor([0.1, 0.5, 0.9]); a_prev = torch.tensor([0.5, 0.9, 1.0])
    >>> rho = strength_schedule("increase", 2.0, a, a_prev)
    >>> round(float(rho.mean()), 6)
    2.0
"""

from __future__ import annotations

import torch

from tfg_search.guidance.config import STRUCTURES


def _check_structure(structure: str) -> None:
    if structure not in STRUCTURES:
        raise ValueError(f"schedule structure must be one of {', '.join(STRUCTURES)}, got {structure!r}")


def strength_schedule(
    structure: str,
    mean: float | torch.Tensor,
    alphas_cumprod: torch.Tensor,
    alphas_cumprod_prev: torch.Tensor,
) -> torch.Tensor:
    """rho_i or mu_i over the K steps: ``mean * w_i * K / sum_j w_j`` (their mean is ``mean``).

    Raw weights: increase w_i = alpha_i (grows as the noise vanishes), decrease w_i = 1 - alpha_i,
    constant w_i = 1, where alpha_i = a_i / a'_i.

    Args:
        structure: "increase", "decrease" or "constant".
        mean: the searched scalar; a tensor of shape [B] gives one schedule per sample.
        alphas_cumprod: a_i, shape [K].
        alphas_cumprod_prev: a'_i, shape [K].

    Returns:
        Shape [K], or [K, B] when ``mean`` has shape [B].
    """
    _check_structure(structure)
    alpha = alphas_cumprod / alphas_cumprod_prev
    if structure == "increase":
        w = alpha
    elif structure == "decrease":
        w = 1.0 - alpha
    else:
        w = torch.ones_like(alpha)
    total = w.sum()
    normalised = w * (w.numel() / total) if total > 0 else torch.zeros_like(w)
    mean_t = torch.as_tensor(mean, dtype=normalised.dtype, device=normalised.device)
    return normalised * mean_t if mean_t.dim() == 0 else normalised[:, None] * mean_t[None, :]


def noise_schedule(structure: str, scale: float | torch.Tensor, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """sigma_i, the smoothing std of the implicit dynamics (not normalised).

    decrease: gamma * sqrt(1 - a_i) (reference default); constant: gamma;
    increase: gamma * sqrt(a_i) (this project's mirror of decrease).

    Returns:
        Shape [K], or [K, B] when ``scale`` has shape [B].
    """
    _check_structure(structure)
    if structure == "decrease":
        w = torch.sqrt(1.0 - alphas_cumprod)
    elif structure == "increase":
        w = torch.sqrt(alphas_cumprod)
    else:
        w = torch.ones_like(alphas_cumprod)
    scale_t = torch.as_tensor(scale, dtype=w.dtype, device=w.device)
    return w * scale_t if scale_t.dim() == 0 else w[:, None] * scale_t[None, :]

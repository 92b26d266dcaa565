"""Model passes of a guided run: the compute it cannot avoid (docs/algorithm.md, section 2). Torch-free.

A search's budget is counted in these passes: per trial, :func:`pass_counts` of its configuration
and steps, times its samples (:func:`sample_passes`), summed over the trials (stored with each
trial's record, reported by ``tfg-search best --json`` and the search summary).

Example:
    >>> from tfg_search.guidance.config import TFGConfig
    >>> sample_passes(TFGConfig(rho=1, mu=1, n_iter=4), steps=50, samples=64)
    {'denoiser': 3200, 'denoiser_backward': 3200, 'predictor': 12800}
"""

from __future__ import annotations

from dataclasses import dataclass

from tfg_search.guidance.config import TFGConfig

PASS_KINDS = ("denoiser", "denoiser_backward", "predictor")
"""What :func:`sample_passes` counts: denoiser forward passes (with or without a backward),
the backward passes among them (rho > 0), predictor forward + backward (gradient) passes."""


@dataclass(frozen=True)
class PassCounts:
    """Model passes of one guided run: the compute it cannot avoid.

    Attributes:
        unet_forward: denoiser forward passes without a graph (rho_i = 0).
        unet_forward_backward: denoiser forward + backward passes (rho_i > 0).
        predictor_forward_backward: log f forward + backward passes, each on a batch of B samples
            (M Monte-Carlo copies count M times).
    """

    unet_forward: int
    unet_forward_backward: int
    predictor_forward_backward: int


def pass_counts(config: TFGConfig, num_inference_steps: int, this_implementation: bool = True) -> PassCounts:
    """The passes a run of ``config`` needs (strengths are > 0 on every step when > 0 at all).

    The floor of docs/algorithm.md, section 2, is n_recur x (UNet forward, + backward when
    rho > 0) plus n_recur x M x (1[rho > 0] + n_iter x 1[mu > 0]) predictor passes per step. This
    implementation lowers it: with both terms on, the gradient of the variance term at x0 is also the first
    mean-guidance step, so it needs n_recur x M x (1 + n_iter - 1) predictor passes
    (``this_implementation=False`` gives the paper's floor).

    Example:
        >>> pass_counts(TFGConfig(rho=1, mu=1, n_iter=4), 50).predictor_forward_backward
        200
        >>> paper = pass_counts(TFGConfig(rho=1, mu=1, n_iter=4), 50, this_implementation=False)
        >>> paper.predictor_forward_backward
        250
    """
    var = config.rho > 0
    mean = config.mu > 0 and config.n_iter > 0
    per_round = int(var) + (config.n_iter if mean else 0)
    if this_implementation and var and mean:
        per_round -= 1
    rounds = config.n_recur * num_inference_steps
    return PassCounts(
        unet_forward=0 if var else rounds,
        unet_forward_backward=rounds if var else 0,
        predictor_forward_backward=rounds * config.n_mc * per_round,
    )


def sample_passes(config: TFGConfig, steps: int, samples: int) -> dict[str, int]:
    """The passes of one evaluation of ``samples`` samples, each counted per sample: a trial with
    n_recur 2 costs twice one with n_recur 1, a 512-sample trial 8x a 64-sample one."""
    p = pass_counts(config, steps)
    return {
        "denoiser": (p.unet_forward + p.unet_forward_backward) * samples,
        "denoiser_backward": p.unet_forward_backward * samples,
        "predictor": p.predictor_forward_backward * samples,
    }

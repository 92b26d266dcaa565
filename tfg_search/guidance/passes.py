"""Model passes of a guided run: the compute it cannot avoid (docs/algorithm.md, sections 2, 7). Torch-free.

A search's budget is counted in these passes: per trial, :func:`pass_counts` of its configuration
and steps, times its samples (:func:`sample_passes`), summed over the trials (stored with each
trial's record, reported by ``tfg-search best --json`` and the search summary). Every count is per
sample: a denoiser pass is one sample through the denoiser, so classifier-free guidance
(``guidance_scale`` != 1) counts its two branches as two passes; a latent model (``decoder=True``)
adds its VAE decoder's passes. :func:`best_of_n_passes` counts the baseline that draws N unguided
candidates per kept sample and keeps the one the predictor likes best.

Example:
    >>> from tfg_search.guidance.config import TFGConfig
    >>> sample_passes(TFGConfig(rho=1, mu=1, n_iter=4), steps=50, samples=64)
    {'denoiser': 3200, 'denoiser_backward': 3200, 'predictor': 12800}
    >>> sample_passes(TFGConfig(mu=1, n_iter=1, guidance_scale=3), steps=50, samples=1, decoder=True)
    {'denoiser': 100, 'denoiser_backward': 0, 'predictor': 50, 'decoder': 51, 'decoder_backward': 50}
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from tfg_search.guidance.config import TFGConfig

PASS_KINDS = ("denoiser", "denoiser_backward", "predictor")
"""What :func:`sample_passes` counts for every model: denoiser forward passes (with or without a
backward; both CFG branches count), the backward passes among them (rho > 0), predictor forward +
backward (gradient) passes."""
DECODER_PASS_KINDS = ("decoder", "decoder_backward")
"""What a latent model adds (``decoder=True``): VAE decoder forward passes (each predictor pass on a
latent decodes it first, and each kept sample is decoded once at the end) and the backward passes
among them (the predictor's gradient flows back through the decoder)."""
ALL_PASS_KINDS = PASS_KINDS + DECODER_PASS_KINDS


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


def cfg_branches(config: TFGConfig) -> int:
    """Denoiser branches per sample and call: 2 with classifier-free guidance (the unconditional and
    the conditional branch in one batch), 1 at ``guidance_scale`` 1 (the conditional model alone).

    Example:
        >>> cfg_branches(TFGConfig()), cfg_branches(TFGConfig(guidance_scale=0.0))
        (1, 2)
    """
    return 1 if config.guidance_scale == 1 else 2


def sample_passes(config: TFGConfig, steps: int, samples: int, *, decoder: bool = False) -> dict[str, int]:
    """The passes of one evaluation of ``samples`` samples, each counted per sample: a trial with
    n_recur 2 costs twice one with n_recur 1, a 512-sample trial 8x a 64-sample one, and CFG counts
    both branches of each denoiser call.

    With ``decoder`` (a latent model) the keys ``decoder`` and ``decoder_backward`` are added: each
    predictor pass on a latent is a decoder forward + backward, and each sample is decoded once more
    at the end (for the evaluator). Without it the dict has the three :data:`PASS_KINDS`, as stored
    by every earlier version.

    Example:
        >>> sample_passes(TFGConfig(rho=1, guidance_scale=2), steps=10, samples=4)
        {'denoiser': 80, 'denoiser_backward': 80, 'predictor': 40}
    """
    p = pass_counts(config, steps)
    branches = cfg_branches(config)
    passes = {
        "denoiser": (p.unet_forward + p.unet_forward_backward) * branches * samples,
        "denoiser_backward": p.unet_forward_backward * branches * samples,
        "predictor": p.predictor_forward_backward * samples,
    }
    if decoder:
        passes["decoder"] = passes["predictor"] + samples
        passes["decoder_backward"] = passes["predictor"]
    return passes


def best_of_n_passes(
    config: TFGConfig, steps: int, n: int, samples: int, *, decoder: bool = False
) -> dict[str, int]:
    """The passes of best-of-N selection: for each of ``samples`` kept samples, draw ``n``
    candidates with the config's CFG (``guidance_scale``, its branches counted) and no TFG (one
    denoiser forward per step, no recurrence, no gradient), decode each (latent models) and score
    each once with the predictor, forward only; keep the best.

    The predictor and decoder passes here are forward passes without a backward, cheaper than the
    forward + backward passes of :func:`sample_passes`; both are counted as passes.

    Example:
        >>> best_of_n_passes(TFGConfig(guidance_scale=3), steps=50, n=8, samples=1, decoder=True)
        {'denoiser': 800, 'denoiser_backward': 0, 'predictor': 8, 'decoder': 8, 'decoder_backward': 0}
    """
    if n < 1:
        raise ValueError(f"best-of-N needs n >= 1 candidates per sample, got {n}")
    candidates = n * samples
    passes = {
        "denoiser": steps * cfg_branches(config) * candidates,
        "denoiser_backward": 0,
        "predictor": candidates,
    }
    if decoder:
        passes.update(decoder=candidates, decoder_backward=0)
    return passes


def read_passes(stored: Mapping[str, Any]) -> dict[str, int]:
    """A stored passes dict as this version counts them: the three :data:`PASS_KINDS` always (a kind
    missing in an older record is 0), the decoder kinds where the record has them.

    Example:
        >>> read_passes({"denoiser": 10, "predictor": 5})
        {'denoiser': 10, 'denoiser_backward': 0, 'predictor': 5}
        >>> read_passes({"denoiser": 1, "denoiser_backward": 0, "predictor": 2, "decoder": 3})
        {'denoiser': 1, 'denoiser_backward': 0, 'predictor': 2, 'decoder': 3, 'decoder_backward': 0}
    """
    kinds = ALL_PASS_KINDS if any(k in stored for k in DECODER_PASS_KINDS) else PASS_KINDS
    return {kind: int(stored.get(kind, 0) or 0) for kind in kinds}


def total_passes(spent: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """The sum of several passes dicts (:func:`read_passes` each): the three :data:`PASS_KINDS`
    always, the decoder kinds when any of them has one.

    Example:
        >>> total_passes([{"denoiser": 2, "predictor": 1}, {"denoiser": 3, "decoder": 4}])
        {'denoiser': 5, 'denoiser_backward': 0, 'predictor': 1, 'decoder': 4, 'decoder_backward': 0}
    """
    total = dict.fromkeys(PASS_KINDS, 0)
    for one in spent:
        for kind, value in read_passes(one).items():
            total[kind] = total.get(kind, 0) + value
    if any(k in total for k in DECODER_PASS_KINDS):
        total = {kind: total.get(kind, 0) for kind in ALL_PASS_KINDS}
    return total

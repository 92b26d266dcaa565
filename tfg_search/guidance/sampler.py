"""The TFG guided sampler (docs/algorithm.md, section 2) over a diffusers DDIM chain. Pure torch, no I/O.

One guided step, all four mechanisms, for step i with a_i, a'_i and alpha_i = a_i / a'_i::

    repeat n_recur times:                                 # recurrence
        E = {sigma_i z_k, k = 1..M}                       # implicit dynamics: smoothed log f
        x0 = clamp(Tweedie(x))                            # graph through eps_theta when rho_i > 0
        d_var = rho_i * grad_x sum_b Lt(x0_b)             # variance guidance
        y = x0; repeat n_iter: y += mu_i grad_y sum_b Lt(y_b)
        d_mean = y - x0                                   # mean guidance
        x_prev = DDIM(eta) step from the un-guided x0 and its eps
        x_prev += d_var / sqrt(alpha_i) + sqrt(a'_i) d_mean
        x = sqrt(alpha_i) x_prev + sqrt(1 - alpha_i) z''  # re-noise (not after the last round)

Random draws depend only on the structure of a run (shape, steps, n_recur, n_mc, eta and whether
gamma > 0), never on the strengths, so runs that differ only in rho / mu / gamma values (or in the
CFG weight) share their noise; several configurations can run in one batch with one generator each
and give the samples each would give alone (:func:`guided_sample_many`).

The model call is :class:`~tfg_search.guidance.conditioning.Denoiser`: a conditional model's
condition and classifier-free guidance, in the model's own dtype (docs/algorithm.md, section 7);
TFG acts on its CFG-combined output.

Example:
    >>> import torch
    >>> from diffusers import DDIMScheduler
    >>> from tfg_search import TFGConfig, guided_sample
    >>> eps_model = lambda x, t: 0.1 * x                       # any callable (x, t) -> eps
    >>> log_f = lambda x: -((x - 0.5) ** 2).flatten(1).sum(1)  # per-sample log-likelihood [B]
    >>> x = guided_sample(eps_model, DDIMScheduler(), log_f, TFGConfig(rho=1.0, mu=1.0),
    ...                   (4, 2), num_inference_steps=10, generator=torch.Generator().manual_seed(0))
    >>> tuple(x.shape)
    (4, 2)
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from tfg_search.errors import NonFiniteSampleError
from tfg_search.guidance.conditioning import Conditioning, Denoiser, model_dtype
from tfg_search.guidance.config import TFGConfig
from tfg_search.guidance.passes import PassCounts, pass_counts  # noqa: F401 - re-exported
from tfg_search.guidance.schedules import noise_schedule, strength_schedule

LogF = Callable[[torch.Tensor], torch.Tensor]
"""A batch of clean samples [B, ...] -> per-sample log-likelihood [B], differentiable."""


@dataclass(frozen=True)
class Chain:
    """The K respaced steps of a DDIM scheduler, noisiest first.

    Attributes:
        timesteps: model timesteps t_i, shape [K], long.
        alphas_cumprod: a_i, shape [K].
        alphas_cumprod_prev: a'_i (the next, less noisy step; the scheduler's final value last).
        prediction_type: what the model predicts (the scheduler's ``prediction_type``):
            ``"epsilon"`` (the noise), ``"v_prediction"`` (v = sqrt(a) eps - sqrt(1 - a) x0) or
            ``"sample"`` (x0); :func:`tweedie` turns each into the clean estimate.
    """

    timesteps: torch.Tensor
    alphas_cumprod: torch.Tensor
    alphas_cumprod_prev: torch.Tensor
    prediction_type: str = "epsilon"

    def __len__(self) -> int:
        return int(self.timesteps.numel())


def ddim_chain(
    scheduler: object,
    num_inference_steps: int,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Chain:
    """The chain a diffusers ``DDIMScheduler`` samples with ``num_inference_steps`` steps.

    The user's scheduler is not modified (a copy from its config is set up). a'_i follows
    ``DDIMScheduler.step``: abar at ``t_i - num_train_timesteps // K``, or ``final_alpha_cumprod``.
    """
    if num_inference_steps < 1:
        raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
    from_config = getattr(type(scheduler), "from_config", None)
    if from_config is None or not hasattr(scheduler, "alphas_cumprod"):
        raise TypeError("scheduler must be a diffusers DDIMScheduler (or compatible) instance")
    sched = from_config(scheduler.config)
    sched.set_timesteps(num_inference_steps)
    timesteps = sched.timesteps.to(torch.long)
    acp = sched.alphas_cumprod.to(torch.float64)
    prev_t = timesteps - sched.config.num_train_timesteps // num_inference_steps
    final = torch.as_tensor(sched.final_alpha_cumprod, dtype=torch.float64)
    a = acp[timesteps]
    a_prev = torch.where(prev_t >= 0, acp[prev_t.clamp(min=0)], final)
    prediction = str(getattr(sched.config, "prediction_type", "epsilon"))
    if prediction not in PREDICTION_TYPES:
        raise ValueError(f"prediction_type {prediction!r} is not supported; supported: {PREDICTION_TYPES}")
    return Chain(
        timesteps=timesteps.to(device),
        alphas_cumprod=a.to(device=device, dtype=dtype),
        alphas_cumprod_prev=a_prev.to(device=device, dtype=dtype),
        prediction_type=prediction,
    )


PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
"""What a diffusers model may predict (its scheduler's ``prediction_type``)."""


def tweedie(output: torch.Tensor, x: torch.Tensor, a: torch.Tensor, prediction_type: str) -> torch.Tensor:
    """The clean estimate x0(x_t) from the model's output at a step with abar = ``a``.

    epsilon: x0 = (x - sqrt(1 - a) eps) / sqrt(a); v_prediction: x0 = sqrt(a) x - sqrt(1 - a) v;
    sample: x0 is the output.

    Example:
        >>> x, a = torch.ones(1, 2), torch.tensor(0.25)
        >>> tweedie(torch.zeros(1, 2), x, a, "epsilon").tolist(), tweedie(x, x, a, "sample").tolist()
        ([[2.0, 2.0]], [[1.0, 1.0]])
    """
    if prediction_type == "epsilon":
        return (x - (1 - a).sqrt() * output) / a.sqrt()
    if prediction_type == "v_prediction":
        return a.sqrt() * x - (1 - a).sqrt() * output
    return output


class _Noise:
    """Gaussian draws for a batch made of chunks, each chunk with its own generator.

    A chunk draws exactly what it would draw alone, so a batch of several runs reproduces each run.
    """

    def __init__(
        self,
        chunks: Sequence[tuple[torch.Generator | None, int]],
        device: torch.device,
        dtype: torch.dtype,
    ) -> None:
        self.chunks = list(chunks)
        self.device = device
        self.dtype = dtype

    def randn(
        self, shape: tuple[int, ...], lead: tuple[int, ...] = (), use: Sequence[bool] | None = None
    ) -> torch.Tensor:
        """Draws of shape (*lead, B, *shape); chunks with ``use`` False get zeros and draw nothing."""
        parts = []
        for j, (gen, n) in enumerate(self.chunks):
            size = (*lead, n, *shape)
            if use is not None and not use[j]:
                parts.append(torch.zeros(size, device=self.device, dtype=self.dtype))
                continue
            gen_device = gen.device if gen is not None else self.device
            z = torch.randn(size, generator=gen, device=gen_device, dtype=self.dtype)
            parts.append(z.to(self.device))
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=len(lead))


@contextlib.contextmanager
def frozen_models(*objects: object) -> Iterator[None]:
    """Modules in eval mode with parameters that do not require grad, restored afterwards."""
    saved: list[tuple[torch.nn.Module, bool, list[tuple[torch.nn.Parameter, bool]]]] = []
    for obj in objects:
        if isinstance(obj, torch.nn.Module):
            params = [(p, p.requires_grad) for p in obj.parameters()]
            saved.append((obj, obj.training, params))
            obj.eval()
            for p, _ in params:
                p.requires_grad_(False)
    try:
        yield
    finally:
        for module, training, params in saved:
            module.train(training)
            for p, flag in params:
                p.requires_grad_(flag)


def _smoothed(log_f: LogF, y: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
    """Lt(y) = logsumexp_k log f(y + E_k) - log M, per sample [B] (plain log f when M = 1, E = 0)."""
    if noise is None:
        return log_f(y)
    m, b = noise.shape[0], noise.shape[1]
    values = log_f((y.unsqueeze(0) + noise).reshape(m * b, *y.shape[1:])).reshape(m, b)
    return values[0] if m == 1 else torch.logsumexp(values, dim=0) - math.log(m)


def _per_sample(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return v.reshape(-1, *([1] * (x.dim() - 1)))


@dataclass(frozen=True)
class Structure:
    """What configurations must share to be sampled in one batch: everything but the strengths,
    their schedule structures and the CFG weight (hashable; random draws depend on nothing else).

    Example:
        >>> Structure.of(TFGConfig(rho=1.0)) == Structure.of(TFGConfig(rho=2.0, mu=0.5))
        True
    """

    n_recur: int
    n_iter: int
    n_mc: int
    eta: float
    clip_x0: bool

    @classmethod
    def of(cls, config: TFGConfig) -> Structure:
        """The structure of one configuration."""
        return cls(config.n_recur, config.n_iter, config.n_mc, config.eta, config.clip_x0)


def _run(
    model: Denoiser,
    chain: Chain,
    log_f: LogF,
    structure: Structure,
    rho: torch.Tensor,
    mu: torch.Tensor,
    sigma: torch.Tensor,
    smooth: Sequence[bool],
    x: torch.Tensor,
    noise: _Noise,
    stop_on_nonfinite: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The guided chain. rho, mu, sigma: per step and sample [K, B]. Returns (x_0, bad_step [B]).

    bad_step is -1 for a finite sample, else the step at which it first became non-finite (the
    sample is then zeroed so that it cannot disturb the others, and reported).
    """
    batch, shape = x.shape[0], tuple(x.shape[1:])
    any_smooth = any(smooth)
    bad_step = torch.full((batch,), -1, dtype=torch.long, device=x.device)
    k_steps = len(chain)
    for i in range(k_steps):
        t = chain.timesteps[i]
        a, a_prev = chain.alphas_cumprod[i], chain.alphas_cumprod_prev[i]
        alpha = a / a_prev
        sqrt_a, sqrt_1ma = a.sqrt(), (1 - a).sqrt()
        rho_i, mu_i = _per_sample(rho[i], x), _per_sample(mu[i], x)
        use_var = bool((rho[i] > 0).any())
        use_mean = structure.n_iter > 0 and bool((mu[i] > 0).any())
        # DDIM(eta) noise scale s (docs/algorithm.md, section 2); no noise on the last step.
        s = structure.eta * torch.sqrt((1 - a_prev) / (1 - a) * (1 - alpha))
        last_step = i == k_steps - 1
        for r in range(structure.n_recur):
            e = None
            if any_smooth:
                z = noise.randn(shape, lead=(structure.n_mc,), use=smooth)
                e = z * _per_sample(sigma[i], x).unsqueeze(0)
            # Tweedie estimate x0 = (x - sqrt(1 - a) eps) / sqrt(a), with its graph when rho_i > 0.
            with torch.enable_grad() if use_var else torch.no_grad():
                x_in = x.detach().requires_grad_(use_var)
                x0_graph = tweedie(model(x_in, t), x_in, a, chain.prediction_type)
                if structure.clip_x0:
                    x0_graph = x0_graph.clamp(-1.0, 1.0)
            x0 = x0_graph.detach()
            grad_at_x0 = None
            if use_var:
                # Variance guidance, d_var = rho_i * grad_x Lt(x0(x)) = rho_i * J^T g with
                # g = grad Lt at x0: g is taken first, so that it can also serve as the first
                # mean-guidance step below (same point, same E): one predictor pass fewer.
                with torch.enable_grad():
                    x0_leaf = x0.requires_grad_(True)
                    (grad_at_x0,) = torch.autograd.grad(_smoothed(log_f, x0_leaf, e).sum(), x0_leaf)
                    (grad_x,) = torch.autograd.grad(x0_graph, x_in, grad_outputs=grad_at_x0)
                x0 = x0.detach()
                d_var = rho_i * grad_x
            del x0_graph, x_in
            # Mean guidance: n_iter gradient steps on y, starting at x0, with eps held fixed.
            d_mean = None
            if use_mean:
                y = x0
                for it in range(structure.n_iter):
                    if it == 0 and grad_at_x0 is not None:
                        grad_y = grad_at_x0
                    else:
                        with torch.enable_grad():
                            y_in = y.detach().requires_grad_(True)
                            (grad_y,) = torch.autograd.grad(_smoothed(log_f, y_in, e).sum(), y_in)
                    y = y + mu_i * grad_y
                d_mean = y - x0
            with torch.no_grad():
                eps = (x - sqrt_a * x0) / sqrt_1ma
                x_prev = a_prev.sqrt() * x0 + torch.sqrt(1 - a_prev - s**2) * eps
                if not last_step and s > 0:
                    x_prev = x_prev + s * noise.randn(shape)
                if use_var:
                    x_prev = x_prev + d_var / alpha.sqrt()
                if d_mean is not None:
                    x_prev = x_prev + a_prev.sqrt() * d_mean
                if r < structure.n_recur - 1:
                    x = alpha.sqrt() * x_prev + (1 - alpha).sqrt() * noise.randn(shape)
        with torch.no_grad():
            x = x_prev
            finite = torch.isfinite(x.reshape(batch, -1)).all(dim=1)
            if not bool(finite.all()):
                newly = (~finite) & (bad_step < 0)
                bad_step[newly] = i
                if stop_on_nonfinite:
                    raise NonFiniteSampleError(i, int((~finite).sum()), batch)
                x = torch.where(_per_sample(finite, x), x, torch.zeros_like(x))
    return x, bad_step


def _schedules(
    configs: Sequence[TFGConfig], counts: Sequence[int], chain: Chain
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-step, per-sample rho_i, mu_i, sigma_i [K, B] for a batch made of config chunks."""
    a, a_prev = chain.alphas_cumprod, chain.alphas_cumprod_prev
    rho, mu, sigma = [], [], []
    for cfg, n in zip(configs, counts, strict=True):
        rho.append(strength_schedule(cfg.rho_schedule, cfg.rho, a, a_prev)[:, None].expand(-1, n))
        mu.append(strength_schedule(cfg.mu_schedule, cfg.mu, a, a_prev)[:, None].expand(-1, n))
        sigma.append(noise_schedule(cfg.gamma_schedule, cfg.gamma, a)[:, None].expand(-1, n))
    return torch.cat(rho, 1), torch.cat(mu, 1), torch.cat(sigma, 1)


def _structure(configs: Sequence[TFGConfig]) -> Structure:
    st = Structure.of(configs[0])
    for cfg in configs[1:]:
        other = Structure.of(cfg)
        if other != st:
            raise ValueError(
                "configurations sampled in one batch must share n_recur, n_iter, n_mc, eta and "
                f"clip_x0; got {st} and {other}"
            )
    return st


def _device_and_dtype(
    model: object, device: torch.device | str | None, latents: torch.Tensor | None
) -> tuple[torch.device, torch.dtype]:
    """Where and in which dtype the chain runs: the latents', else the model's (a float16 or
    bfloat16 model samples in float32: only its own calls run in its dtype, section 7)."""
    param = None
    if isinstance(model, torch.nn.Module):
        param = next(iter(model.parameters()), None)
    if device is None:
        if latents is not None:
            device = latents.device
        elif param is not None:
            device = param.device
        else:
            device = "cpu"
    if latents is not None:
        dtype = latents.dtype
    else:
        dtype = model_dtype(model) or torch.float32
        if dtype in (torch.float16, torch.bfloat16):
            dtype = torch.float32
    return torch.device(device), dtype


def guided_sample_many(
    model: Callable[..., object],
    scheduler: object,
    log_f: LogF,
    configs: Sequence[TFGConfig],
    shape: tuple[int, ...],
    generators: Sequence[torch.Generator | None],
    num_inference_steps: int = 50,
    latents: torch.Tensor | None = None,
    device: torch.device | str | None = None,
    *,
    conditioning: Conditioning | None = None,
) -> tuple[list[torch.Tensor], list[NonFiniteSampleError | None]]:
    """Several configurations in one batch; each gets the samples it would get alone.

    The configurations must share n_recur, n_iter, n_mc, eta and clip_x0 (they may differ in
    strengths, schedule structures and ``guidance_scale``). ``shape`` is the shape of one
    configuration's batch (n, ...), ``generators`` one generator per configuration (seeded as the
    run alone would be), ``conditioning`` the denoiser's condition for every configuration (see
    :func:`guided_sample`).

    Returns:
        (samples, errors): per configuration its samples [n, ...] and None, or the
        ``NonFiniteSampleError`` it would have raised alone (its samples are then unusable).
    """
    if len(configs) == 0 or len(configs) != len(generators):
        raise ValueError("give one generator per configuration (and at least one configuration)")
    structure = _structure(configs)
    dev, dtype = _device_and_dtype(model, device, latents)
    n = shape[0]
    chunks = [(g, n) for g in generators]
    noise = _Noise(chunks, dev, dtype)
    chain = ddim_chain(scheduler, num_inference_steps, dev, dtype)
    rho, mu, sigma = _schedules(configs, [n] * len(configs), chain)
    if latents is None:
        x = noise.randn(tuple(shape[1:]))
    else:
        expected = (n * len(configs), *shape[1:])
        if tuple(latents.shape) != expected:
            raise ValueError(f"latents must have shape {expected}, got {tuple(latents.shape)}")
        x = latents.to(device=dev, dtype=dtype)
    smooth = [cfg.gamma > 0 for cfg in configs]
    denoiser = Denoiser(model, conditioning, [cfg.guidance_scale for cfg in configs], n, dev)
    with frozen_models(model, log_f):
        x, bad = _run(denoiser, chain, log_f, structure, rho, mu, sigma, smooth, x, noise, False)
    samples, errors = [], []
    for j in range(len(configs)):
        part, bad_j = x[j * n : (j + 1) * n], bad[j * n : (j + 1) * n]
        samples.append(part)
        n_bad = int((bad_j >= 0).sum())
        errors.append(NonFiniteSampleError(int(bad_j[bad_j >= 0].min()), n_bad, n) if n_bad else None)
    return samples, errors


def guided_sample(
    model: Callable[..., object],
    scheduler: object,
    log_f: LogF,
    config: TFGConfig,
    shape: tuple[int, ...],
    num_inference_steps: int = 50,
    generator: torch.Generator | None = None,
    latents: torch.Tensor | None = None,
    device: torch.device | str | None = None,
    *,
    conditioning: Conditioning | None = None,
) -> torch.Tensor:
    """Draw guided samples with TFG (docs/algorithm.md, section 2) on a DDIM chain.

    Args:
        model: a diffusers UNet (``UNet2DModel``, ``UNet1DModel``, ``UNet2DConditionModel``) or any
            callable (x, t, **conditioning) -> eps (or v, x0: the scheduler's prediction_type);
            t is passed as a long tensor of shape [B]. Its weights are never updated and get no
            ``.grad``. A float16 / bfloat16 model is called on x cast to its dtype and its output
            cast back: the sampler itself runs in float32 (section 7).
        scheduler: a diffusers ``DDIMScheduler``; its alphas_cumprod and timesteps define the chain.
        log_f: clean samples [B, ...] -> per-sample log-likelihood [B] (differentiable). Samples are
            independent: each one's gradient is that of its own log f.
        config: the guidance hyper-parameters.
        shape: the batch shape (B, ...).
        num_inference_steps: K, the number of DDIM steps.
        generator: the source of every random draw (x_T, DDIM noise, smoothing, re-noising).
        latents: x_T; drawn from ``generator`` when omitted.
        device: where to sample; defaults to the model's device.
        conditioning: the conditional model's keyword arguments
            (:class:`~tfg_search.guidance.conditioning.Conditioning`); with
            ``config.guidance_scale`` != 1 its unconditional branch runs too and the outputs
            combine by classifier-free guidance before TFG acts (docs/algorithm.md, section 7).
            None: the model is called as ``model(x, t)``.

    Returns:
        The samples x_0, shape ``shape``.

    Raises:
        NonFiniteSampleError: when samples become NaN or infinite (with the step and their count).
        ValueError: ``guidance_scale`` != 1 without an unconditional branch, or bad shapes.
    """
    structure = _structure([config])
    dev, dtype = _device_and_dtype(model, device, latents)
    noise = _Noise([(generator, shape[0])], dev, dtype)
    chain = ddim_chain(scheduler, num_inference_steps, dev, dtype)
    rho, mu, sigma = _schedules([config], [shape[0]], chain)
    if latents is None:
        x = noise.randn(tuple(shape[1:]))
    else:
        if tuple(latents.shape) != tuple(shape):
            raise ValueError(f"latents must have shape {tuple(shape)}, got {tuple(latents.shape)}")
        x = latents.to(device=dev, dtype=dtype)
    denoiser = Denoiser(model, conditioning, [config.guidance_scale], shape[0], dev)
    with frozen_models(model, log_f):
        x, _ = _run(denoiser, chain, log_f, structure, rho, mu, sigma, [config.gamma > 0], x, noise, True)
    return x

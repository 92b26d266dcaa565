"""The guided sampler: DDIM equivalence, mechanisms on an exact Gaussian problem, gradients, safety."""

from __future__ import annotations

import pytest
import torch

from tests.helpers.models import GaussianDenoiser, ddim, tiny_unet
from tfg_search import NonFiniteSampleError, TFGConfig, guided_sample, guided_sample_many
from tfg_search.guidance.sampler import ddim_chain, pass_counts


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _plain_ddim(unet, scheduler, latents: torch.Tensor, steps: int) -> torch.Tensor:
    """The textbook diffusers loop: model -> scheduler.step, eta = 0 (coefficients in latents' dtype)."""
    scheduler.set_timesteps(steps)
    scheduler.alphas_cumprod = scheduler.alphas_cumprod.to(latents.dtype)
    scheduler.final_alpha_cumprod = scheduler.final_alpha_cumprod.to(latents.dtype)
    x = latents
    with torch.no_grad():
        for t in scheduler.timesteps:
            eps = unet(x, t).sample
            x = scheduler.step(eps, t, x, eta=0.0, use_clipped_model_output=True).prev_sample
    return x


@pytest.mark.parametrize("clip", [False, True])
@pytest.mark.parametrize("steps", [10, 25])
def test_unguided_reproduces_plain_diffusers_ddim(clip: bool, steps: int) -> None:
    unet = tiny_unet(dtype=torch.float64)
    latents = torch.randn(4, 1, 8, 8, generator=_gen(1), dtype=torch.float64)
    ref = _plain_ddim(unet, ddim(clip_sample=clip), latents, steps)
    cfg = TFGConfig(eta=0.0, clip_x0=clip)
    out = guided_sample(unet, ddim(), lambda x: x.sum((1, 2, 3)), cfg, latents.shape, steps, latents=latents)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)


def test_unguided_float32_matches_too() -> None:
    unet = tiny_unet()
    latents = torch.randn(2, 1, 8, 8, generator=_gen(2))
    ref = _plain_ddim(unet, ddim(clip_sample=False), latents, 20)
    cfg = TFGConfig(eta=0.0, clip_x0=False)
    out = guided_sample(unet, ddim(), lambda x: x.sum((1, 2, 3)), cfg, latents.shape, 20, latents=latents)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


# --- an exact problem: x0 ~ N(m0, s0^2 I), log f(x) = -||x - y||^2 / (2 s_l^2) -------------------
D, M0, S0, Y, SL = 2, 0.0, 1.0, 2.0, 0.5


def _gaussian_problem():
    sched = ddim()
    model = GaussianDenoiser(sched, torch.full((D,), M0), S0)

    def log_f(x: torch.Tensor) -> torch.Tensor:
        return -((x - Y) ** 2).sum(1) / (2 * SL**2)

    return model, sched, log_f


def _draw(cfg: TFGConfig, n: int = 2000, steps: int = 50, seed: int = 0) -> torch.Tensor:
    model, sched, log_f = _gaussian_problem()
    lat = torch.randn(n, D, generator=_gen(seed), dtype=torch.float64)
    return guided_sample(model, sched, log_f, cfg, (n, D), steps, generator=_gen(seed + 1), latents=lat)


TILTED_MEAN = (M0 * SL**2 + Y * S0**2) / (S0**2 + SL**2)  # 1.6: the exact guided target's mean


@pytest.mark.parametrize(
    ("field", "values", "extra"),
    [
        ("rho", [0.0, 0.003, 0.03], dict(n_iter=0)),
        ("mu", [0.0, 0.003, 0.03], dict(n_iter=2)),
    ],
)
def test_each_mechanism_moves_towards_target_monotonically(field, values, extra) -> None:
    base = TFGConfig(clip_x0=False, **extra)
    means = [float(_draw(base.replace(**{field: v})).mean()) for v in values]
    assert means[0] == pytest.approx(M0, abs=0.08)  # unguided stays on the prior
    # More strength moves further, towards (never past) the likelihood's centre y.
    assert means[0] < means[1] < means[2] <= Y + 0.05
    assert means[1] > M0 + 0.1 and means[2] > TILTED_MEAN - 0.3  # clear moves, not noise


def test_smoothing_and_recurrence_strengthen_guidance_as_theory_says() -> None:
    # Smoothing a Gaussian log f with sigma leaves its gradient unchanged (it only shifts log f):
    smoothed = _draw(TFGConfig(rho=0.01, gamma=0.3, n_mc=4, n_iter=0, clip_x0=False))
    plain = _draw(TFGConfig(rho=0.01, n_iter=0, clip_x0=False))
    assert float(smoothed.mean()) == pytest.approx(float(plain.mean()), abs=0.08)
    # Recurrence applies the guidance again at each step, so it moves samples further.
    recur = _draw(TFGConfig(rho=0.01, n_recur=3, n_iter=0, clip_x0=False))
    assert float(recur.mean()) > float(plain.mean()) + 0.1


def test_recurrence_without_guidance_keeps_the_unguided_marginal() -> None:
    # Re-noising with the forward kernel preserves the marginal. With 250 steps (at 50, DDIM
    # under-disperses a little even with this exact model) the n_recur = 4 sample mean lies within
    # 4 standard errors of the data's (n = 4000, 2 dims) and its std within 5% of the data's and of
    # plain sampling's.
    n, steps = 4000, 250
    once = _draw(TFGConfig(n_recur=1, clip_x0=False), n=n, steps=steps)
    four = _draw(TFGConfig(n_recur=4, clip_x0=False), n=n, steps=steps, seed=10)
    se_mean = S0 / (n * D) ** 0.5
    assert abs(float(four.mean()) - M0) < 4 * se_mean
    assert abs(float(four.mean()) - float(once.mean())) < 6 * se_mean
    assert float(four.std()) == pytest.approx(S0, rel=0.05)
    assert float(four.std()) == pytest.approx(float(once.std()), rel=0.05)


def test_variance_term_matches_finite_differences() -> None:
    # One step with a' = 1 and eta = 0 gives x_prev = x0(x_T) + rho / sqrt(alpha) * grad L(x0(x_T)),
    # so (guided - unguided) * sqrt(alpha) / rho must equal the finite-difference gradient.
    unet = tiny_unet(seed=3, dtype=torch.float64)
    sched = ddim()
    target = torch.linspace(-1, 1, 64, dtype=torch.float64).reshape(1, 1, 8, 8)

    def log_f(x: torch.Tensor) -> torch.Tensor:
        return -((x - target) ** 2).sum((1, 2, 3)) + torch.sin(3 * x).sum((1, 2, 3))

    lat = torch.randn(2, 1, 8, 8, generator=_gen(4), dtype=torch.float64)
    plain = TFGConfig(eta=0.0, clip_x0=False, n_iter=0)
    rho = 0.3

    def run(cfg: TFGConfig, x: torch.Tensor) -> torch.Tensor:
        return guided_sample(unet, sched, log_f, cfg, tuple(x.shape), 1, latents=x)

    guided = run(plain.replace(rho=rho), lat)
    x0 = run(plain, lat)
    chain = ddim_chain(sched, 1, dtype=torch.float64)
    a = float(chain.alphas_cumprod[0])
    assert float(chain.alphas_cumprod_prev[0]) == 1.0
    analytic = (guided - x0) * a**0.5 / rho  # alpha = a / a' = a
    h = 1e-6
    for b, idx in [(0, (0, 3, 4)), (1, (0, 0, 7)), (0, (0, 7, 1))]:
        e = torch.zeros_like(lat)
        e[(b, *idx)] = h
        fd = (log_f(run(plain, lat + e))[b] - log_f(run(plain, lat - e))[b]) / (2 * h)
        assert float(analytic[(b, *idx)]) == pytest.approx(float(fd), rel=1e-5, abs=1e-8)


def test_gradients_are_per_sample() -> None:
    unet = tiny_unet(seed=5, dtype=torch.float64)
    lat = torch.randn(4, 1, 8, 8, generator=_gen(6), dtype=torch.float64)
    cfg = TFGConfig(rho=0.5, mu=0.5, n_iter=2, eta=0.0)

    def log_f(x: torch.Tensor) -> torch.Tensor:
        return -(x**2).sum((1, 2, 3))

    batch = guided_sample(unet, ddim(), log_f, cfg, (4, 1, 8, 8), 10, latents=lat)
    alone = guided_sample(unet, ddim(), log_f, cfg, (1, 1, 8, 8), 10, latents=lat[2:3])
    torch.testing.assert_close(batch[2:3], alone, rtol=1e-9, atol=1e-9)


def test_weights_untouched_no_grad_and_deterministic() -> None:
    unet = tiny_unet(seed=7).train()
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    cfg = TFGConfig(rho=0.5, mu=0.5, gamma=0.1, n_mc=2, n_recur=2, n_iter=2)

    def log_f(x: torch.Tensor) -> torch.Tensor:
        return -(x**2).sum((1, 2, 3))

    a = guided_sample(unet, ddim(), log_f, cfg, (3, 1, 8, 8), 8, generator=_gen(8))
    b = guided_sample(unet, ddim(), log_f, cfg, (3, 1, 8, 8), 8, generator=_gen(8))
    c = guided_sample(unet, ddim(), log_f, cfg, (3, 1, 8, 8), 8, generator=_gen(9))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(a, c)
    assert not a.requires_grad and a.grad_fn is None
    for name, p in unet.named_parameters():
        assert p.grad is None and p.requires_grad, name
        torch.testing.assert_close(p.detach(), before[name], rtol=0, atol=0)
    assert unet.training  # mode restored


def test_callable_model_and_generator_draws_latents() -> None:
    model, sched, log_f = _gaussian_problem()
    out = guided_sample(model, sched, log_f, TFGConfig(rho=0.05), (5, D), 10, generator=_gen(0))
    assert out.shape == (5, D) and out.dtype == torch.float32
    with pytest.raises(ValueError, match="latents must have shape"):
        guided_sample(model, sched, log_f, TFGConfig(), (5, D), 10, latents=torch.zeros(4, D))


def test_non_finite_samples_are_reported_with_step_and_count() -> None:
    model, sched, _ = _gaussian_problem()
    weights = torch.tensor([1.0, float("inf"), 1.0, float("inf")])

    def log_f(x: torch.Tensor) -> torch.Tensor:
        return (x.sum(1) * weights.to(x.dtype)) * 1e30

    with pytest.raises(NonFiniteSampleError) as info:
        guided_sample(model, sched, log_f, TFGConfig(rho=1.0, n_iter=0), (4, D), 10, generator=_gen(0))
    err = info.value
    assert err.step == 0 and err.n_bad == 2 and err.n_total == 4
    assert "step 0" in str(err) and "2 of 4 samples" in str(err)


def test_many_configurations_in_one_batch_equal_separate_runs() -> None:
    # float64: strong guidance amplifies float32 rounding chaotically (batched matrix products round
    # differently), so in float32 the two orders agree only up to rounding; in float64 they agree.
    unet = tiny_unet(seed=11).double()

    def log_f(x: torch.Tensor) -> torch.Tensor:
        return -((x - 0.3) ** 2).sum((1, 2, 3))

    configs = [
        TFGConfig(rho=0.1, mu=0.2, gamma=0.01, n_mc=2, n_iter=2),
        TFGConfig(rho=0.4, mu=0.0, gamma=0.1, n_mc=2, n_iter=2, rho_schedule="decrease"),
        TFGConfig(rho=0.0, mu=0.8, gamma=0.0, n_mc=2, n_iter=2, mu_schedule="constant"),
    ]
    shape = (3, 1, 8, 8)
    many, errors = guided_sample_many(unet, ddim(), log_f, configs, shape, [_gen(s) for s in (1, 2, 3)], 8)
    assert errors == [None, None, None]
    for cfg, seed, got in zip(configs, (1, 2, 3), many, strict=True):
        alone = guided_sample(unet, ddim(), log_f, cfg, shape, 8, generator=_gen(seed))
        assert got.dtype == torch.float64
        torch.testing.assert_close(got, alone, rtol=1e-9, atol=1e-10)
    with pytest.raises(ValueError, match="must share n_recur"):
        guided_sample_many(
            unet, ddim(), log_f, [configs[0], configs[0].replace(n_recur=2)], shape, [None, None]
        )


def test_many_reports_non_finite_per_configuration() -> None:
    model, sched, _ = _gaussian_problem()

    def log_f(x: torch.Tensor) -> torch.Tensor:
        return x.sum(1) ** 3

    configs = [TFGConfig(rho=0.01, n_iter=0), TFGConfig(rho=1e300, n_iter=0)]
    out, errors = guided_sample_many(model, sched, log_f, configs, (4, D), [_gen(0), _gen(1)], 10)
    assert errors[0] is None and torch.isfinite(out[0]).all()
    assert isinstance(errors[1], NonFiniteSampleError) and errors[1].n_bad == 4


@pytest.mark.parametrize(
    "cfg",
    [
        TFGConfig(rho=0.1, mu=0.1, n_iter=3, n_recur=2, gamma=0.1, n_mc=2),
        TFGConfig(rho=0.1, n_iter=0),
        TFGConfig(mu=0.1, n_iter=2),
        TFGConfig(),
    ],
)
def test_predictor_and_unet_passes_match_the_floor(cfg: TFGConfig) -> None:
    # Counts what the sampler really calls against pass_counts (which the benchmarks use as the
    # floor). With rho and mu both on, the variance gradient at x0 doubles as the first mean step.
    model, sched, base_log_f = _gaussian_problem()
    calls = {"log_f": 0, "model_graph": 0, "model": 0}

    def log_f(x: torch.Tensor) -> torch.Tensor:
        calls["log_f"] += x.shape[0] // 4  # batches of B = 4 (M copies count M times)
        return base_log_f(x)

    def counted(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        calls["model_graph" if torch.is_grad_enabled() and x.requires_grad else "model"] += 1
        return model(x, t)

    guided_sample(counted, sched, log_f, cfg, (4, D), 7, generator=_gen(0))
    want = pass_counts(cfg, 7)
    assert calls == {
        "log_f": want.predictor_forward_backward,
        "model_graph": want.unet_forward_backward,
        "model": want.unet_forward,
    }
    paper = pass_counts(cfg, 7, this_implementation=False)
    lower = cfg.rho > 0 and cfg.mu > 0
    assert paper.predictor_forward_backward == want.predictor_forward_backward + (
        7 * cfg.n_recur * cfg.n_mc if lower else 0
    )


@pytest.mark.parametrize("prediction_type", ["v_prediction", "sample"])
def test_models_that_predict_v_or_x0_sample_the_same_chain(prediction_type: str) -> None:
    """An epsilon model rewritten to predict v (or x0) under a scheduler saying so gives the same
    samples (float64): the sampler reads the scheduler's prediction_type."""
    unet = tiny_unet(seed=3).double()
    sched_eps = ddim()
    acp = sched_eps.alphas_cumprod.to(torch.float64)

    def as_other(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        eps = unet(x, t).sample
        a = acp[t].reshape(-1, 1, 1, 1)
        x0 = (x - (1 - a).sqrt() * eps) / a.sqrt()
        return a.sqrt() * eps - (1 - a).sqrt() * x0 if prediction_type == "v_prediction" else x0

    def log_f(x: torch.Tensor) -> torch.Tensor:
        return -((x - 0.2) ** 2).sum((1, 2, 3))

    cfg = TFGConfig(rho=0.2, mu=0.3, n_iter=2, clip_x0=False)
    shape = (2, 1, 8, 8)
    x_t = torch.randn(shape, generator=_gen(9), dtype=torch.float64)
    want = guided_sample(unet, sched_eps, log_f, cfg, shape, 6, generator=_gen(0), latents=x_t)
    other = ddim(prediction_type=prediction_type)
    got = guided_sample(as_other, other, log_f, cfg, shape, 6, generator=_gen(0), latents=x_t)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)

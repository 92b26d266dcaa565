"""Schedules of docs/algorithm.md, section 3: means, endpoints, monotonicity, gamma structures."""

from __future__ import annotations

import pytest
import torch

from tests.helpers.models import ddim
from tfg_search.guidance.sampler import ddim_chain
from tfg_search.guidance.schedules import noise_schedule, strength_schedule


@pytest.fixture(params=[10, 50, 100])
def chain(request: pytest.FixtureRequest):
    return ddim_chain(ddim(), request.param, dtype=torch.float64)


@pytest.mark.parametrize("structure", ["increase", "decrease", "constant"])
@pytest.mark.parametrize("mean", [0.0, 0.25, 3.0])
def test_strength_mean_equals_scalar(chain, structure: str, mean: float) -> None:
    s = strength_schedule(structure, mean, chain.alphas_cumprod, chain.alphas_cumprod_prev)
    assert s.shape == (len(chain),)
    assert float(s.mean()) == pytest.approx(mean, rel=1e-12, abs=1e-15)


def test_structures_shape(chain) -> None:
    a, ap = chain.alphas_cumprod, chain.alphas_cumprod_prev
    alpha = a / ap
    inc = strength_schedule("increase", 1.0, a, ap)
    dec = strength_schedule("decrease", 1.0, a, ap)
    const = strength_schedule("constant", 1.0, a, ap)
    # increase follows alpha_i, decrease follows 1 - alpha_i, both normalised to mean 1.
    torch.testing.assert_close(inc, alpha * len(a) / alpha.sum())
    torch.testing.assert_close(dec, (1 - alpha) * len(a) / (1 - alpha).sum())
    torch.testing.assert_close(const, torch.ones_like(a))
    # Monotone over the steps (noisiest first): increase grows, decrease shrinks.
    assert bool((inc[1:] >= inc[:-1]).all())
    assert bool((dec[1:] <= dec[:-1]).all())
    # Endpoints: decrease is front-loaded, increase ends at its largest value.
    assert float(dec[0]) == float(dec.max()) and float(inc[-1]) == float(inc.max())
    assert float(dec[0]) > 1.0 > float(dec[-1])


def test_increase_is_nearly_flat_and_decrease_front_loaded_at_50_steps() -> None:
    c = ddim_chain(ddim(), 50, dtype=torch.float64)
    inc = strength_schedule("increase", 1.0, c.alphas_cumprod, c.alphas_cumprod_prev)
    dec = strength_schedule("decrease", 1.0, c.alphas_cumprod, c.alphas_cumprod_prev)
    assert float(inc.min()) > 0.7 and float(inc.max()) < 1.3
    # The noisiest fifth of the steps carries a third of the total (a flat schedule: a fifth).
    assert float(dec[:10].sum()) > 0.33 * float(dec.sum())
    assert float(dec[0]) > 100 * float(dec[-1])


def test_noise_schedule_structures(chain) -> None:
    a = chain.alphas_cumprod
    torch.testing.assert_close(noise_schedule("decrease", 0.5, a), 0.5 * torch.sqrt(1 - a))
    torch.testing.assert_close(noise_schedule("increase", 0.5, a), 0.5 * torch.sqrt(a))
    torch.testing.assert_close(noise_schedule("constant", 0.5, a), torch.full_like(a, 0.5))
    dec, inc = noise_schedule("decrease", 1.0, a), noise_schedule("increase", 1.0, a)
    assert bool((dec[1:] <= dec[:-1]).all()) and bool((inc[1:] >= inc[:-1]).all())
    # Not normalised: decrease starts near gamma, increase ends near gamma.
    assert float(dec[0]) == pytest.approx(1.0, abs=0.01) and float(inc[-1]) == pytest.approx(1.0, abs=0.01)


def test_per_sample_schedules() -> None:
    c = ddim_chain(ddim(), 20, dtype=torch.float64)
    means = torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64)
    s = strength_schedule("decrease", means, c.alphas_cumprod, c.alphas_cumprod_prev)
    assert s.shape == (20, 3)
    torch.testing.assert_close(s.mean(0), means)
    g = noise_schedule("decrease", means, c.alphas_cumprod)
    torch.testing.assert_close(g[:, 2], 2 * torch.sqrt(1 - c.alphas_cumprod))


def test_unknown_structure() -> None:
    a = torch.tensor([0.5])
    with pytest.raises(ValueError, match="must be one of increase, decrease, constant"):
        strength_schedule("linear", 1.0, a, a)
    with pytest.raises(ValueError, match="must be one of"):
        noise_schedule("up", 1.0, a)


def test_chain_matches_ddim_scheduler() -> None:
    sched = ddim()
    c = ddim_chain(sched, 10)
    ref = ddim()
    ref.set_timesteps(10)
    assert c.timesteps.tolist() == ref.timesteps.tolist()
    assert float(c.alphas_cumprod_prev[-1]) == 1.0  # final_alpha_cumprod with set_alpha_to_one
    step = 1000 // 10
    for i, t in enumerate(ref.timesteps.tolist()):
        assert float(c.alphas_cumprod[i]) == pytest.approx(float(ref.alphas_cumprod[t]))
        if t - step >= 0:
            assert float(c.alphas_cumprod_prev[i]) == pytest.approx(float(ref.alphas_cumprod[t - step]))
    assert sched.num_inference_steps is None  # the user's scheduler is left untouched

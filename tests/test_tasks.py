"""Tasks: registry, loading, metrics in range, the gmm2d exact target, guidance beats no guidance."""

from __future__ import annotations

import math

import pytest
import torch

from searchers import Lattice
from tasks import Task, get_task, task_names
from tasks import registry as registry_module
from tasks.base import clear_model_cache
from tasks.gmm2d import (
    N_MODES,
    exact_conditional,
    log_posterior,
    sample_mixture,
    sliced_wasserstein,
)
from tfg_search.errors import TFGSearchError
from tfg_search.guidance.config import method_config
from tfg_search.run.evaluation import evaluate

BUNDLED = ["gmm2d", "digits", "digits-attrs", "digits-inpaint", "digits-superres", "digits-deblur"]
TARGETS = {
    "gmm2d": "3",
    "digits": "7",
    "digits-attrs": "7+thick",
    "digits-inpaint": "5",
    "digits-superres": "5",
    "digits-deblur": "5",
}
BOUNDED = {"validity", "fidelity", "target_prob", "guide_accuracy", "class_validity"}
BOUNDED |= {"thickness_validity"}


def test_registry_lists_bundled_tasks() -> None:
    names = task_names()
    for name in [*BUNDLED, "custom"]:
        assert name in names


def test_unknown_task_is_a_clear_error() -> None:
    with pytest.raises(TFGSearchError, match=r"unknown task .nope.*available: gmm2d"):
        get_task("nope")


class _ThirdPartyTask(Task):
    name = "third-party"
    sample_shape = (2,)

    @property
    def targets(self) -> list[str]:
        return ["a"]

    def diffusion(self, device=None):  # pragma: no cover - not called
        raise NotImplementedError

    def log_f(self, target, device=None):  # pragma: no cover - not called
        raise NotImplementedError

    def compute_metrics(self, samples, target):  # pragma: no cover - not called
        return {"validity": 1.0}


def test_entry_point_tasks_are_found(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = f"{__name__}:_ThirdPartyTask"
    monkeypatch.setattr(
        registry_module, "registered_specs", lambda: {"third-party": spec, **registry_module.BUILTIN_TASKS}
    )
    assert "third-party" in task_names()
    assert isinstance(get_task("third-party"), _ThirdPartyTask)


@pytest.mark.parametrize("name", BUNDLED)
def test_task_declares_its_interface(name: str) -> None:
    task = get_task(name)
    assert task.metrics[0] == "validity"
    assert all(m.lstrip("_") in task.metrics for m in task.objective)
    assert set(task.default_space) == {"rho", "mu", "gamma"}
    for lattice in [*task.default_space.values(), task.default_strength_space]:
        assert isinstance(lattice, Lattice) and lattice.size >= 2
    assert task.targets and task.parse_target(task.targets[0]) is not None
    with pytest.raises(TFGSearchError, match="target"):
        task.parse_target("999999")
    with pytest.raises(TFGSearchError, match="target"):
        task.parse_target("nonsense")
    assert task.describe()["name"] == name


@pytest.mark.parametrize("name", BUNDLED)
def test_task_evaluates_a_few_samples(name: str) -> None:
    task = get_task(name)
    target = TARGETS[name]
    result = evaluate(
        task,
        target,
        method_config("dps", 0.01),
        n_samples=4,
        seed=0,
        num_inference_steps=3,
        return_samples=True,
    )
    assert set(result.metrics) == set(task.metrics)
    for key, value in result.metrics.items():
        assert math.isfinite(value), key
        if key in BOUNDED:
            assert 0.0 <= value <= 1.0, key
    assert tuple(result.samples.shape) == (4, *task.sample_shape)
    model, _ = task.diffusion("cpu")
    assert task.diffusion("cpu")[0] is model  # loaded once per process
    log_f = task.log_f(target)
    x = result.samples.clone().requires_grad_(True)
    out = log_f(x)
    assert out.shape == (4,)
    (grad,) = torch.autograd.grad(out.sum(), x)
    assert torch.isfinite(grad).all()


def test_gmm2d_exact_conditional_matches_rejection_sampling() -> None:
    gen = torch.Generator().manual_seed(0)
    y = 5
    x = sample_mixture(80_000, gen)
    accept = torch.rand(len(x), generator=gen) < log_posterior(x)[:, y].exp()
    rejected = x[accept]
    assert len(rejected) > 5_000
    exact = exact_conditional(y, len(rejected), torch.Generator().manual_seed(1))
    assert torch.allclose(rejected.mean(0), exact.mean(0), atol=0.02)
    assert torch.allclose(torch.cov(rejected.T), torch.cov(exact.T), atol=0.01)
    other = exact_conditional((y + 1) % N_MODES, len(rejected), torch.Generator().manual_seed(2))
    assert sliced_wasserstein(rejected, exact) < 0.03 < sliced_wasserstein(rejected, other)


@pytest.mark.parametrize(
    ("name", "target", "method", "strength", "n", "steps"),
    [("gmm2d", "2", "dps", 0.01, 64, 20), ("digits", "4", "dps", 0.05, 32, 20)],
)
def test_guidance_raises_validity(
    name: str, target: str, method: str, strength: float, n: int, steps: int
) -> None:
    task = get_task(name)
    base = evaluate(task, target, method_config("unguided"), n, 0, num_inference_steps=steps)
    guided = evaluate(task, target, method_config(method, strength), n, 0, num_inference_steps=steps)
    assert guided.metrics["validity"] >= base.metrics["validity"] + 0.3


def test_digits_evaluator_differs_from_guide() -> None:
    from sklearn.svm import SVC

    from tasks.digits import DigitsTask
    from tasks.digits_data import split_indices
    from tasks.digits_eval import digits_evaluator

    idx = split_indices()
    assert not set(idx["guide"]) & set(idx["eval"])
    assert not set(idx["heldout"]) & set(idx["train"])
    ev = digits_evaluator()
    assert isinstance(ev.svc, SVC)
    cnn = DigitsTask().models.cnn("classifier", 10)
    assert isinstance(cnn, torch.nn.Module) and not isinstance(ev.svc, torch.nn.Module)
    noise = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        guide_pred = cnn(noise).argmax(1)
    assert (ev.predict_proba(noise).argmax(1) != guide_pred).any()


def test_attrs_rare_target_and_inverse_measurement() -> None:
    from tasks.digits_attrs import target_share

    assert target_share(7, "thick") < 0.05
    task = get_task("digits-inpaint")
    y1, y2 = task.measurement("3"), task.measurement("3")
    assert torch.equal(y1, y2)
    gt = task.ground_truth("3")
    assert task.log_f("3")(gt).item() > task.log_f("3")(-gt).item()


@pytest.mark.parametrize("name", ["gmm2d", "digits", "digits-inpaint"])
def test_missing_weights_say_how_to_retrain(name: str, tmp_path) -> None:
    task = get_task(name, {"weights": str(tmp_path)})
    with pytest.raises(TFGSearchError, match=r"missing; retrain with `tfg-search train"):
        task.diffusion("cpu")


def test_weights_of_another_format_version(tmp_path) -> None:
    from tasks.weights import save_weights

    save_weights(tmp_path, "eps_mlp", {"w": torch.zeros(1)}, {"seed": 0})
    meta = (tmp_path / "eps_mlp.json").read_text().replace('"format_version": 1', '"format_version": 0')
    (tmp_path / "eps_mlp.json").write_text(meta)
    clear_model_cache()
    with pytest.raises(TFGSearchError, match=r"format version 0.*tfg-search train gmm2d"):
        get_task("gmm2d", {"weights": str(tmp_path)}).diffusion("cpu")


def test_catalog_matches_the_task_classes() -> None:
    """``tfg-search tasks`` reads tasks/catalog.json (no torch); it must say what the classes say."""
    import json

    stored = json.loads(registry_module.CATALOG.read_text())
    assert stored == registry_module.catalog(), "tasks/catalog.json is stale: run `python -m tasks`"
    for name in BUNDLED:
        assert registry_module.describe(name) == get_task(name).describe()

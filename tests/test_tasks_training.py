"""Training is deterministic for a seed; the saved weights load back through the task."""

from __future__ import annotations

import torch
from safetensors.torch import load_file

from tasks import get_task
from tasks.gmm2d import train_gmm2d
from tasks.training import train_digits
from tfg_search.guidance.config import method_config
from tfg_search.run.evaluation import evaluate


def _same(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_gmm2d_training_is_deterministic(tmp_path) -> None:
    train_gmm2d(tmp_path / "a", seed=3, steps=5)
    train_gmm2d(tmp_path / "b", seed=3, steps=5)
    train_gmm2d(tmp_path / "c", seed=4, steps=5)
    a, b, c = (load_file(str(tmp_path / d / "eps_mlp.safetensors")) for d in "abc")
    assert _same(a, b) and not _same(a, c)
    task = get_task("gmm2d", {"weights": str(tmp_path / "a")})
    result = evaluate(task, "0", method_config("unguided"), 4, 0, num_inference_steps=2)
    assert 0 <= result.metrics["validity"] <= 1


def test_digits_training_is_deterministic(tmp_path) -> None:
    for d in "ab":
        train_digits(tmp_path / d, seed=0, steps=3, epochs=1)
    for name in ("unet/diffusion_pytorch_model", "classifier", "thickness"):
        a, b = (load_file(str(tmp_path / d / f"{name}.safetensors")) for d in "ab")
        assert _same(a, b), name
    task = get_task("digits", {"weights": str(tmp_path / "a")})
    result = evaluate(task, "3", method_config("dps", 0.01), 4, 0, num_inference_steps=2)
    assert 0 <= result.metrics["validity"] <= 1

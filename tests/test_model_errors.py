"""A custom task's own model that raises when called is the user's error (issue 27, item 2): one
line naming the component and its folder, exit 2 (in a trial it is FAILURE_USER, as a raising
predictor: tests/test_user_errors.py); the machine's errors (out of memory, the accelerator's)
stay the machine's."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tasks.model_errors import machine_error
from tests.helpers.cli import run_cli
from tests.helpers.models import ddim, tiny_unet
from tests.test_user_errors import HERE


@pytest.fixture(scope="module")
def odd_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A UNet whose sample size (7) its blocks cannot halve and double back to: every call raises."""
    folder = tmp_path_factory.mktemp("odd-model")
    tiny_unet(size=7).save_pretrained(folder)
    ddim().save_pretrained(folder)
    return folder


def test_a_raising_unet_refuses_a_search_in_one_line(
    odd_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "s.db"
    args = [
        "search", "--task", "custom", "--target", "0.5", "--search", "random", "--trials", "2",
        "--wave", "1", "--samples", "2", "--final-samples", "2", "--final-top", "1", "--steps", "2",
        "--study", "s", "--storage", f"sqlite:///{db}", "--quiet",
        "-o", f"model={odd_model}", "-o", f"predictor={HERE}:log_f", "-o", f"evaluator={HERE}:success",
    ]  # fmt: skip
    res = run_cli(args, capsys)
    assert res.code == 2, res.err
    lines = res.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.err, res.err
    assert lines[0].startswith(f"error: model unet of {odd_model} raised RuntimeError: Sizes of tensors")
    assert "reason of the machine" not in res.err
    assert not db.exists()  # it raised in the check of a batch's memory, before anything was written


def test_a_raising_unet_on_evaluate_is_one_line(odd_model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = [
        "evaluate", "--task", "custom", "--target", "0.5", "--samples", "2", "--steps", "2",
        "-o", f"model={odd_model}", "-o", f"predictor={HERE}:log_f", "-o", f"evaluator={HERE}:success",
    ]  # fmt: skip
    res = run_cli(args, capsys)
    assert res.code == 2 and len(res.err.strip().splitlines()) == 1, res.err
    assert res.err.startswith(f"error: model unet of {odd_model} raised RuntimeError: ")


@pytest.mark.parametrize(
    ("err", "machine"),
    [
        (MemoryError(), True),
        (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), True),
        (RuntimeError("CUDA error: device-side assert triggered"), True),
        (RuntimeError("Sizes of tensors must match except in dimension 1"), False),
        (ValueError("class_labels should be provided when doing class conditioning"), False),
    ],
)
def test_the_machine_keeps_its_own_errors(err: BaseException, machine: bool) -> None:
    assert machine_error(err) == machine

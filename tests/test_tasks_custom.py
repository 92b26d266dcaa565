"""The ``custom`` task: a user's diffusers folder plus module:function predictor and evaluator."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from diffusers import DDIMScheduler, UNet2DModel

from tasks import get_task
from tasks.custom import UserCodeError
from tasks.registry import load_object
from tests.helpers.models import ddim, tiny_unet
from tfg_search.cli import main
from tfg_search.errors import TFGSearchError
from tfg_search.guidance.config import method_config
from tfg_search.run.evaluation import evaluate

HERE = __name__


def log_f(x: torch.Tensor, target: str) -> torch.Tensor:
    """Guide towards images whose mean pixel is the target value."""
    return -(x.flatten(1).mean(1) - float(target)).abs()


def success(x: torch.Tensor, target: str) -> torch.Tensor:
    """Per-sample success: mean pixel within 0.25 of the target."""
    return ((x.flatten(1).mean(1) - float(target)).abs() < 0.25).float()


def metrics(x: torch.Tensor, target: str) -> dict[str, float]:
    """A dict-returning evaluator."""
    return {"validity": float(success(x, target).mean()), "spread": float(x.std())}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("custom-model")
    tiny_unet().save_pretrained(folder)
    ddim().save_pretrained(folder)
    return folder


def options(folder, **extra: str) -> dict[str, str]:
    return {"model": str(folder), "predictor": f"{HERE}:log_f", "evaluator": f"{HERE}:success", **extra}


def test_custom_task_evaluates(model_dir) -> None:
    task = get_task("custom", options(model_dir, targets="0.5,-0.5"))
    assert task.sample_shape == (1, 8, 8) and task.targets == ("0.5", "-0.5")
    model, scheduler = task.diffusion()
    assert isinstance(model, UNet2DModel) and isinstance(scheduler, DDIMScheduler)
    res = evaluate(task, "0.5", method_config("mpgd", 2.0), 4, 0, num_inference_steps=3)
    assert 0.0 <= res.metrics["validity"] <= 1.0
    with pytest.raises(TFGSearchError, match="unknown target"):
        task.parse_target("0.7")


def test_custom_dict_evaluator_and_pipeline_layout(model_dir, tmp_path) -> None:
    unet = UNet2DModel.from_pretrained(model_dir)
    unet.save_pretrained(tmp_path / "unet")
    DDIMScheduler.from_pretrained(model_dir).save_pretrained(tmp_path / "scheduler")
    opts = options(
        tmp_path, evaluator=f"{HERE}:metrics", metrics="validity,spread", objective="validity,_spread"
    )
    task = get_task("custom", opts)
    res = evaluate(task, "0", method_config("unguided"), 3, 0, num_inference_steps=2)
    assert set(res.metrics) == {"validity", "spread"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model": "__FOLDER_WITHOUT_MODEL__"}, "not a diffusers model folder"),
        ({"model": "/nonexistent/path/x"}, "does not exist"),
        ({"predictor": "no_colon"}, "module:function"),
        ({"evaluator": "tests.nothing_here:f"}, "cannot import evaluator"),
    ],
)
def test_custom_bad_options(model_dir, tmp_path, change, message) -> None:
    opts = options(model_dir)
    opts.update({k: str(tmp_path) if v == "__FOLDER_WITHOUT_MODEL__" else v for k, v in change.items()})
    with pytest.raises(TFGSearchError, match=message):
        get_task("custom", opts)


def test_custom_needs_its_options() -> None:
    with pytest.raises(TFGSearchError, match=r"needs options model=\.\.\."):
        get_task("custom")


def test_custom_via_cli(model_dir, capsys) -> None:
    argv = [
        "evaluate",
        "--task",
        "custom",
        "--target",
        "0.5",
        "--samples",
        "2",
        "--steps",
        "2",
        "--json",
        "-o",
        f"model={model_dir}",
        "-o",
        f"predictor={HERE}:log_f",
        "-o",
        f"evaluator={HERE}:success",
    ]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0
    assert "validity" in json.loads(capsys.readouterr().out)


def failing_log_f(x: torch.Tensor, target: str) -> torch.Tensor:
    """A predictor with a bug."""
    raise ValueError(f"no guide for {target}\nsecond line")


def wrong_shape_log_f(x: torch.Tensor, target: str) -> torch.Tensor:
    """A predictor that forgets to reduce over pixels."""
    return x.flatten(1)


def failing_success(x: torch.Tensor, target: str) -> torch.Tensor:
    """An evaluator with a bug."""
    return {}["validity"]


def test_user_code_errors_name_the_function(model_dir) -> None:
    task = get_task("custom", options(model_dir, predictor=f"{HERE}:failing_log_f"))
    with pytest.raises(UserCodeError) as err:
        evaluate(task, "0.5", method_config("dps", 1.0), 2, 0, num_inference_steps=2)
    assert str(err.value) == f"predictor {HERE}:failing_log_f raised ValueError: no guide for 0.5"
    assert isinstance(err.value, TFGSearchError) and isinstance(err.value.__cause__, ValueError)
    assert (err.value.role, err.value.spec) == ("predictor", f"{HERE}:failing_log_f")
    task = get_task("custom", options(model_dir, evaluator=f"{HERE}:failing_success"))
    with pytest.raises(
        UserCodeError, match=f"^evaluator {HERE}:failing_success raised KeyError: 'validity'$"
    ):
        task.compute_metrics(torch.zeros(2, 1, 8, 8), "0.5")
    task = get_task("custom", options(model_dir, predictor=f"{HERE}:wrong_shape_log_f"))
    with pytest.raises(
        TFGSearchError, match=r"returned \(2, 64\); it must return log f as a tensor of shape \[B\]"
    ):
        task.log_f("0")(torch.zeros(2, 1, 8, 8))


GUIDES = """
import torch


def log_f(x, target):
    return -(x.flatten(1).mean(1) - float(target)).abs()


def success(x, target):
    return ((x.flatten(1).mean(1) - float(target)).abs() < 0.25).float()
"""


def test_modules_are_found_in_the_working_folder(tmp_path, monkeypatch) -> None:
    (tmp_path / "cwd_guides_a.py").write_text(GUIDES)
    (tmp_path / "cwd_broken.py").write_text("import not_installed_anywhere\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    assert callable(load_object("cwd_guides_a:log_f", "predictor"))
    assert sys.path[-1] == str(tmp_path)  # appended: installed packages come first
    # A module that is found but fails to import reports its own missing import.
    with pytest.raises(TFGSearchError, match="No module named 'not_installed_anywhere'"):
        load_object("cwd_broken:f", "predictor")
    with pytest.raises(TFGSearchError, match="cannot import evaluator 'cwd_nowhere:f'"):
        load_object("cwd_nowhere:f", "evaluator")


def test_cli_finds_guides_next_to_the_command_without_pythonpath(model_dir, tmp_path) -> None:
    """``tfg-search`` (the installed command, which does not put its folder on sys.path) run in a
    folder holding my_guides.py and a relative model path, with no PYTHONPATH."""
    (tmp_path / "my_guides.py").write_text(GUIDES)
    shutil.copytree(model_dir, tmp_path / "model")
    command = Path(sys.executable).with_name("tfg-search")
    args = ["evaluate", "--task", "custom", "--target", "0.5", "--samples", "2", "--steps", "2", "--json"]
    args += ["-o", "model=./model", "-o", "predictor=my_guides:log_f", "-o", "evaluator=my_guides:success"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [str(command), *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert 0.0 <= json.loads(proc.stdout)["validity"] <= 1.0

"""The ``custom`` task: a user's diffusers folder plus module:function predictor and evaluator."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import DDIMScheduler, UNet2DModel

from tasks import get_task
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
    torch.manual_seed(0)
    UNet2DModel(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=4,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
    ).save_pretrained(folder)
    DDIMScheduler(num_train_timesteps=1000).save_pretrained(folder)
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

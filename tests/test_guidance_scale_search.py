"""guidance_scale as a searched parameter, ``--guidance-scale``, ``--dtype`` and ``-o`` on search.

A conditional task's search varies the classifier-free guidance weight on its own lattice beside
rho, mu and gamma (CFG alone: ``--space guidance_scale=...``); an unconditional task refuses a CFG
weight; studies of unconditional tasks keep their names (tests/test_layouts.py checks the stored
fixtures). The conditional task here is ``custom`` on a tiny class-conditional pipeline folder
(tests/helpers/tiny_pipelines.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import torch

from searchers import Lattice
from tasks import get_task
from tests.helpers.cli import run_cli
from tests.helpers.tiny_pipelines import class_pipeline
from tfg_search.errors import SettingError, TFGSearchError
from tfg_search.guidance.config import TFGConfig, search_point
from tfg_search.run.settings import SearchSettings
from tfg_search.store.layout import StudyInfo

GUIDES = "tests.test_custom_pipelines"
"""The predictor and evaluator of the custom task tests (mean pixel toward the target)."""


@pytest.fixture(scope="module")
def class_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return class_pipeline(tmp_path_factory.mktemp("cls") / "pipe")


def options(folder: Path | str, **extra: str) -> dict[str, str]:
    return {"model": str(folder), "predictor": f"{GUIDES}:log_f", "evaluator": f"{GUIDES}:success", **extra}


def resolve(folder: Path | str, **kw):
    extra = kw.pop("extra", {"class_label": "1", "guidance_scale": "4"})
    opts = options(folder, **extra)
    return SearchSettings("custom", "0", task_options=opts, **kw).resolve(get_task("custom", opts))


def test_a_conditional_task_searches_guidance_scale(class_dir) -> None:
    r = resolve(class_dir)
    assert r.space["guidance_scale"] == Lattice(1.0, 2.0, 8.0).as_tuple()  # w / 4 .. 2 w around w = 4
    assert r.guidance_scale == 4.0
    assert r.config({"rho": 0.5, "mu": 0.0, "gamma": 0.0, "guidance_scale": 2.0}).guidance_scale == 2.0
    assert r.config({"rho": 0.5}).guidance_scale == 4.0  # not searched: the fixed weight


def test_guidance_scale_fixed_by_the_flag(class_dir) -> None:
    searched, fixed = resolve(class_dir), resolve(class_dir, guidance_scale=3.0)
    assert "guidance_scale" not in fixed.space and fixed.guidance_scale == 3.0
    assert fixed.config({"rho": 1.0}).guidance_scale == 3.0
    assert fixed.study_name != searched.study_name != resolve(class_dir, guidance_scale=5.0).study_name
    with pytest.raises(SettingError, match="give one"):
        SearchSettings("custom", "0", guidance_scale=3.0, space={"guidance_scale": Lattice(1, 2, 8)})


def test_cfg_alone_is_a_space_of_guidance_scale_only(class_dir) -> None:
    r = resolve(class_dir, space={"guidance_scale": Lattice(1.0, 1.5, 8.0)})
    config = r.config({"guidance_scale": 2.25})
    assert (config.rho, config.mu, config.gamma, config.guidance_scale) == (0.0, 0.0, 0.0, 2.25)
    assert not config.guided


def test_baselines_search_their_strength_and_the_weight(class_dir) -> None:
    r = resolve(class_dir, method="dps")
    assert set(r.space) == {"strength", "guidance_scale"}
    assert r.config({"strength": 0.5, "guidance_scale": 8.0}) == TFGConfig.preset(
        "dps", 0.5, guidance_scale=8.0, clip_x0=True
    )
    with pytest.raises(SettingError, match="must name strength"):
        SearchSettings("custom", "0", method="dps", space={"guidance_scale": Lattice(1, 2, 8)})


def test_unconditional_tasks_refuse_a_cfg_weight_and_keep_their_space() -> None:
    task = get_task("gmm2d")
    plain = SearchSettings("gmm2d", "3").resolve(task)
    assert "guidance_scale" not in plain.space and plain.guidance_scale == 1.0
    assert "guidance_scale" not in plain._identity()  # the names of earlier studies stay
    assert SearchSettings("gmm2d", "3", guidance_scale=1.0).resolve(task).study_name == plain.study_name
    with pytest.raises(SettingError, match="needs a conditional model"):
        SearchSettings("gmm2d", "3", guidance_scale=2.0).resolve(task)
    with pytest.raises(SettingError, match="needs a conditional model"):
        SearchSettings(
            "gmm2d", "3", space={"rho": Lattice(1, 2, 4), "guidance_scale": Lattice(1, 2, 4)}
        ).resolve(task)


def test_warm_start_points_take_the_default_weight(class_dir) -> None:
    r = resolve(class_dir, seed_configs=({"rho": 0.5},))
    assert r.seed_configs == [{"guidance_scale": 4.0, "rho": 0.5}]
    assert search_point(TFGConfig.preset("mpgd", 1.0, guidance_scale=4.0))["guidance_scale"] == 4.0
    plain = SearchSettings("gmm2d", "3", seed_configs=({"rho": 0.5},)).resolve(get_task("gmm2d"))
    assert plain.seed_configs == [{"rho": 0.5}]  # unchanged where the weight is not searched


def test_search_of_a_conditional_pipeline_through_the_cli(class_dir, tmp_path, monkeypatch, capsys) -> None:
    """A short search: the stored configurations carry weights of the lattice; the study records
    the model's identity; ``-o`` carries the task options; the model path is stored absolute."""
    monkeypatch.chdir(class_dir.parent)
    db = f"sqlite:///{tmp_path / 's.db'}"
    args = ["search", "--task", "custom", "--target", "0", "--storage", db, "--search", "random"]
    args += ["--trials", "4", "--wave", "4", "--samples", "2", "--final-samples", "2", "--final-top", "1"]
    args += ["--steps", "2", "--quiet", "--json", "--threads", "1"]
    for key, value in options("pipe", class_label="1", guidance_scale="4").items():
        args += ["-o", f"{key}={value}"]
    result = run_cli(args, capsys)
    assert result.code == 0, result.err
    name = json.loads(result.out)["study"]
    main = optuna.load_study(study_name=name, storage=db)
    info = StudyInfo.of(main)
    assert info is not None and info.settings["task_options"]["model"] == str(class_dir)
    assert info.model_identity == get_task("custom", options(class_dir, class_label="1")).model_identity()
    search = optuna.load_study(study_name=f"{name}:search", storage=db)
    scales = {t.user_attrs["tfg_search:trial"]["config"]["guidance_scale"] for t in search.trials}
    assert scales and scales <= {1.0, 2.0, 4.0, 8.0}


def test_old_flag_and_bad_cli_inputs_are_one_line(tmp_path, capsys) -> None:
    db = tmp_path / "s.db"
    base = ["search", "--task", "gmm2d", "--target", "3", "--storage", f"sqlite:///{db}"]
    for extra, message in (
        (["--task-option", "a=1", "-o", "a=2"], "task option a is given twice"),
        (["--guidance-scale", "2"], "needs a conditional model"),
        (["--guidance-scale", "-1"], "--guidance-scale must be a finite number >= 0"),
        (["--dtype", "float16", "--device", "cpu"], "--dtype float16 needs a GPU"),
        (["--dtype", "float64"], "--dtype must be one of float32, float16, bfloat16"),
        (["--dtype", "bfloat16", "-o", "dtype=float32"], "disagree"),
    ):
        result = run_cli(base + extra, capsys)
        assert result.code == 2 and result.err.count("\n") == 1, (extra, result.err)
        assert message in result.err
    assert not db.exists()


def test_dtype_casts_the_models_and_keeps_float32_ones() -> None:
    plain = get_task("digits")
    model32, _ = plain.diffusion("cpu")
    half = get_task("digits", {"dtype": "bfloat16"})
    model16, _ = half.diffusion("cpu")
    assert next(model16.parameters()).dtype == torch.bfloat16
    assert next(model32.parameters()).dtype == torch.float32 and plain.diffusion("cpu")[0] is model32
    assert half.diffusion("cpu")[0] is model16  # one copy per process
    with pytest.raises(TFGSearchError, match="float16 needs a GPU"):
        get_task("digits", {"dtype": "float16"}).diffusion("cpu")
    with pytest.raises(TFGSearchError, match="dtype must be one of"):
        get_task("digits", {"dtype": "int8"})
    r = SearchSettings("digits", "3", dtype="bfloat16").resolve(half)
    assert r.task_options == {"dtype": "bfloat16"}
    assert r.study_name != SearchSettings("digits", "3").resolve(plain).study_name


def test_evaluate_in_bfloat16_and_with_a_guidance_scale(class_dir, capsys) -> None:
    args = ["evaluate", "--task", "gmm2d", "--target", "3", "--samples", "4", "--steps", "3", "--json"]
    result = run_cli([*args, "--dtype", "bfloat16"], capsys)
    assert result.code == 0, result.err
    assert 0 <= json.loads(result.out)["validity"] <= 1
    result = run_cli([*args, "--guidance-scale", "3"], capsys)
    assert result.code == 2 and "needs a conditional model" in result.err
    custom = ["evaluate", "--task", "custom", "--target", "0", "--samples", "2", "--steps", "2", "--json"]
    for key, value in options(class_dir, class_label="1").items():
        custom += ["-o", f"{key}={value}"]
    result = run_cli([*custom, "--guidance-scale", "3"], capsys)
    assert result.code == 0, result.err


def test_bad_custom_inputs_on_search_are_one_line(class_dir, tmp_path, capsys) -> None:
    """Unknown -o keys, pickle weights, a guidance_scale option without a condition: one line, exit
    2, no database written."""
    import shutil

    pickled = shutil.copytree(class_dir, tmp_path / "pickled")
    weights = pickled / "unet" / "diffusion_pytorch_model.safetensors"
    weights.rename(weights.with_name("diffusion_pytorch_model.bin"))
    db = tmp_path / "s.db"
    base = ["search", "--task", "custom", "--target", "0", "--storage", f"sqlite:///{db}"]
    for opts, message in (
        ({**options(class_dir, class_label="1"), "colour": "red"}, "unexpected keyword argument 'colour'"),
        (options(pickled, class_label="1"), "is a pickle file"),
        (options(class_dir, guidance_scale="3"), "give the condition as -o class_label=ID"),
        ({k: v for k, v in options(class_dir).items() if k != "evaluator"}, "needs options evaluator=..."),
    ):
        args = [*base, *(x for key, value in opts.items() for x in ("-o", f"{key}={value}"))]
        result = run_cli(args, capsys)
        assert result.code == 2 and result.err.count("\n") == 1, (opts, result.err)
        assert message in result.err, result.err
    assert not db.exists()

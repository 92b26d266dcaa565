"""Issue 25's "done when": a tiny random Stable-Diffusion-shaped pipeline folder (UNet2DConditionModel,
AutoencoderKL, CLIPTextModel + tokenizer, built from configs: tests/helpers/tiny_pipelines.py) is
searched end to end through the CLI with a prompt and classifier-free guidance, in-process and on
Ray, with its predictor and evaluator in a module of the working folder (no PYTHONPATH); its trials
store decoder passes; the answer exported with ``--format diffusers`` drives ``TFGPipeline`` to
the samples ``tfg-search sample`` saves, bit for bit; the bad inputs are one line and exit 2."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers.cli import run_cli, run_proc
from tests.helpers.tiny_pipelines import sd_pipeline
from tfg_search import TFGConfig, TFGPipeline
from tfg_search.guidance import LatentDecoder

GUIDES = '''"""A predictor and an evaluator on decoded images in [-1, 1] (the working folder's module)."""
import torch

CHANNEL = {"red": 0, "green": 1, "blue": 2}


def log_f(x, target):
    """log f: how much the target channel's mean exceeds the image's mean (differentiable)."""
    return x[:, CHANNEL[target]].mean(dim=(1, 2)) - x.mean(dim=(1, 2, 3))


def judge(x, target):
    """Success per sample: the target channel is the brightest."""
    return (x.mean(dim=(2, 3)).argmax(1) == CHANNEL[target]).double()
'''

OPTIONS = {"model": "pipe", "prompt": "a cat", "predictor": "sd_guides:log_f", "evaluator": "sd_guides:judge"}
"""The custom task's options: the pipeline and the module of the working folder (``work``)."""
BUDGET = [
    *("--search", "random", "--trials", "2", "--wave", "2", "--samples", "2", "--final-samples", "2"),
    *("--final-top", "1", "--steps", "3", "--no-seed-presets", "--quiet", "--json"),
]
"""The smallest search budget."""


def search_argv(options: dict[str, str] = OPTIONS, *flags: str) -> list[str]:
    """``tfg-search search`` of the tiny pipeline toward ``red`` with ``options`` and ``flags``."""
    given = [x for key, value in options.items() for x in ("-o", f"{key}={value}")]
    return ["search", "--task", "custom", "--target", "red", *given, *BUDGET, *flags]


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A working folder: the pipeline ``pipe/`` and the module ``sd_guides.py``."""
    folder = tmp_path_factory.mktemp("work")
    sd_pipeline(folder / "pipe")
    (folder / "sd_guides.py").write_text(GUIDES)
    return folder


@pytest.fixture
def in_work(work: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.chdir(work)
    monkeypatch.delenv("PYTHONPATH", raising=False)
    yield work
    sys.modules.pop("sd_guides", None)
    if str(work) in sys.path:
        sys.path.remove(str(work))


def test_a_text_latent_pipeline_searched_exported_and_reproduced(
    in_work: Path, tmp_path: Path, capsys
) -> None:
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    argv = search_argv(OPTIONS, "--guidance-scale", "3", "--threads", "1", "--storage", url, "--study", "sd")
    found = run_cli([*argv, "--out-dir", str(tmp_path / "plots")], capsys)
    assert found.code == 0, found.err
    report = json.loads(found.out)
    assert report["best"]["config"]["guidance_scale"] == 3.0 and not report["best"]["config"]["clip_x0"]
    passes = report["compute"]["passes"]  # a latent task's trials count their decoder passes
    assert passes["decoder"] > passes["decoder_backward"] > 0 and passes["denoiser"] > 0
    shown = run_cli(["best", "--study", "sd", "--storage", url], capsys)
    assert shown.code == 0 and f"{passes['decoder']:,} decoder" in shown.out

    elsewhere = tmp_path / "elsewhere"  # the study stored the model folder's absolute path
    elsewhere.mkdir()
    os.chdir(elsewhere)
    tensors = elsewhere / "sd.safetensors"
    sample = ["sample", "--study", "sd", "--storage", url, "--n", "3", "--seed", "4", "--threads", "1"]
    sampled = run_cli([*sample, "--device", "cpu", "--save-tensors", str(tensors)], capsys)
    assert sampled.code == 0, sampled.err
    assert "metrics: validity=" in sampled.out
    saved = load_file(tensors)["samples"]
    assert saved.shape == (3, 3, 16, 16)  # decoded images
    assert run_cli(["export", "--study", "sd", "--storage", url, "--format", "diffusers", "--out", "answer"],
                   capsys).code == 0  # fmt: skip

    config, meta = TFGConfig.from_pretrained(elsewhere / "answer", return_metadata=True)
    assert config.guidance_scale == 3.0 and meta["task_options"]["prompt"] == "a cat"
    guides = importlib.import_module("sd_guides")
    pipe = TFGPipeline.from_pretrained(in_work / "pipe")
    common = {
        "predictor": lambda x: guides.log_f(x, meta["target"]),
        "tfg_config": config,
        "prompt": meta["task_options"]["prompt"],
        "num_inference_steps": meta["num_inference_steps"],
        "num_images_per_prompt": 3,
    }
    latents = pipe(generator=torch.Generator().manual_seed(4), output_type="latent", **common).images
    with torch.no_grad():
        assert torch.equal(LatentDecoder(pipe.vae)(latents), saved)
    images = pipe(generator=torch.Generator().manual_seed(4), output_type="pt", **common).images
    assert torch.equal(images, (saved / 2 + 0.5).clamp(0, 1))


@pytest.mark.ray
@pytest.mark.slow
def test_the_same_search_on_ray(work: Path, tmp_path: Path) -> None:
    """``--executor ray`` from the working folder, no PYTHONPATH: the actors load the pipeline and
    the module (sent with the job's runtime_env) and store decoder passes too."""
    pytest.importorskip("ray")
    url = f"sqlite:///{tmp_path / 'ray.db'}"
    argv = search_argv({**OPTIONS, "guidance_scale": "4"}, "--executor", "ray", "--workers", "1")
    argv += ["--storage", url]
    run = run_proc([*argv, "--study", "sd-ray", "--out-dir", str(tmp_path / "plots")], work, 600,
                   env={"PYTHONPATH": "", "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert run.code == 0, run.err[-3000:]
    report = json.loads(run.out)
    assert report["trials"]["failed"] == 0 and report["compute"]["passes"]["decoder"] > 0
    assert report["best"]["config"]["guidance_scale"] in (1.0, 2.0, 4.0, 8.0)  # searched around 4


def _bin_pipeline(work: Path, tmp_path: Path) -> str:
    """A copy of the pipeline whose unet holds pickle weights only."""
    folder = tmp_path / "bin"
    shutil.copytree(work / "pipe", folder)
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    weights.rename(weights.with_suffix(".bin"))
    return str(folder)


NO_PROMPT = {k: v for k, v in OPTIONS.items() if k != "prompt"}


@pytest.mark.parametrize(
    ("options", "flags", "message"),
    [
        ({**OPTIONS, "model": "BIN"}, [], "is a pickle file (loading one can run code)"),
        (NO_PROMPT, [], "give the condition as -o prompt=TEXT"),
        ({**OPTIONS, "model": "../pipe"}, [], "custom model folder '../pipe' does not exist"),
        ({**OPTIONS, "colour": "red"}, [], "unexpected keyword argument 'colour'"),
        (OPTIONS, ["--dtype", "float16"], "--dtype float16 needs a GPU"),
        (None, ["--guidance-scale", "3"], "needs a conditional model"),
    ],
)
def test_bad_inputs_are_one_line_and_write_nothing(
    in_work: Path, tmp_path: Path, capsys, options: dict[str, str] | None, flags: list[str], message: str
) -> None:
    if options is None:  # an unconditional model: the bundled digits
        argv = ["search", "--task", "digits", "--target", "3", *BUDGET, *flags]
    else:
        if options.get("model") == "BIN":
            options = {**options, "model": _bin_pipeline(in_work, tmp_path)}
        argv = search_argv(options, *flags)
    db = tmp_path / "bad.db"
    res = run_cli([*argv, "--storage", f"sqlite:///{db}", "--out-dir", str(tmp_path / "plots")], capsys)
    assert res.code == 2 and len(res.err.strip().splitlines()) == 1, res.err
    assert message in res.err
    assert not db.exists() and not (tmp_path / "plots").exists()

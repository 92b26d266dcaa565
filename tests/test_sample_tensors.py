"""``tfg-search sample`` prints its held-out metrics and saves its samples as safetensors; the answer
exported with ``--format diffusers`` drives ``TFGPipeline`` to the same tensors, bit for bit (the
bundled digits task, a pixel model; the latent text case: tests/test_e2e_sd.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tasks import get_task
from tasks.weights import weights_dir
from tests.helpers.cli import run_cli
from tfg_search import TFGConfig, TFGPipeline
from tfg_search.run.evaluation import evaluate
from tfg_search.store import query

SEARCH = [
    *("search", "--task", "digits", "--target", "3", "--search", "random", "--trials", "2", "--wave", "2"),
    *("--samples", "4", "--final-samples", "4", "--final-top", "1", "--steps", "4", "--no-seed-presets"),
    *("--threads", "1", "--quiet", "--json", "--study", "d3"),
]


def test_sample_saves_tensors_that_the_exported_pipeline_reproduces(tmp_path: Path, capsys) -> None:
    folder, url = tmp_path, f"sqlite:///{tmp_path / 'studies.db'}"
    res = run_cli([*SEARCH, "--storage", url, "--out-dir", str(folder / "plots")], capsys)
    assert res.code == 0, res.err
    tensors = folder / "samples.safetensors"
    res = run_cli(
        [
            *("sample", "--study", "d3", "--storage", url, "--n", "6", "--seed", "5", "--threads", "1"),
            *("--device", "cpu", "--save-tensors", str(tensors), "--json"),
        ],
        capsys,
    )
    assert res.code == 0, res.err
    shown = json.loads(res.out)
    saved = load_file(tensors)["samples"]
    assert saved.shape == (6, 1, 8, 8) and shown["files"] == [str(tensors)]

    assert run_cli(["export", "--study", "d3", "--storage", url, "--format", "diffusers", "--out",
                    str(folder / "answer")], capsys).code == 0  # fmt: skip
    config, meta = TFGConfig.from_pretrained(folder / "answer", return_metadata=True)
    assert config.guided  # a search's answer guides
    assert meta["model_identity"] == get_task("digits").model_identity()  # recorded by the search
    pipe = TFGPipeline.from_pretrained(weights_dir("digits"))
    out = pipe(
        predictor=get_task("digits").log_f(meta["target"]),
        tfg_config=config,
        num_inference_steps=meta["num_inference_steps"],
        num_images_per_prompt=6,
        generator=torch.Generator().manual_seed(5),
        output_type="latent",  # a pixel model's raw samples: images in [-1, 1]
    )
    assert torch.equal(out.images, saved)

    # the metrics printed are the evaluation's of these samples
    again = evaluate(get_task("digits"), "3", config, 6, 5, num_inference_steps=4, return_samples=True)
    assert torch.equal(again.samples, saved) and shown["metrics"] == again.metrics
    text = run_cli(["sample", "--study", "d3", "--storage", url, "--n", "6", "--seed", "5", "--threads",
                    "1", "--out", str(folder / "grid.png")], capsys)  # fmt: skip
    assert text.code == 0 and f"validity={again.metrics['validity']:.4g}" in text.out
    assert (folder / "grid.png").is_file()


def test_a_dtype_is_reproduced_too(tmp_path: Path, capsys) -> None:
    """``sample --dtype bfloat16`` and the pipeline loaded with ``dtype=torch.bfloat16``."""
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    assert run_cli([*SEARCH, "--storage", url, "--out-dir", str(tmp_path / "plots")], capsys).code == 0
    tensors = tmp_path / "bf16.safetensors"
    sample = ["sample", "--study", "d3", "--storage", url, "--n", "3", "--seed", "1", "--threads", "1"]
    res = run_cli([*sample, "--dtype", "bfloat16", "--save-tensors", str(tensors)], capsys)
    assert res.code == 0, res.err
    config = TFGConfig.from_dict(query.best_payload(url, "d3")["config"])
    pipe = TFGPipeline.from_pretrained(weights_dir("digits"), dtype=torch.bfloat16)
    out = pipe(
        predictor=get_task("digits", {"dtype": "bfloat16"}).log_f("3"),
        tfg_config=config,
        num_inference_steps=4,
        num_images_per_prompt=3,
        generator=torch.Generator().manual_seed(1),
        output_type="latent",
    )
    saved = load_file(tensors)["samples"]
    assert torch.equal(out.images, saved)
    res = run_cli(
        [*sample, "--dtype", "float16", "--device", "cpu", "--out", str(tmp_path / "a.png")], capsys
    )
    assert res.code == 2 and "--dtype float16 needs a GPU" in res.err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give --out FILE.png (a grid), --save-tensors FILE.safetensors, or both"),
        (["--save-tensors", "x.pt"], "--save-tensors must be a .safetensors file"),
        (["--save-tensors", "{taken}"], "exists; pass --force to overwrite it"),
        (["--out", "{missing}/grid.png"], "does not exist; create it"),
    ],
)
def test_bad_sample_outputs_are_one_line_before_any_work(tmp_path: Path, capsys, args, message) -> None:
    taken = tmp_path / "taken.safetensors"
    taken.write_bytes(b"mine")
    argv = [a.format(taken=taken, missing=tmp_path / "no") for a in args]
    url = f"sqlite:///{tmp_path / 'none.db'}"
    res = run_cli(["sample", "--study", "any", "--storage", url, *argv], capsys)
    assert res.code == 2 and len(res.err.strip().splitlines()) == 1 and message in res.err
    assert taken.read_bytes() == b"mine" and not (tmp_path / "none.db").exists()

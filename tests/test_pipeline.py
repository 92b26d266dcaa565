"""The answer as a diffusers object: ``TFGPipeline`` reproduces the service's samples bit for bit,
loads the bundled weight folders and pipeline folders, and ``TFGConfig`` saves as ``tfg_config.json``."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DDIMPipeline, DDIMScheduler, ImagePipelineOutput, UNet2DModel
from PIL import Image

from tasks import get_task
from tasks.shapes import ShapesTask
from tasks.weights import weights_dir
from tests.helpers.tiny_pipelines import NUM_CLASSES, class_pipeline
from tfg_search import Conditioning, TFGConfig, TFGPipeline, guided_sample
from tfg_search.run.evaluation import evaluate


@pytest.fixture(scope="module")
def shapes_pipe() -> TFGPipeline:
    return TFGPipeline.from_pretrained(weights_dir("shapes"))


@pytest.mark.parametrize(("task", "shape"), [("shapes", (3, 32, 32)), ("digits", (1, 8, 8))])
def test_the_bundled_folders_load_as_pipelines(task: str, shape: tuple[int, ...]) -> None:
    pipe = TFGPipeline.from_pretrained(weights_dir(task))
    assert isinstance(pipe.unet, UNet2DModel) and isinstance(pipe.scheduler, DDIMScheduler)
    assert pipe.vae is None and pipe.text_encoder is None and pipe.sample_shape == shape
    model, scheduler = get_task(task).diffusion("cpu")  # the task's own models, loaded its way
    assert pipe.scheduler.config == scheduler.config
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in pipe.unet.state_dict().items())
    # model_index.json names diffusers' DDIMPipeline: diffusers itself loads the folder for plain DDIM
    assert isinstance(DDIMPipeline.from_pretrained(weights_dir(task)), DDIMPipeline)


class QuickShapes(ShapesTask):
    """The shapes task with a cheap judge: its sampling path is the service's, untouched."""

    def compute_metrics(self, samples: torch.Tensor, target: str) -> dict[str, float]:
        return {"validity": 0.0}


def test_the_pipeline_gives_the_service_samples_bit_for_bit(shapes_pipe: TFGPipeline) -> None:
    """The shapes task sampled through run/evaluation.py and through TFGPipeline with the same
    config, seed and batch: identical tensors."""
    task = QuickShapes()
    config = TFGConfig(rho=0.5, mu=1.0, gamma=0.01, n_iter=2)
    result = evaluate(
        task, "cyan-triangle", config, n_samples=4, seed=11, num_inference_steps=6, return_samples=True
    )
    out = shapes_pipe(
        predictor=task.log_f("cyan-triangle"),
        tfg_config=result.config,  # what the service stored: the task's clip_x0 included
        num_inference_steps=6,
        num_images_per_prompt=4,
        generator=torch.Generator().manual_seed(11),
        output_type="latent",
    )
    assert isinstance(out, ImagePipelineOutput)
    assert torch.equal(out.images, result.samples)


def test_output_types_are_diffusers(shapes_pipe: TFGPipeline) -> None:
    kwargs = {"num_inference_steps": 3, "num_images_per_prompt": 2}
    raw = shapes_pipe(generator=torch.Generator().manual_seed(0), output_type="latent", **kwargs).images
    pt = shapes_pipe(generator=torch.Generator().manual_seed(0), output_type="pt", **kwargs).images
    arr = shapes_pipe(generator=torch.Generator().manual_seed(0), output_type="np", **kwargs).images
    pil = shapes_pipe(generator=torch.Generator().manual_seed(0), **kwargs).images
    assert torch.equal(pt, (raw / 2 + 0.5).clamp(0, 1))
    assert arr.shape == (2, 32, 32, 3) and np.array_equal(arr, pt.permute(0, 2, 3, 1).numpy())
    assert len(pil) == 2 and isinstance(pil[0], Image.Image) and pil[0].size == (32, 32)
    (again,) = shapes_pipe(
        generator=torch.Generator().manual_seed(0), return_dict=False, output_type="pt", **kwargs
    )
    assert torch.equal(again, pt)
    with pytest.raises(ValueError, match="output_type must be one of pil, np, pt, latent"):
        shapes_pipe(output_type="jpg", **kwargs)
    with pytest.raises(ValueError, match="needs a predictor"):
        shapes_pipe(tfg_config=TFGConfig(rho=1.0), **kwargs)


def test_a_saved_config_drives_the_pipeline_from_its_folder(tmp_path: Path, shapes_pipe: TFGPipeline) -> None:
    folder = tmp_path / "answer"
    shutil.copytree(weights_dir("shapes"), folder)
    config = TFGConfig(rho=0.25, mu=0.48, gamma=0.1, guidance_scale=1.0)
    config.save_pretrained(folder, task="shapes", target="cyan-triangle", model_identity="abc")
    pipe = TFGPipeline.from_pretrained(folder)
    assert pipe.tfg_config == config
    task = get_task("shapes")
    common = {"num_inference_steps": 3, "num_images_per_prompt": 2, "output_type": "latent"}
    by_default = pipe(
        predictor=task.log_f("cyan-triangle"), generator=torch.Generator().manual_seed(1), **common
    )
    given = shapes_pipe(
        predictor=task.log_f("cyan-triangle"),
        tfg_config=config,
        generator=torch.Generator().manual_seed(1),
        **common,
    )
    assert torch.equal(by_default.images, given.images)


def test_tfg_config_file_is_diffusers_format_and_guards_what_is_there(tmp_path: Path) -> None:
    config = TFGConfig(rho=0.5, mu=2.0, n_iter=3, guidance_scale=4.0)
    path = config.save_pretrained(tmp_path, task="shapes", target="cyan-triangle", model_identity="0" * 64)
    body = json.loads(path.read_text())
    assert (
        body["_class_name"] == "TFGConfig" and "_diffusers_version" in body and "_tfg_search_version" in body
    )
    assert {k: body[k] for k in config.to_dict()} == config.to_dict() and body["target"] == "cyan-triangle"
    loaded, metadata = TFGConfig.from_pretrained(tmp_path, return_metadata=True)
    assert loaded == config and metadata == {
        "task": "shapes",
        "target": "cyan-triangle",
        "model_identity": "0" * 64,
    }
    assert TFGConfig.from_pretrained(path) == config  # the file itself
    config.save_pretrained(tmp_path, task="shapes", target="cyan-triangle", model_identity="0" * 64)  # same
    before = path.read_text()
    with pytest.raises(FileExistsError, match="pass overwrite=True"):
        config.replace(rho=1.0).save_pretrained(tmp_path, task="shapes")
    assert path.read_text() == before  # nothing lost
    config.replace(rho=1.0).save_pretrained(tmp_path, overwrite=True)
    assert TFGConfig.from_pretrained(tmp_path).rho == 1.0
    with pytest.raises(ValueError, match="metadata key 'rho' is taken"):
        config.save_pretrained(tmp_path / "other", rho=3)
    older = {k: v for k, v in body.items() if k != "guidance_scale"}  # a file of an earlier version
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "tfg_config.json").write_text(json.dumps(older))
    assert TFGConfig.from_pretrained(tmp_path / "old").guidance_scale == 1.0
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "tfg_config.json").write_text(json.dumps({"_class_name": "DDIMScheduler"}))
    with pytest.raises(ValueError, match="is not a TFGConfig file"):
        TFGConfig.from_pretrained(tmp_path / "bad")
    with pytest.raises(FileNotFoundError, match=r"no tfg_config\.json"):
        TFGConfig.from_pretrained(tmp_path / "missing")


def test_saving_and_loading_the_config_imports_no_torch(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from tfg_search import TFGConfig\n"
        f"TFGConfig(rho=1.0).save_pretrained({str(tmp_path)!r}, task='digits')\n"
        f"assert TFGConfig.from_pretrained({str(tmp_path)!r}).rho == 1.0\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])


@pytest.fixture(scope="module")
def class_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return class_pipeline(tmp_path_factory.mktemp("class") / "pipe")


def test_class_labels_with_cfg_are_the_sampler_with_a_conditioning(class_dir: Path) -> None:
    pipe = TFGPipeline.from_pretrained(class_dir)  # a DDPMPipeline folder: sampled on its DDIM chain
    pipe.to(torch.float64)
    null = NUM_CLASSES - 1
    x_t = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    config = TFGConfig(rho=0.2, mu=0.2, n_iter=2, guidance_scale=3.0, clip_x0=False)

    def predictor(x: torch.Tensor) -> torch.Tensor:
        return -((x - 0.3) ** 2).flatten(1).sum(1)

    out = pipe(
        predictor=predictor,
        tfg_config=config,
        class_labels=1,
        num_inference_steps=5,
        num_images_per_prompt=3,
        generator=torch.Generator().manual_seed(4),
        latents=x_t,
        output_type="latent",
    )
    conditioning = Conditioning({"class_labels": torch.tensor([1])}, {"class_labels": torch.tensor([null])})
    scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    want = guided_sample(
        pipe.unet,
        scheduler,
        predictor,
        config,
        (3, 1, 8, 8),
        5,
        generator=torch.Generator().manual_seed(4),
        latents=x_t,
        conditioning=conditioning,
    )
    assert torch.equal(out.images, want)


def test_pickle_weights_are_not_loaded(tmp_path: Path) -> None:
    folder = class_pipeline(tmp_path / "pickled", safe=False)
    with pytest.raises(OSError, match="safetensors"):
        TFGPipeline.from_pretrained(folder)

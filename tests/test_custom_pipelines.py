"""The ``custom`` task on real diffusers pipeline folders: text and class conditioning with
classifier-free guidance, latent models with a VAE, safetensors only, the model identity.

The folders are tiny random pipelines written by ``save_pretrained`` (tests/helpers/tiny_pipelines.py).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel, UNet2DModel

from tasks import get_task
from tasks.custom import CustomTask
from tests.helpers.tiny_pipelines import NUM_CLASSES, class_pipeline, sd_pipeline
from tfg_search.errors import TFGSearchError

HERE = __name__


def log_f(x: torch.Tensor, target: str) -> torch.Tensor:
    """Guide towards images whose mean pixel is the target value (any image shape)."""
    return -(x.flatten(1).mean(1) - float(target)).abs()


def success(x: torch.Tensor, target: str) -> torch.Tensor:
    """Per-sample success: mean pixel within 0.25 of the target."""
    return ((x.flatten(1).mean(1) - float(target)).abs() < 0.25).float()


@pytest.fixture(scope="module")
def sd_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sd_pipeline(tmp_path_factory.mktemp("sd") / "pipe")


@pytest.fixture(scope="module")
def class_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return class_pipeline(tmp_path_factory.mktemp("cls") / "pipe")


def custom(folder: Path | str, **extra: str) -> CustomTask:
    task = get_task(
        "custom",
        {"model": str(folder), "predictor": f"{HERE}:log_f", "evaluator": f"{HERE}:success", **extra},
    )
    assert isinstance(task, CustomTask)
    return task


def test_stable_diffusion_folder_is_a_latent_text_conditional_task(sd_dir) -> None:
    task = custom(sd_dir, prompt="a cat", guidance_scale="3")
    assert task.sample_shape == (4, 8, 8) and task.image_shape == (3, 16, 16)
    assert not task.clip_x0 and task.guidance_scale == 3.0 and task.negative_prompt == ""
    model, scheduler = task.diffusion()
    assert isinstance(model, UNet2DConditionModel) and isinstance(scheduler, DDIMScheduler)
    assert scheduler.config.beta_schedule == "scaled_linear" and scheduler.config.beta_end == 0.012
    assert task.describe()["condition"] == "prompt 'a cat', negative ''"


def test_class_conditional_folder(class_dir) -> None:
    task = custom(class_dir, class_label="1")
    assert task.sample_shape == task.image_shape == (1, 8, 8) and task.clip_x0
    assert (task.class_label, task.null_class) == (1, NUM_CLASSES - 1)  # the default null class
    assert custom(class_dir, class_label="2", null_class="0").null_class == 0
    model, scheduler = task.diffusion()
    assert isinstance(model, UNet2DModel) and isinstance(scheduler, DDIMScheduler)  # was a DDPMScheduler


def test_relative_folder_is_resolved(class_dir, monkeypatch) -> None:
    monkeypatch.chdir(class_dir.parent)
    task = custom("./pipe", class_label="0")
    assert task.folder.root == class_dir.resolve() and task.folder.root.is_absolute()


@pytest.mark.parametrize(
    ("folder", "extra", "message"),
    [
        ("class", {}, r"class-conditional \(4 classes\): give the condition as -o class_label=ID"),
        ("class", {"class_label": "4"}, r"class_label must be a class id in 0\.\.3, got '4'"),
        ("class", {"class_label": "1", "null_class": "x"}, "null_class must be an integer >= 0"),
        ("class", {"class_label": "1", "prompt": "a cat"}, "need a pipeline with text_encoder/"),
        ("class", {"class_label": "1", "clip_x0": "maybe"}, "clip_x0 must be true or false"),
        ("class", {"class_label": "1", "guidance_scale": "-1"}, "guidance_scale must be a number >= 0"),
        ("class", {"class_label": "1", "guidance_scale": "inf"}, "guidance_scale must be a number >= 0"),
        ("sd", {}, "text-conditional: give the condition as -o prompt=TEXT"),
        ("sd", {"prompt": "a", "class_label": "1"}, "need a unet with num_class_embeds"),
        ("sd", {"prompt": "a", "clip_x0": "true"}, "a pipeline with vae/ samples latents"),
    ],
)
def test_bad_condition_options(sd_dir, class_dir, folder, extra, message) -> None:
    with pytest.raises(TFGSearchError, match=message):
        custom(sd_dir if folder == "sd" else class_dir, **extra)


def test_guidance_scale_needs_a_condition(tmp_path) -> None:
    from tests.helpers.models import ddim, tiny_unet

    tiny_unet().save_pretrained(tmp_path)
    ddim().save_pretrained(tmp_path)
    with pytest.raises(TFGSearchError, match="guidance_scale=2 needs a conditional model"):
        custom(tmp_path, guidance_scale="2")


def test_incomplete_pipelines_are_refused(sd_dir, tmp_path) -> None:
    no_text = shutil.copytree(sd_dir, tmp_path / "no-text")
    shutil.rmtree(no_text / "tokenizer")
    with pytest.raises(TFGSearchError, match="has text_encoder/ but no tokenizer/"):
        custom(no_text, prompt="a")
    shutil.rmtree(no_text / "text_encoder")
    with pytest.raises(TFGSearchError, match="a UNet2DConditionModel needs text_encoder/ and tokenizer/"):
        custom(no_text)
    no_weights = shutil.copytree(sd_dir, tmp_path / "no-weights")
    (no_weights / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(TFGSearchError, match=r"vae has no weights \(diffusion_pytorch_model.safetensors\)"):
        custom(no_weights, prompt="a")


def test_pickle_weights_are_refused_with_a_command_that_converts_them(tmp_path) -> None:
    folder = class_pipeline(tmp_path / "bin", safe=False)
    with pytest.raises(TFGSearchError) as err:
        custom(folder, class_label="1")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{folder / 'unet' / 'diffusion_pytorch_model.bin'} is a pickle file")
    assert "tfg-search loads safetensors only" in message
    command = re.search(r'python -c "(.+)"$', message)
    assert command is not None
    exec(command.group(1), {})  # the advice works: the folder loads afterwards
    task = custom(folder, class_label="1")
    assert isinstance(task.diffusion()[0], UNet2DModel)


def test_text_encoder_pickle_weights_are_refused(sd_dir, tmp_path) -> None:
    folder = shutil.copytree(sd_dir, tmp_path / "sd-bin")
    (folder / "text_encoder" / "model.safetensors").rename(folder / "text_encoder" / "pytorch_model.bin")
    with pytest.raises(
        TFGSearchError, match=r"text_encoder/pytorch_model.bin is a pickle file.*from transformers"
    ):
        custom(folder, prompt="a")


def test_model_identity(class_dir, tmp_path, monkeypatch) -> None:
    identity = custom(class_dir, class_label="1").model_identity()
    assert re.fullmatch(r"[0-9a-f]{64}", identity)
    monkeypatch.chdir(class_dir.parent)
    assert custom("./pipe", class_label="1").model_identity() == identity
    assert custom("pipe/../pipe", class_label="0").model_identity() == identity  # options are not the model
    copy = shutil.copytree(class_dir, tmp_path / "moved" / "copy")
    assert custom(copy, class_label="1").model_identity() == identity
    # The library version that wrote a config is not the model; the noise schedule is.
    config = copy / "scheduler" / "scheduler_config.json"
    config.write_text(config.read_text().replace('"_diffusers_version": "', '"_diffusers_version": "0.1-'))
    assert custom(copy, class_label="1").model_identity() == identity
    config.write_text(config.read_text().replace('"beta_end": 0.02', '"beta_end": 0.03'))
    assert custom(copy, class_label="1").model_identity() != identity
    # The same components as a model folder (config.json + scheduler_config.json) are the same model.
    flat = shutil.copytree(class_dir / "unet", tmp_path / "flat")
    shutil.copy(class_dir / "scheduler" / "scheduler_config.json", flat)
    assert custom(flat, class_label="1").model_identity() == identity
    other = class_pipeline(tmp_path / "other", seed=1)
    assert custom(other, class_label="1").model_identity() != identity


def test_identity_covers_every_component(sd_dir, tmp_path) -> None:
    identity = custom(sd_dir, prompt="a").model_identity()
    assert custom(shutil.copytree(sd_dir, tmp_path / "copy"), prompt="b").model_identity() == identity
    changed = shutil.copytree(sd_dir, tmp_path / "changed-vae")
    weights = changed / "vae" / "diffusion_pytorch_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-2] ^= 1  # one bit of one weight
    weights.write_bytes(bytes(data))
    assert custom(changed, prompt="a").model_identity() != identity
    changed = shutil.copytree(sd_dir, tmp_path / "changed-tokenizer")
    config = changed / "tokenizer" / "tokenizer_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "model_max_length": 8}))
    assert custom(changed, prompt="a").model_identity() != identity


def test_prompt_embeddings_are_those_of_stable_diffusion(sd_dir) -> None:
    from tasks.custom_loading import encode_prompts

    task = custom(sd_dir, prompt="a cat", negative_prompt="a dog")
    emb, neg = encode_prompts(task.folder, "a cat", "a dog", "cpu")
    pipe = StableDiffusionPipeline.from_pretrained(sd_dir, use_safetensors=True)
    ref, ref_neg = pipe.encode_prompt("a cat", "cpu", 1, True, "a dog")
    assert emb.shape == (1, 16, 16)
    assert torch.equal(emb, ref) and torch.equal(neg, ref_neg)  # the same computation, bit for bit
    assert not torch.equal(emb, neg)


def test_conditioning_of_both_branches(sd_dir, class_dir) -> None:
    cond = custom(class_dir, class_label="1", null_class="0").conditioning("0")
    assert cond is not None
    assert cond.cond["class_labels"].tolist() == [1] and cond.uncond["class_labels"].tolist() == [0]
    task = custom(sd_dir, prompt="a cat", negative_prompt="a dog")
    text = task.conditioning("0")
    assert text is not None and text.keys == ("encoder_hidden_states",)
    pipe = StableDiffusionPipeline.from_pretrained(sd_dir, use_safetensors=True)
    ref, ref_neg = pipe.encode_prompt("a cat", "cpu", 1, True, "a dog")
    assert torch.equal(text.cond["encoder_hidden_states"], ref)
    assert torch.equal(text.uncond["encoder_hidden_states"], ref_neg)
    again = custom(sd_dir, prompt="a cat", negative_prompt="a dog").conditioning("1")
    assert again.cond["encoder_hidden_states"] is text.cond["encoder_hidden_states"]  # once per process


def test_the_condition_reaches_the_denoiser(class_dir) -> None:
    from tfg_search.guidance import guided_sample
    from tfg_search.guidance.config import method_config

    def draw(label: str, scale: float) -> torch.Tensor:
        task = custom(class_dir, class_label=label)
        model, scheduler = task.diffusion()
        config = method_config("unguided").replace(guidance_scale=scale)
        return guided_sample(
            model,
            scheduler,
            task.log_f("0"),
            config,
            (2, *task.sample_shape),
            num_inference_steps=3,
            generator=torch.Generator().manual_seed(0),
            conditioning=task.conditioning("0"),
        )

    first = draw("1", 1.0)
    assert torch.equal(first, draw("1", 1.0))
    assert not torch.allclose(first, draw("2", 1.0))
    assert not torch.allclose(first, draw("1", 3.0))


def test_latent_log_f_is_the_predictor_on_decoded_images(sd_dir) -> None:
    task = custom(sd_dir, prompt="a cat")
    decoder = task.decoder()
    assert decoder is not None and custom(sd_dir, prompt="a", checkpointing="true").decoder().checkpointing
    vae = decoder.vae
    z = torch.randn(2, *task.sample_shape, generator=torch.Generator().manual_seed(0), requires_grad=True)
    value = task.log_f("0.1")(z)
    with torch.no_grad():
        images = vae.decode(z / vae.config.scaling_factor).sample
    assert images.shape == (2, *task.image_shape)
    assert torch.equal(value.detach(), log_f(images, "0.1"))
    (grad,) = torch.autograd.grad(value.sum(), z)
    assert grad.shape == z.shape and grad.abs().sum() > 0  # through the decoder to the latents


@pytest.mark.parametrize("kind", ["text-latent", "class-pixel"])
def test_short_guided_run_with_cfg(sd_dir, class_dir, kind) -> None:
    """tfg-search's evaluation of a CFG + TFG configuration: the evaluator judges images."""
    from tfg_search.guidance.config import method_config
    from tfg_search.run.evaluation import evaluate

    task = custom(sd_dir, prompt="a cat") if kind == "text-latent" else custom(class_dir, class_label="1")
    config = method_config("tfg", rho=0.5, mu=0.5, gamma=0.01, guidance_scale=3.0)
    result = evaluate(task, "0", config, 3, 0, num_inference_steps=3, return_samples=True)
    assert 0.0 <= result.metrics["validity"] <= 1.0
    assert result.samples is not None and tuple(result.samples.shape) == (3, *task.image_shape)
    assert result.config.guidance_scale == 3.0 and result.config.clip_x0 == task.clip_x0
    again = evaluate(task, "0", config, 3, 0, num_inference_steps=3, return_samples=True)
    assert torch.equal(result.samples, again.samples)
    plain = evaluate(
        task, "0", config.replace(guidance_scale=1.0), 3, 0, num_inference_steps=3, return_samples=True
    )
    assert not torch.allclose(result.samples, plain.samples)  # CFG changes the samples


def test_cli_evaluates_a_text_pipeline(sd_dir, capsys) -> None:
    from tests.helpers.cli import run_cli

    args = ["evaluate", "--task", "custom", "--target", "0", "--samples", "2", "--steps", "2", "--json"]
    args += ["--method", "mpgd", "--mu", "0.5", "-o", f"model={sd_dir}", "-o", "prompt=a cat on a mat"]
    args += ["-o", f"predictor={HERE}:log_f", "-o", f"evaluator={HERE}:success"]
    result = run_cli(args, capsys)
    assert result.code == 0, result.err
    assert 0.0 <= json.loads(result.out)["validity"] <= 1.0
    result = run_cli([*args[:-2], "-o", "evaluator=nowhere_at_all:f"], capsys)
    assert result.code == 2 and result.err.count("\n") == 1
    assert "cannot import evaluator 'nowhere_at_all:f'" in result.err

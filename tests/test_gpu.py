"""What a GPU user relies on, and the script that checks it on a GPU machine.

Tests marked ``cuda`` need a CUDA device (skipped without one; ``benchmarks/gpu_check.py`` runs them
with ``pytest -m cuda``): guided samples on CUDA are the CPU's in float64 (pixel and latent, CFG,
either decoding), a float16 / bfloat16 denoiser and VAE run in their dtype while the guidance stays
float32, ``TFGPipeline`` on CUDA, and the service's samples do not depend on the device (it seeds CPU
generators). The tests without the mark check ``benchmarks/gpu_check.py`` itself on the CPU: its
refusal without CUDA, its dry run, and its time budgets.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from tasks import get_task
from tests.helpers.models import ddim, tiny_unet
from tests.helpers.tiny_pipelines import class_pipeline, sd_pipeline
from tests.test_latent import pixel_log_f, tiny_vae
from tfg_search import Conditioning, TFGConfig, TFGPipeline, guided_sample
from tfg_search.guidance import LatentDecoder
from tfg_search.guidance.latent import sample_and_decode
from tfg_search.run.evaluation import evaluate
from tfg_search.run.worker import run_trial
from tfg_search.trial import TrialSpec

ROOT = Path(__file__).resolve().parents[1]
CUDA = "cuda"
NULL = 3  # the null class of the tiny class-conditional models (4 class embeddings)
LABELS = Conditioning({"class_labels": torch.tensor([2])}, {"class_labels": torch.tensor([NULL])})

cuda = pytest.mark.cuda


def gen(seed: int = 5) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def log_f(x: torch.Tensor) -> torch.Tensor:
    return -((x - 0.3) ** 2).flatten(1).sum(1)


def cfg_pixel_sample(device: str) -> torch.Tensor:
    """TFG on a class-conditional pixel UNet with CFG, float64, on ``device`` (CPU generator)."""
    unet = tiny_unet(seed=3, dtype=torch.float64, num_class_embeds=4).to(device)
    cfg = TFGConfig(rho=0.3, mu=0.3, gamma=0.01, n_iter=2, guidance_scale=2.0)
    shape, steps = (4, 1, 8, 8), 6
    return guided_sample(
        unet, ddim(), log_f, cfg, shape, steps, generator=gen(), device=device, conditioning=LABELS
    )


def latent_sample(device: str, checkpointing: bool) -> torch.Tensor:
    """TFG through a VAE decoder with CFG, float64, decoded, on ``device`` (CPU generator)."""
    unet = tiny_unet(seed=2, dtype=torch.float64, num_class_embeds=4).to(device)
    decoder = LatentDecoder(tiny_vae(seed=3, dtype=torch.float64).to(device), checkpointing=checkpointing)
    cfg = TFGConfig(rho=0.5, mu=0.5, n_iter=2, guidance_scale=3.0, clip_x0=False)
    (images,), (err,) = sample_and_decode(
        unet, ddim(), decoder.log_f(pixel_log_f), [cfg], (3, 1, 8, 8), [gen(7)], 4, device,
        conditioning=LABELS, decoder=decoder,
    )  # fmt: skip
    assert err is None
    return images


@cuda
def test_a_guided_cfg_sample_on_cuda_is_the_cpu_sample_in_float64() -> None:
    got, want = cfg_pixel_sample(CUDA), cfg_pixel_sample("cpu")
    assert got.device.type == "cuda" and got.dtype == torch.float64
    torch.testing.assert_close(got.cpu(), want, rtol=1e-8, atol=1e-8)


@cuda
@pytest.mark.parametrize("checkpointing", [False, True])
def test_a_latent_sample_on_cuda_is_the_cpu_sample_in_float64(checkpointing: bool) -> None:
    got = latent_sample(CUDA, checkpointing)
    assert got.device.type == "cuda" and got.shape == (3, 3, 16, 16) and got.dtype == torch.float64
    torch.testing.assert_close(got.cpu(), latent_sample("cpu", False), rtol=1e-8, atol=1e-8)


@cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_half_precision_denoiser_and_vae_run_in_their_dtype_and_the_guidance_in_float32(
    dtype: torch.dtype,
) -> None:
    unet = tiny_unet(seed=2, num_class_embeds=4).to(CUDA, dtype)
    vae = tiny_vae(seed=3).to(CUDA, dtype)
    seen: dict[str, set[torch.dtype]] = {"unet": set(), "vae": set(), "guide": set()}
    unet.register_forward_pre_hook(lambda _m, args: seen["unet"].add(args[0].dtype))
    vae.decoder.register_forward_pre_hook(lambda _m, args: seen["vae"].add(args[0].dtype))

    def guide(x: torch.Tensor) -> torch.Tensor:
        seen["guide"].add(x.dtype)
        return pixel_log_f(x)

    decoder = LatentDecoder(vae)
    cfg = TFGConfig(rho=0.5, mu=0.5, gamma=0.01, n_iter=2, guidance_scale=3.0, clip_x0=False)
    latents = guided_sample(
        unet, ddim(), decoder.log_f(guide), cfg, (4, 1, 8, 8), 5, generator=gen(), conditioning=LABELS
    )
    with torch.no_grad():
        images = decoder(latents)
    assert seen == {"unet": {dtype}, "vae": {dtype}, "guide": {torch.float32}}
    assert latents.dtype == images.dtype == torch.float32 and latents.device.type == "cuda"
    assert images.shape == (4, 3, 16, 16) and torch.isfinite(images).all()


@cuda
def test_tfg_pipeline_on_cuda_gives_the_cpu_samples_in_float64(tmp_path: Path) -> None:
    folder = class_pipeline(tmp_path / "class")

    def run(device: str) -> torch.Tensor:
        pipe = TFGPipeline.from_pretrained(folder).to(device, torch.float64)
        return pipe(
            predictor=log_f,
            tfg_config=TFGConfig(rho=0.3, mu=0.3, n_iter=2),
            class_labels=1,
            guidance_scale=2.0,
            num_inference_steps=4,
            num_images_per_prompt=3,
            generator=gen(11),
            output_type="latent",
        ).images

    got = run(CUDA)
    assert got.device.type == "cuda" and got.shape == (3, 1, 8, 8)
    torch.testing.assert_close(got.cpu(), run("cpu"), rtol=1e-8, atol=1e-8)


@cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_a_text_pipeline_with_cfg_runs_on_cuda(tmp_path: Path, dtype: torch.dtype) -> None:
    pipe = TFGPipeline.from_pretrained(sd_pipeline(tmp_path / "sd")).to(CUDA, dtype)
    common = {"prompt": "a cat", "guidance_scale": 3.0, "num_inference_steps": 3, "num_images_per_prompt": 2}
    config = TFGConfig(rho=0.2, mu=0.2, n_iter=1, clip_x0=False)
    out = pipe(predictor=pixel_log_f, tfg_config=config, generator=gen(1), output_type="pt", **common)
    latents = pipe(predictor=pixel_log_f, tfg_config=config, generator=gen(1), output_type="latent", **common)
    assert out.images.shape == (2, 3, 16, 16) and torch.isfinite(out.images).all()
    assert latents.images.dtype == torch.float32 and latents.images.shape == (2, 4, 8, 8)


@pytest.fixture
def no_tf32() -> Iterator[None]:
    """CUDA's float32 convolutions and matrix products in full float32 (PyTorch lets cuDNN use TF32
    by default, whose 10-bit mantissa is far coarser than float32 rounding)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@cuda
def test_the_service_samples_on_cuda_are_its_cpu_samples_up_to_rounding(no_tf32: None) -> None:
    """Every draw of a trial comes from a CPU generator seeded with its seed, so a seed gives the same
    samples on any device, up to the device's float32 rounding."""
    task, cfg = get_task("digits"), TFGConfig(rho=0.1, mu=0.1, n_iter=1)
    common = {"n_samples": 8, "seed": 4, "num_inference_steps": 5, "return_samples": True}
    on_cuda = evaluate(task, "3", cfg, device=CUDA, **common)
    on_cpu = evaluate(task, "3", cfg, device="cpu", **common)
    assert on_cuda.device.startswith("cuda") and on_cpu.device == "cpu"
    torch.testing.assert_close(on_cuda.samples, on_cpu.samples, rtol=0, atol=1e-3)


@cuda
def test_a_cuda_generator_reproduces_on_cuda_but_draws_other_samples_than_a_cpu_one() -> None:
    """Python users may pass a CUDA generator: it works and reproduces on its device, but its draws
    are not the CPU generator's (why the service seeds CPU generators)."""
    unet = tiny_unet(seed=3).to(CUDA)
    cfg = TFGConfig(rho=0.3, mu=0.3, n_iter=1)

    def run(generator: torch.Generator) -> torch.Tensor:
        return guided_sample(unet, ddim(), log_f, cfg, (4, 1, 8, 8), 4, generator=generator, device=CUDA)

    first = run(torch.Generator(CUDA).manual_seed(8))
    torch.testing.assert_close(run(torch.Generator(CUDA).manual_seed(8)), first, rtol=1e-6, atol=1e-6)
    assert first.device.type == "cuda" and torch.isfinite(first).all()
    assert not torch.allclose(run(gen(8)), first, atol=1e-2)


@cuda
@pytest.mark.parametrize(("task", "target"), [("gmm2d", "3"), ("shapes", "cyan-triangle")])
def test_a_trial_on_cuda_runs_there(task: str, target: str) -> None:
    spec = TrialSpec(0, task, target, TFGConfig(rho=0.25, mu=0.5, n_iter=1), 4, 0, 3, device=CUDA)
    outcome = run_trial(spec)
    assert outcome.ok, outcome.error
    assert outcome.device.startswith("cuda") and 0 <= outcome.metrics["validity"] <= 1


# -- benchmarks/gpu_check.py on this machine --------------------------------------------------------
def gpu_check(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "benchmarks/gpu_check.py", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_gpu_check_without_cuda_says_so_in_one_line_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "gpu_check.json"
    proc = gpu_check("--out", str(out))
    assert proc.returncode == 2 and proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1 and "sees no CUDA device" in proc.stderr
    assert not out.exists()
    proc = gpu_check("--device", "cpu")  # a dry run must not write the GPU results' file
    assert proc.returncode == 2 and proc.stderr.strip() == (
        "gpu_check: --device cpu is a dry run; give --out PATH (not the GPU results' file)"
    )


@pytest.mark.slow
def test_gpu_check_dry_run_records_the_tests_and_the_step_cost_with_memory(tmp_path: Path) -> None:
    out = tmp_path / "gpu_check.json"
    proc = gpu_check("--device", "cpu", "--only", "cuda-tests", "step-cost-float16", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["device"]["name"] == "cpu (dry run)" and data["passed"] is True
    tests = data["parts"]["cuda-tests"]
    assert tests["status"] == "passed" and set(tests["counts"]) == {"skipped"}  # no CUDA here
    assert tests["counts"]["skipped"] == len(tests["tests"]) >= 10
    step = data["parts"]["step-cost-float16"]
    assert step["status"] == "passed" and step["wall_s"] <= step["budget_s"]
    result = step["result"]
    assert result["args"]["dtype"] == "float16" and result["args"]["device"] == "cpu"
    latent = result["latent"]
    assert [r["checkpointing"] for r in latent["trials"]] == [False, False, False, True]
    for row in result["trials"] + latent["trials"]:
        memory = row["memory"]
        assert memory["peak_growth_bytes"] > 0
        assert memory["estimate_bytes"] > memory["estimate_weights_bytes"] > 0
        assert row["trial_s"] > 0 and row["floor_paper_s"] > 0


@pytest.mark.slow
def test_gpu_check_stops_each_part_at_its_budget_and_still_writes(tmp_path: Path) -> None:
    out = tmp_path / "gpu_check.json"
    parts = ["cuda-tests", "search-shapes"]
    proc = gpu_check("--device", "cpu", "--only", *parts, "--budget-s", "2", "--out", str(out))
    assert proc.returncode == 1, proc.stderr[-3000:]
    data = json.loads(out.read_text())
    assert list(data["parts"]) == parts and data["passed"] is False
    for part in data["parts"].values():
        assert part["status"] == "timed out"
        assert part["wall_s"] <= part["budget_s"] + 15  # stopped, then given 10 s to exit
    assert json.loads(proc.stdout.splitlines()[-2]) == dict.fromkeys(parts, "timed out")

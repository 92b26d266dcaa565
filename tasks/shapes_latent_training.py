"""Training of the ``shapes-latent`` models on CPU: a VAE, then a colour-conditional latent UNet, resumable.

Two stages, each checkpointed every ``checkpoint_every`` steps to ``<out>/checkpoint/<stage>-train.pt``
(read with ``torch.load(weights_only=True)``) and continued from it when run again; batches are
drawn from a seed derived from (seed, step), so a resumed run draws what an uninterrupted one would.

1. ``vae``: a diffusers ``AutoencoderKL`` (:data:`tasks.nets.SHAPES_VAE_CONFIG`, 32x32x3 -> 8x8x4)
   trained on *balanced* fresh images (``rates="uniform"``: the rare pairs must reconstruct as well
   as the common ones) with MSE + L1 reconstruction and a small KL term; its ``scaling_factor`` is
   then set to 1 / std of the latents (as Stable Diffusion's 0.18215). **Gate** (issue 25): the
   analytic judges (:mod:`tasks.shapes_judge`) must read the reconstructions of fresh real images
   as they read the images (colour and shape agree on >= :data:`GATE_MIN` of them), or the UNet
   is not trained (:func:`vae_gate`).
2. ``unet``: a class-conditional ``UNet2DModel`` (:data:`tasks.nets.SHAPES_LATENT_UNET_CONFIG`)
   on the latents of the *skewed* data (:data:`tasks.shapes_data.PAIR_RATES`), the colour label
   replaced by the null class with probability :data:`P_UNCOND` (classifier-free guidance),
   v-prediction from the start (the ``shapes`` UNet needed a v-prediction phase:
   :mod:`tasks.shapes_training`), AdamW, cosine learning rate, an EMA.

Both are written with ``save_pretrained`` (safetensors) to ``<out>/vae``, ``<out>/unet`` beside
``<out>/scheduler`` and a ``model_index.json``, so diffusers-style pipelines load the folder;
``vae.json`` and ``unet.json`` record how (seed, steps, wall time, the gate, unguided quality).
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DModel
from torch import nn

from tasks.nets import (
    SCHEDULER_CONFIG,
    SHAPES_LATENT_NULL_CLASS,
    SHAPES_LATENT_UNET_CONFIG,
    SHAPES_VAE_CONFIG,
    make_scheduler,
)
from tasks.shapes_data import COLOURS, PAIR_RATES, SHAPES, parse_pair, render_batch
from tasks.shapes_judge import judge
from tasks.shapes_latent import CONDITIONAL_RARE_PAIRS, LATENT_SHAPE, shape_share
from tasks.shapes_training import batch_seed, load_checkpoint, save_checkpoint
from tasks.training import Progress, ema_update, lr_at, no_progress
from tasks.weights import FORMAT_VERSION
from tfg_search.errors import TFGSearchError

VAE_STEPS = 5000
VAE_BATCH = 64
VAE_LR = 1e-3
L1_WEIGHT = 1.0
"""Weight of the L1 reconstruction term next to the MSE (L1 keeps edges sharper)."""
KL_WEIGHT = 1e-6
"""Weight of the KL term relative to the reconstruction error *summed* over an image's 3,072
values (the latent-diffusion autoencoders' convention; here the reconstruction is a per-value
mean, so the KL sum is divided by 3,072 too)."""
GRAD_CLIP = 1.0
UNET_STEPS = 15000
UNET_BATCH = 128
UNET_LR = 1e-3
P_UNCOND = 0.15
"""Probability that a training label is replaced by the null class (classifier-free guidance)."""
EMA_DECAY = 0.999
EMA_WARMUP = 200
"""Steps at the start of a stage during which the EMA copies the model (decay 0)."""
CHECKPOINT_EVERY = 200
POOL_IMAGES = 131_072
"""Skewed images whose VAE posteriors (mean, std) the UNet trains on: rendering and encoding fresh
images would cost 0.45 s per batch of 128, more than the UNet step itself (one CPU thread); each
step draws its batch from the pool and a fresh posterior sample from (seed, step)."""
POOL_CHUNK = 1024
SCALE_IMAGES = 4096
SCALE_SEED = 717_171
GATE_MIN = 0.95
GATE_IMAGES = 2048
GATE_PAIR_IMAGES = 256
GATE_SEED = 818_181
"""Fresh images of the gate (never a training batch: training seeds come from :func:`batch_seed`)."""
QUALITY_SCALES = (1.0, 3.0)
QUALITY_SAMPLES = 256
QUALITY_STEPS = 50
QUALITY_SEED = 4321
VAE_STREAM, UNET_STREAM, POOL_STREAM = 3, 4, 5


# -- the VAE ---------------------------------------------------------------------------------------
def reconstruct(vae: AutoencoderKL, x: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """The VAE's reconstruction of images ``x`` (the posterior mean decoded), in batches."""
    with torch.no_grad():
        parts = [x[i : i + batch] for i in range(0, len(x), batch)]
        return torch.cat([vae.decode(vae.encode(p).latent_dist.mode()).sample for p in parts])


def _agreement(x: torch.Tensor, rec: torch.Tensor) -> dict[str, float]:
    a, b = judge(x), judge(rec)
    colour, shape = a.colour == b.colour, a.shape == b.shape
    return {
        "agreement": float((colour & shape).double().mean()),
        "colour_agreement": float(colour.double().mean()),
        "shape_agreement": float(shape.double().mean()),
        "clean_rate": float(b.clean.double().mean()),
    }


def vae_gate(
    vae: AutoencoderKL,
    n: int = GATE_IMAGES,
    seed: int = GATE_SEED,
    pair_images: int = GATE_PAIR_IMAGES,
) -> dict[str, Any]:
    """Do the analytic judges read the VAE's reconstructions of real images as the images themselves?

    ``agreement``: share of ``n`` fresh skewed images whose reconstruction the judges give the same
    (colour, shape) as the image; ``pairs``: the same on ``pair_images`` fresh images of each of
    :data:`tasks.shapes_latent.CONDITIONAL_RARE_PAIRS` (the skewed draw holds few of them).
    """
    x, _, _ = render_batch(n, seed)
    out: dict[str, Any] = {"images": n, "seed": seed, **_agreement(x, reconstruct(vae, x))}
    out["mse"] = float(F.mse_loss(reconstruct(vae, x[:256]), x[:256]))
    out["pairs"] = {}
    for k, pair in enumerate(CONDITIONAL_RARE_PAIRS):
        colour, shape = parse_pair(pair)
        xp, _, _ = render_batch(pair_images, seed + 1 + k, colour=colour, shape=shape)
        out["pairs"][pair] = {"images": pair_images, **_agreement(xp, reconstruct(vae, xp))}
    return out


def latent_std(vae: AutoencoderKL, n: int = SCALE_IMAGES, seed: int = SCALE_SEED) -> float:
    """Standard deviation of posterior samples of ``n`` fresh skewed images (before scaling)."""
    x, _, _ = render_batch(n, seed)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        z = torch.cat([vae.encode(x[i : i + 512]).latent_dist.sample(gen) for i in range(0, n, 512)])
    return float(z.std())


def _vae_loss(vae: AutoencoderKL, seed: int, step: int) -> torch.Tensor:
    x, _, _ = render_batch(VAE_BATCH, batch_seed(seed, step, VAE_STREAM), rates="uniform")
    post = vae.encode(x).latent_dist
    noise = torch.randn(post.mean.shape, generator=torch.Generator().manual_seed(batch_seed(seed, step, 100)))
    rec = vae.decode(post.mean + post.std * noise).sample
    kl = post.kl().mean() / x[0].numel()
    return F.mse_loss(rec, x) + L1_WEIGHT * F.l1_loss(rec, x) + KL_WEIGHT * kl


# -- the training loop (both stages) ---------------------------------------------------------------
def _train_stage(
    stage: str,
    model: nn.Module,
    loss_at: Callable[[nn.Module, int], torch.Tensor],
    out: Path,
    seed: int,
    steps: int,
    lr: float,
    progress: Progress,
    checkpoint_every: int,
) -> nn.Module:
    """AdamW, cosine learning rate, gradient clipping and an EMA, checkpointed and resumable;
    returns the EMA model (with ``train_wall_s`` and ``history`` attributes)."""
    ckpt_path = out / "checkpoint" / f"{stage}-train.pt"
    ema = copy.deepcopy(model).eval()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    start, wall, history = 0, 0.0, []
    state = load_checkpoint(ckpt_path, seed, steps)
    if state is not None:
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["optimizer"])
        start, wall = int(state["step"]), float(state["train_wall_s"])
        history = [*state.get("history", []), {"at_step": start, "planned_steps": int(state["steps"])}]
    model.train()
    t0 = time.perf_counter()
    for step in range(start, steps):
        loss = loss_at(model, step)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, lr)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        opt.step()
        ema_update(ema, model, EMA_DECAY if step > EMA_WARMUP else 0.0)
        progress(step + 1, steps, {"loss": float(loss.detach())})
        if (step + 1) % checkpoint_every == 0 or step + 1 == steps:
            save_checkpoint(
                ckpt_path,
                {
                    "seed": seed,
                    "steps": steps,
                    "step": step + 1,
                    "history": history,
                    "train_wall_s": wall + time.perf_counter() - t0,
                    "model": model.state_dict(),
                    "ema": ema.state_dict(),
                    "optimizer": opt.state_dict(),
                },
            )
    ema.train_wall_s = wall + time.perf_counter() - t0  # type: ignore[attr-defined]
    ema.history = history  # type: ignore[attr-defined]
    return ema


def _jsonable(config: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()}


def _save_pretrained(model: Any, folder: Path) -> None:
    model.save_pretrained(folder, safe_serialization=True)
    for f in folder.glob("*.safetensors"):
        f.chmod(0o644)  # safetensors writes 0600; weights are shared


def train_shapes_vae(
    out: Path,
    seed: int = 0,
    steps: int = VAE_STEPS,
    progress: Progress = no_progress,
    checkpoint_every: int = CHECKPOINT_EVERY,
    gate_images: int = GATE_IMAGES,
    scale_images: int = SCALE_IMAGES,
) -> dict[str, Any]:
    """Train the VAE, set its scaling factor, judge the gate; writes ``<out>/vae`` and ``vae.json``.

    A VAE already written with the same seed, steps and config is kept. Returns ``vae.json``.
    """
    out = Path(out)
    meta_path = out / "vae.json"
    config = _jsonable(SHAPES_VAE_CONFIG)
    earlier: list[dict[str, Any]] = []
    if meta_path.is_file() and (out / "vae" / "config.json").is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("seed") == seed and meta.get("steps") == steps and meta.get("config") == config:
            return meta
        earlier = [
            *meta.get("earlier_attempts", []),
            {k: meta.get(k) for k in ("seed", "steps", "config", "train_wall_s", "gate")},
        ]
    torch.manual_seed(seed)
    vae = _train_stage(
        "vae",
        AutoencoderKL(**SHAPES_VAE_CONFIG),
        lambda m, step: _vae_loss(m, seed, step),
        out,
        seed,
        steps,
        VAE_LR,
        progress,
        checkpoint_every,
    )
    std = latent_std(vae, scale_images)
    vae.register_to_config(scaling_factor=1.0 / std)
    gate = vae_gate(vae, gate_images, pair_images=min(gate_images, GATE_PAIR_IMAGES))
    _save_pretrained(vae, out / "vae")
    meta = {
        "format_version": FORMAT_VERSION,
        "seed": seed,
        "steps": steps,
        "batch_size": VAE_BATCH,
        "lr": VAE_LR,
        "loss": f"MSE + {L1_WEIGHT} L1 + {KL_WEIGHT} KL (per image, relative to the summed reconstruction)",
        "data": "balanced pairs (rates='uniform'), drawn fresh every step",
        "ema_decay": EMA_DECAY,
        "parameters": sum(p.numel() for p in vae.parameters()),
        "config": config,
        "latent_std": std,
        "scaling_factor": 1.0 / std,
        "train_wall_s": round(float(vae.train_wall_s), 1),
        "resumed": vae.history,
        "gate_min": GATE_MIN,
        "gate": gate,
        "earlier_attempts": earlier,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }
    meta_path.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return meta


# -- the latent UNet -------------------------------------------------------------------------------
def _file_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def latent_pool(vae: AutoencoderKL, out: Path, seed: int, n: int = POOL_IMAGES) -> dict[str, torch.Tensor]:
    """Posterior means and stds of ``n`` skewed images with their colours (cached in the checkpoint
    folder, keyed by the seed and the VAE's weights)."""
    key = f"{seed}-{n}-{_file_digest(out / 'vae' / 'diffusion_pytorch_model.safetensors')}"
    path = out / "checkpoint" / "latent-pool.pt"
    if path.is_file():
        pool = torch.load(path, map_location="cpu", weights_only=True)
        if pool.get("key") == key:
            return pool
    means, stds, colours = [], [], []
    with torch.no_grad():
        for k in range(0, n, POOL_CHUNK):
            x, c, _ = render_batch(min(POOL_CHUNK, n - k), batch_seed(seed, k // POOL_CHUNK, POOL_STREAM))
            post = vae.encode(x).latent_dist
            means.append(post.mean)
            stds.append(post.std)
            colours.append(c)
    pool = {"key": key, "mean": torch.cat(means), "std": torch.cat(stds), "colour": torch.cat(colours)}
    save_checkpoint(path, pool)
    return pool


def _unet_loss(
    unet: nn.Module, pool: dict[str, torch.Tensor], scale: float, abar: torch.Tensor, seed: int, step: int
) -> torch.Tensor:
    gen = torch.Generator().manual_seed(batch_seed(seed, step, UNET_STREAM))
    idx = torch.randint(0, len(pool["mean"]), (UNET_BATCH,), generator=gen)
    z0 = (pool["mean"][idx] + pool["std"][idx] * torch.randn(pool["mean"][idx].shape, generator=gen)) * scale
    labels = pool["colour"][idx].clone()
    labels[torch.rand(UNET_BATCH, generator=gen) < P_UNCOND] = SHAPES_LATENT_NULL_CLASS
    t = torch.randint(0, len(abar), (UNET_BATCH,), generator=gen)
    noise = torch.randn(z0.shape, generator=gen)
    a = abar[t].view(-1, 1, 1, 1)
    zt = a.sqrt() * z0 + (1 - a).sqrt() * noise
    v = a.sqrt() * noise - (1 - a).sqrt() * z0
    return F.mse_loss(unet(zt, t, class_labels=labels).sample, v)


def conditional_quality(
    unet: nn.Module,
    scheduler: DDIMScheduler,
    vae: AutoencoderKL,
    scales: tuple[float, ...] = QUALITY_SCALES,
    n: int = QUALITY_SAMPLES,
    steps: int = QUALITY_STEPS,
    seed: int = QUALITY_SEED,
) -> dict[str, Any]:
    """Samples conditioned on each colour with CFG (no TFG), decoded and judged.

    Per colour and CFG scale: ``colour_validity`` (the judges read the colour), the judged shape
    shares next to the data's within that colour (:func:`tasks.shapes_latent.shape_share`),
    ``clean_rate``.
    """
    from tfg_search.guidance import Conditioning, LatentDecoder, TFGConfig
    from tfg_search.guidance.latent import sample_and_decode

    decoder = LatentDecoder(vae)
    zero = lambda z: z.flatten(1).sum(1) * 0.0  # noqa: E731 - no TFG term
    uncond = {"class_labels": torch.tensor([SHAPES_LATENT_NULL_CLASS])}
    configs = [TFGConfig(guidance_scale=w, clip_x0=False) for w in scales]
    result: dict[str, Any] = {"samples": n, "steps": steps, "seed": seed, "colours": {}}
    for ci, colour in enumerate(COLOURS):
        cond = Conditioning({"class_labels": torch.tensor([ci])}, uncond)
        generators = [torch.Generator().manual_seed(seed) for _ in scales]
        images, _ = sample_and_decode(
            unet,
            scheduler,
            zero,
            configs,
            (n, *LATENT_SHAPE),
            generators,
            steps,
            "cpu",
            conditioning=cond,
            decoder=decoder,
        )
        per_scale = {}
        for w, x in zip(scales, images, strict=True):
            v = judge(x)
            per_scale[str(w)] = {
                "colour_validity": float((v.colour == ci).double().mean()),
                "clean_rate": float(v.clean.double().mean()),
                "shape_shares": {s: float((v.shape == si).double().mean()) for si, s in enumerate(SHAPES)},
            }
        result["colours"][colour] = {
            "data_shape_shares": {s: shape_share(colour, s) for s in SHAPES},
            "cfg": per_scale,
        }
    return result


def train_shapes_latent_unet(
    out: Path,
    vae: AutoencoderKL,
    seed: int = 0,
    steps: int = UNET_STEPS,
    progress: Progress = no_progress,
    checkpoint_every: int = CHECKPOINT_EVERY,
    pool_images: int = POOL_IMAGES,
) -> nn.Module:
    """Train the conditional latent UNet on ``vae``'s latents (resuming from its checkpoint);
    returns the EMA model."""
    out = Path(out)
    pool = latent_pool(vae, out, seed, pool_images)
    abar = make_scheduler().alphas_cumprod.float()
    scale = float(vae.config.scaling_factor)
    torch.manual_seed(seed)
    return _train_stage(
        "unet",
        UNet2DModel(**SHAPES_LATENT_UNET_CONFIG),
        lambda m, step: _unet_loss(m, pool, scale, abar, seed, step),
        out,
        seed,
        steps,
        UNET_LR,
        progress,
        checkpoint_every,
    )


def write_model_index(out: Path) -> None:
    """``model_index.json``: the folder as a diffusers pipeline (``TFGPipeline``) of unet, scheduler, vae."""
    import diffusers

    index = {
        "_class_name": "TFGPipeline",
        "_diffusers_version": diffusers.__version__,
        "scheduler": ["diffusers", "DDIMScheduler"],
        "unet": ["diffusers", "UNet2DModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    (Path(out) / "model_index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")


def train_shapes_latent(
    out: Path,
    seed: int = 0,
    steps: int = UNET_STEPS,
    progress: Progress = no_progress,
    vae_steps: int = VAE_STEPS,
    gate_min: float = GATE_MIN,
    quality: bool = True,
    gate_images: int = GATE_IMAGES,
    pool_images: int = POOL_IMAGES,
    scale_images: int = SCALE_IMAGES,
) -> dict[str, Any]:
    """Train the VAE (``vae_steps``), check its gate, then the UNet (``steps``); writes everything.

    Args:
        out: the weights folder.
        seed: seed of both stages.
        steps: optimiser steps of the UNet.
        progress: ``progress(done, total, info)`` per step.
        vae_steps: optimiser steps of the VAE.
        gate_min: the least judge agreement on reconstructions at which the UNet is trained.
        quality: judge CFG samples of the trained UNet (:func:`conditional_quality`; minutes).
        gate_images: fresh skewed images of the gate (:func:`vae_gate`).
        pool_images: skewed images whose latents the UNet trains on (:data:`POOL_IMAGES`).
        scale_images: fresh images whose latents set the scaling factor (:func:`latent_std`).

    Returns:
        The UNet's metadata (also ``<out>/unet.json``).

    Raises:
        TFGSearchError: the VAE fails the gate (the message gives the figure and what to do).
    """
    out = Path(out)
    vae_meta = train_shapes_vae(
        out, seed, vae_steps, progress, gate_images=gate_images, scale_images=scale_images
    )
    if vae_meta["gate"]["agreement"] < gate_min:
        raise TFGSearchError(
            f"the shapes-latent VAE fails its gate: the judges agree on {vae_meta['gate']['agreement']:.3f} "
            f"of reconstructions (< {gate_min}); train it longer (vae_steps) or widen it "
            f"(tasks.nets.SHAPES_VAE_CONFIG); {out / 'vae.json'} has the figures"
        )
    vae = AutoencoderKL.from_pretrained(out / "vae", use_safetensors=True, low_cpu_mem_usage=False).eval()
    unet = train_shapes_latent_unet(out, vae, seed, steps, progress, pool_images=pool_images).eval()
    _save_pretrained(unet, out / "unet")
    scheduler_config = {**SCHEDULER_CONFIG, "prediction_type": "v_prediction"}
    DDIMScheduler(**scheduler_config).save_pretrained(out / "scheduler")
    write_model_index(out)
    meta = {
        "format_version": FORMAT_VERSION,
        "seed": seed,
        "steps": steps,
        "batch_size": UNET_BATCH,
        "lr": UNET_LR,
        "loss": "v-prediction MSE on scaled VAE posterior samples",
        "p_uncond": P_UNCOND,
        "null_class": SHAPES_LATENT_NULL_CLASS,
        "ema_decay": EMA_DECAY,
        "data": f"{pool_images} skewed images (tasks.shapes_data.PAIR_RATES), their VAE posteriors",
        "parameters": sum(p.numel() for p in unet.parameters()),
        "unet_config": _jsonable(SHAPES_LATENT_UNET_CONFIG),
        "scheduler_config": scheduler_config,
        "train_wall_s": round(float(getattr(unet, "train_wall_s", 0.0)), 1),
        "resumed": getattr(unet, "history", []),
        "vae": {k: vae_meta[k] for k in ("steps", "train_wall_s", "scaling_factor")},
        "gate": {k: vae_meta["gate"][k] for k in ("agreement", "colour_agreement", "shape_agreement")},
        "data_pair_rates": {f"{c}-{s}": r for (c, s), r in PAIR_RATES.items()},
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }
    if quality:
        meta["quality"] = conditional_quality(unet, DDIMScheduler.from_pretrained(out / "scheduler"), vae)
    (out / "unet.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return meta

"""Training of the ``shapes`` models on CPU: two guiding CNNs, then the UNet, resumable.

Data are drawn on the fly from :mod:`tasks.shapes_data`, one fresh batch per optimiser step from a
seed derived from (seed, step), so a run is deterministic and a resumed run draws exactly the batches
an uninterrupted one would have drawn.

* ``colour`` and ``shape``: :class:`tasks.nets.ShapesCNN` classifiers trained on a *balanced* draw
  of clean images (with small Gaussian input noise), written as safetensors + JSON;
* ``unet``: a diffusers ``UNet2DModel`` (:data:`tasks.nets.SHAPES_UNET_CONFIG`) trained on the
  *skewed* draw (:data:`tasks.shapes_data.PAIR_RATES`) with the DDPM loss, AdamW, cosine learning
  rate and an EMA; written with ``save_pretrained`` (safetensors) to ``<out>/unet/`` beside the
  scheduler in ``<out>/scheduler/``, so that a user loads them with ``from_pretrained``.

A checkpoint (model, EMA, optimiser, step) is written to ``<out>/checkpoint/unet-train.pt`` every
``checkpoint_every`` steps; ``tfg-search train shapes`` run again continues from it. It is read with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, UNet2DModel
from torch import nn

from tasks.nets import SCHEDULER_CONFIG, SHAPES_UNET_CONFIG, ShapesCNN, make_scheduler
from tasks.shapes_data import COLOURS, SHAPES, render_batch
from tasks.training import Progress, ema_update, lr_at, no_progress
from tasks.weights import FORMAT_VERSION, save_pipeline_folder, save_weights
from tfg_search.errors import TFGSearchError

UNET_STEPS = 9000
UNET_BATCH = 64
UNET_LR = 1e-3
PHASE_2_FROM = 6000
"""The UNet trains in two phases. Phase 1 (steps 0..6000): the plain DDPM epsilon loss, cosine
learning rate from UNET_LR. Measured after it: unguided samples were 90% squares with grey
backgrounds. An epsilon model's clean estimate x0 = (x - sqrt(1 - a) eps) / sqrt(a) multiplies its
error by sqrt((1 - a) / a) (33x at the first step of the cosine schedule), and the first steps set
the image's layout and brightness. Phase 2 (6000..steps) therefore switches the model to
v-prediction (v = sqrt(a) eps - sqrt(1 - a) x0, well conditioned at every noise level; the
scheduler is saved with ``prediction_type="v_prediction"``, which the guided sampler reads): it
starts from phase 1's EMA weights with a fresh optimizer, cosine learning rate from PHASE_2_LR."""
PHASE_2_LR = 5e-4
EMA_DECAY = 0.999
EMA_WARMUP = 200
"""Steps at the start of each phase during which the EMA copies the model (decay 0)."""
GUIDE_STEPS = 1500
GUIDE_BATCH = 128
GUIDE_NOISE_STD = 0.1
CHECKPOINT_EVERY = 200
GUIDE_EVAL_SEED = 987_654
"""Seed of the fresh images on which the guides' accuracy is measured (never a training batch)."""


def batch_seed(seed: int, step: int, stream: int) -> int:
    """The seed of training batch ``step`` of data stream ``stream`` (0 UNet, 1 colour, 2 shape)."""
    return (int(seed) * 1_000_003 + stream) * 10_000_019 + int(step)


def train_shapes_guides(
    out: Path, seed: int = 0, steps: int = GUIDE_STEPS, progress: Progress = no_progress
) -> dict[str, Any]:
    """Train the colour and shape CNNs on balanced clean images; writes ``colour`` and ``shape``.

    A guide already written with the same seed and steps is kept (a resumed run does not redo it).
    """
    out = Path(out)
    metas: dict[str, Any] = {}
    x_eval, c_eval, s_eval = render_batch(2000, GUIDE_EVAL_SEED, rates="uniform")
    for stream, (name, classes, eval_labels) in enumerate(
        (("colour", COLOURS, c_eval), ("shape", SHAPES, s_eval)), start=1
    ):
        meta_path = out / f"{name}.json"
        if meta_path.is_file() and (out / f"{name}.safetensors").is_file():
            meta = json.loads(meta_path.read_text())
            if meta.get("seed") == seed and meta.get("steps") == steps:
                metas[name] = meta
                continue
        t0 = time.perf_counter()
        torch.manual_seed(seed)
        net = ShapesCNN(len(classes))
        opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
        net.train()
        for step in range(steps):
            x, c, s = render_batch(GUIDE_BATCH, batch_seed(seed, step, stream), rates="uniform")
            labels = c if name == "colour" else s
            noise_gen = torch.Generator().manual_seed(batch_seed(seed, step, stream + 10))
            x = x + GUIDE_NOISE_STD * torch.randn(x.shape, generator=noise_gen)
            loss = F.cross_entropy(net(x), labels)
            for g in opt.param_groups:
                g["lr"] = lr_at(step, steps, 2e-3)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            progress(step + 1, steps, {"loss": float(loss.detach())})
        net.eval()
        with torch.no_grad():
            accuracy = float((net(x_eval).argmax(1) == eval_labels).float().mean())
        meta = {
            "seed": seed,
            "steps": steps,
            "batch_size": GUIDE_BATCH,
            "data": "balanced pairs (rates='uniform'), clean images",
            "input_noise_std": GUIDE_NOISE_STD,
            "classes": list(classes),
            "fresh_image_accuracy": accuracy,
            "train_wall_s": round(time.perf_counter() - t0, 1),
        }
        save_weights(out, name, net.state_dict(), meta)
        metas[name] = meta
    return metas


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write a training checkpoint atomically (a temporary file, then a rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def load_checkpoint(path: Path, seed: int, steps: int) -> dict[str, Any] | None:
    """The checkpoint to continue from: same seed, and as many steps or fewer (a longer run
    continues a shorter one; its cosine learning rate is then that of the longer schedule)."""
    if not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("seed") != seed or int(state.get("step", 0)) > steps:
        raise TFGSearchError(
            f"checkpoint {path} was made with seed {state.get('seed')} and is at step {state.get('step')}; "
            f"rerun with --seed {state.get('seed')} and --steps >= {state.get('step')}, or delete the "
            "checkpoint to start over"
        )
    return state


def train_shapes_unet(
    out: Path,
    seed: int = 0,
    steps: int = UNET_STEPS,
    progress: Progress = no_progress,
    checkpoint_every: int = CHECKPOINT_EVERY,
) -> UNet2DModel:
    """Train the shapes UNet (resuming from ``<out>/checkpoint/unet-train.pt``); returns the EMA model."""
    out = Path(out)
    ckpt_path = out / "checkpoint" / "unet-train.pt"
    torch.manual_seed(seed)
    model = UNet2DModel(**SHAPES_UNET_CONFIG)
    ema = copy.deepcopy(model).eval()
    opt = torch.optim.AdamW(model.parameters(), lr=UNET_LR, weight_decay=0.0)
    start, wall = 0, 0.0
    state = load_checkpoint(ckpt_path, seed, steps)
    if state is not None:
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["optimizer"])
        start, wall = int(state["step"]), float(state["train_wall_s"])
        history = [*state.get("history", []), {"at_step": start, "planned_steps": int(state["steps"])}]
    else:
        history = []
    sched = make_scheduler()
    abar = sched.alphas_cumprod.float()
    model.train()
    t0 = time.perf_counter()
    for step in range(start, steps):
        if step == PHASE_2_FROM:  # phase 2: v-prediction from phase 1's EMA, a fresh optimizer
            model.load_state_dict(ema.state_dict())
            opt = torch.optim.AdamW(model.parameters(), lr=PHASE_2_LR, weight_decay=0.0)
        x0, _, _ = render_batch(UNET_BATCH, batch_seed(seed, step, 0))
        gen = torch.Generator().manual_seed(batch_seed(seed, step, 100))
        t = torch.randint(0, sched.config.num_train_timesteps, (UNET_BATCH,), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        a = abar[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        if step < PHASE_2_FROM:
            loss = F.mse_loss(model(xt, t).sample, noise)
            lr = lr_at(step, min(steps, PHASE_2_FROM), UNET_LR)
        else:
            v = a.sqrt() * noise - (1 - a).sqrt() * x0
            loss = F.mse_loss(model(xt, t).sample, v)
            lr = lr_at(step - PHASE_2_FROM, steps - PHASE_2_FROM, PHASE_2_LR)
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        # The EMA restarts with each phase (a phase-2 average must not keep epsilon weights).
        phase_start = PHASE_2_FROM if step >= PHASE_2_FROM else 0
        ema_update(ema, model, EMA_DECAY if step - phase_start > EMA_WARMUP else 0.0)
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
    return ema.eval()


def save_shapes_diffusion(out: Path, unet: nn.Module, steps: int) -> None:
    """Write the UNet (``save_pretrained``, safetensors) and its DDIM scheduler config into ``out``
    (``prediction_type`` v_prediction once phase 2 has run)."""
    prediction = "v_prediction" if steps > PHASE_2_FROM else "epsilon"
    scheduler = DDIMScheduler(**{**SCHEDULER_CONFIG, "prediction_type": prediction})
    save_pipeline_folder(Path(out), unet, scheduler)  # with model_index.json: TFGPipeline loads it


def train_shapes(
    out: Path,
    seed: int = 0,
    steps: int = UNET_STEPS,
    progress: Progress = no_progress,
    guide_steps: int = GUIDE_STEPS,
) -> dict[str, Any]:
    """Train the shapes guides, then the UNet (``steps`` optimiser steps); writes everything to ``out``.

    Returns the UNet's training metadata (also written to ``<out>/unet.json``), including the
    quality of unguided samples judged by the analytic judges.
    """
    out = Path(out)
    guides = train_shapes_guides(out, seed, guide_steps, progress)
    unet = train_shapes_unet(out, seed, steps, progress)
    save_shapes_diffusion(out, unet, steps)
    from tasks.shapes_judge import unguided_quality

    meta = {
        "format_version": FORMAT_VERSION,
        "seed": seed,
        "steps": steps,
        "batch_size": UNET_BATCH,
        "lr": UNET_LR,
        "phases": [
            {"steps": [0, min(steps, PHASE_2_FROM)], "loss": "epsilon MSE", "lr": UNET_LR},
            {
                "steps": [PHASE_2_FROM, steps],
                "loss": "v-prediction MSE, from phase 1's EMA weights and a fresh optimizer",
                "lr": PHASE_2_LR,
            },
        ]
        if steps > PHASE_2_FROM
        else [{"steps": [0, steps], "loss": "epsilon MSE", "lr": UNET_LR}],
        "ema_decay": EMA_DECAY,
        "data": "skewed pairs (tasks.shapes_data.PAIR_RATES), drawn fresh every step",
        "parameters": sum(p.numel() for p in unet.parameters()),
        "unet_config": {k: list(v) if isinstance(v, tuple) else v for k, v in SHAPES_UNET_CONFIG.items()},
        "scheduler_config": {
            **SCHEDULER_CONFIG,
            "prediction_type": "v_prediction" if steps > PHASE_2_FROM else "epsilon",
        },
        "train_wall_s": round(float(getattr(unet, "train_wall_s", 0.0)), 1),
        "resumed": getattr(unet, "history", []),
        "guides": {k: v.get("fresh_image_accuracy") for k, v in guides.items()},
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        **unguided_quality(unet, DDIMScheduler.from_pretrained(out / "scheduler")),
    }
    (out / "unet.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return meta

"""Training of the bundled tasks' tiny models on CPU (deterministic for a seed).

Each ``train_*`` function takes a seed, a step/epoch budget, an output folder and an optional
``progress(done, total, info)`` callback (the CLI draws a rich progress bar with it), writes
safetensors + JSON through :func:`tasks.weights.save_weights` and returns the JSON metadata.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tasks.nets import (
    DIGITS_UNET_CONFIG,
    SCHEDULER_CONFIG,
    DigitsCNN,
    build_digits_unet,
    make_scheduler,
)
from tasks.weights import FORMAT_VERSION, save_pipeline_folder, save_weights

Progress = Callable[[int, int, dict[str, float]], None]


def no_progress(done: int, total: int, info: dict[str, float]) -> None:
    """The default progress callback: does nothing."""
    return None


@torch.no_grad()
def sample_unguided(
    model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    shape: tuple[int, ...],
    steps: int = 50,
    generator: torch.Generator | None = None,
    clip: bool = True,
) -> torch.Tensor:
    """Plain DDIM (eta = 1) samples of an epsilon model; used to measure training quality."""
    sched = make_scheduler()
    sched.set_timesteps(steps)
    x = torch.randn(shape, generator=generator)
    for t in sched.timesteps:
        eps = model(x, t)
        x = sched.step(eps, t, x, eta=1.0, generator=generator).prev_sample
    return x.clamp(-1, 1) if clip else x


def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model, parameter by parameter."""
    with torch.no_grad():
        for pe, pm in zip(ema.parameters(), model.parameters(), strict=True):
            pe.mul_(decay).add_(pm, alpha=1.0 - decay)


def lr_at(step: int, total: int, base: float, warmup: int = 100) -> float:
    """Learning rate at ``step``: linear warm-up over ``warmup`` steps, then cosine decay to 0."""
    if step < warmup:
        return base * (step + 1) / warmup
    return base * 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def train_eps_model(
    model: nn.Module,
    data: torch.Tensor,
    steps: int,
    seed: int,
    batch_size: int,
    lr: float,
    ema_decay: float,
    forward: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor],
    progress: Progress = no_progress,
) -> nn.Module:
    """Epsilon-prediction training (DDPM loss) with AdamW, cosine lr and an EMA; returns the EMA."""
    gen = torch.Generator().manual_seed(seed)
    sched = make_scheduler()
    abar = sched.alphas_cumprod.to(data.dtype)
    ema = copy.deepcopy(model).eval()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    n = data.shape[0]
    perm, pos = torch.randperm(n, generator=gen), 0
    model.train()
    for step in range(steps):
        if pos + batch_size > n:
            perm, pos = torch.randperm(n, generator=gen), 0
        x0 = data[perm[pos : pos + batch_size]]
        pos += batch_size
        t = torch.randint(0, sched.config.num_train_timesteps, (x0.shape[0],), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        a = abar[t].view(-1, *([1] * (x0.dim() - 1)))
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        loss = F.mse_loss(forward(model, xt, t), noise)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, lr)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ema_update(ema, model, ema_decay if step > 200 else 0.0)
        progress(step + 1, steps, {"loss": float(loss.detach())})
    return ema


def train_classifier(
    net: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    epochs: int,
    seed: int,
    noise_std: float = 0.1,
    progress: Progress = no_progress,
) -> nn.Module:
    """Cross-entropy training of a guiding CNN, with small Gaussian input noise for smoother inputs."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
    n, bs = x.shape[0], 64
    net.train()
    for ep in range(epochs):
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, bs):
            idx = perm[i : i + bs]
            xb = x[idx] + noise_std * torch.randn(x[idx].shape, generator=gen)
            loss = F.cross_entropy(net(xb), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        progress(ep + 1, epochs, {"loss": float(loss.detach())})
    return net.eval()


def _accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((net(x).argmax(1) == y).float().mean())


def digits_quality(
    unet: nn.Module, n: int = 256, seed: int = 1234, steps: int = 50, weights: Path | None = None
) -> dict:
    """Share of unguided samples classified with confidence > 0.9, next to that of real images.

    Judged by the held-out PCA + SVC evaluator (the quality bar) and, for comparison, by the guiding
    CNN in ``weights`` (default: the shipped folder) when it exists.
    """
    from tasks.digits_data import split
    from tasks.digits_eval import digits_evaluator
    from tasks.weights import load_weights, weights_dir

    ev = digits_evaluator()
    gen = torch.Generator().manual_seed(seed)
    xs = sample_unguided(lambda x, t: unet(x, t).sample, (n, 1, 8, 8), steps, gen)
    real, _ = split("heldout")
    conf = ev.predict_proba(xs).max(1).values
    real_conf = ev.predict_proba(real).max(1).values
    out = {
        "unguided_conf_gt_0.9": float((conf > 0.9).float().mean()),
        "real_heldout_conf_gt_0.9": float((real_conf > 0.9).float().mean()),
        "unguided_mean_conf": float(conf.mean()),
        "quality_samples": n,
        "quality_steps": steps,
    }
    folder = Path(weights) if weights else weights_dir("digits")
    if (folder / "classifier.safetensors").is_file():
        state, _ = load_weights(folder, "classifier", "digits")
        cnn = DigitsCNN(10)
        cnn.load_state_dict(state)
        with torch.no_grad():
            c = torch.softmax(cnn(xs), 1).max(1).values
            r = torch.softmax(cnn(real), 1).max(1).values
        out["unguided_cnn_conf_gt_0.9"] = float((c > 0.9).float().mean())
        out["real_heldout_cnn_conf_gt_0.9"] = float((r > 0.9).float().mean())
    return out


def train_digits_guides(out: Path, seed: int = 0, epochs: int = 40) -> dict[str, Any]:
    """Train the digits class CNN and thickness CNN on the ``guide`` split; writes both."""
    from tasks.digits_data import THICKNESS_NAMES, split, thickness_label

    out = Path(out)
    xg, yg = split("guide")
    xe, ye = split("eval")
    metas = {}
    for name, labels, eval_labels, n_out in (
        ("classifier", yg, ye, 10),
        ("thickness", thickness_label(xg), thickness_label(xe), len(THICKNESS_NAMES)),
    ):
        t0 = time.perf_counter()
        torch.manual_seed(seed)
        net = train_classifier(DigitsCNN(n_out), xg, labels, epochs, seed, noise_std=0.2)
        meta = {
            "seed": seed,
            "epochs": epochs,
            "split": "guide",
            "input_noise_std": 0.2,
            "eval_split_accuracy": _accuracy(net, xe, eval_labels),
            "train_wall_s": round(time.perf_counter() - t0, 1),
        }
        if name == "thickness":
            meta["classes"] = list(THICKNESS_NAMES)
        save_weights(out, name, net.state_dict(), meta)
        metas[name] = meta
    return metas


def train_digits(
    out: Path, seed: int = 0, steps: int = 4000, epochs: int = 40, progress: Progress = no_progress
) -> dict[str, Any]:
    """Train the digits guiding CNNs (``epochs`` each) and the UNet (``steps`` optimiser steps).

    Writes ``classifier``, ``thickness`` and the UNet as a diffusers pipeline folder (``unet/``,
    ``scheduler/``, ``model_index.json``) with its record ``unet.json``; returns the UNet's metadata
    (with the quality of unguided samples when ``steps`` >= 500).
    """
    out = Path(out)
    t0 = time.perf_counter()
    guides = train_digits_guides(out, seed, epochs)
    t_cnn = time.perf_counter() - t0
    from tasks.digits_data import split

    torch.manual_seed(seed)
    xt, _ = split("train")
    unet = train_eps_model(
        build_digits_unet(),
        xt,
        steps,
        seed,
        batch_size=128,
        lr=2e-3,
        ema_decay=0.999,
        forward=lambda m, x, t: m(x, t).sample,
        progress=progress,
    )
    t_unet = time.perf_counter() - t0 - t_cnn
    quality = digits_quality(unet, weights=out) if steps >= 500 else {}
    meta = {
        "seed": seed,
        "steps": steps,
        "batch_size": 128,
        "split": "train",
        "unet_config": {k: list(v) if isinstance(v, tuple) else v for k, v in DIGITS_UNET_CONFIG.items()},
        "scheduler_config": SCHEDULER_CONFIG,
        "train_wall_s": round(t_unet, 1),
        "guide_accuracy_eval_split": guides["classifier"]["eval_split_accuracy"],
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        **quality,
    }
    save_pipeline_folder(out, unet, make_scheduler())  # unet/, scheduler/, model_index.json
    record = {"format_version": FORMAT_VERSION, **meta}
    (out / "unet.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return meta

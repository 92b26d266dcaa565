"""The tabular search benchmark of the ``shapes`` task: every lattice point, judged per sample.

HPO research compares optimisers on tabular benchmarks (NAS-Bench-201, HPOBench): every point of
a search space evaluated once, in advance, so that a search is *replayed* on the table in seconds
and can be run on many seeds. This module builds such a table for TFG guidance on ``shapes``.

What is stored. For one target (a colour-shape pair) and every point of :data:`GRID` (the task's
strength lattices, each with 0 "off"), guided samples are drawn at the task's own 50 DDIM steps in
*chunks* of :data:`CHUNK` samples, chunk seed ``j`` for the search pool (``j = 0, 1, ...``: every
point has the same seeds, so points are compared on common random numbers, as a live search
compares them) and ``FINAL_BASE + r * STRIDE + j`` for the judged final of reseed ``r``. Each
chunk is judged at once and only the judges' readout is kept, per sample: colour index, shape
index, clean flag and the 17 judge features (:mod:`tasks.shapes_judge`). From those any metric of
the task on any subset of samples is exact (:func:`metrics`: validity, fidelity via the Frechet
distance on the standardised features, as :meth:`tasks.shapes.ShapesTask.compute_metrics`
computes them; tests/test_benchmarks_table.py checks the two agree), so a search that evaluates 16,
32 or 128 samples of a point reads them from the table.

Layout: ``benchmarks/results/table/<fingerprint>/<target>/shard-*.safetensors``; a shard holds
tensors ``"<key>@<chunk seed>/<field>"`` (key: the lattice exponents, e.g. ``3,-1,0``). The
fingerprint names the task's weights, the steps and the fixed structure, so a table is never mixed
with another. Shards are written whole (temporary file, then rename), so a stopped build resumes
with what it had.

Example:
    >>> table = Table("cyan-triangle")  # doctest: +SKIP
    >>> table.build(table.grid_keys(), range(2))  # doctest: +SKIP
    >>> metrics(table.chunks((0, 4, -1), [0, 1]), "cyan-triangle")["validity"]  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import math
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from _common import log
from safetensors.torch import load_file, save_file

from searchers import Lattice
from tasks.shapes import SHAPES_SPACE

ROOT = Path(__file__).resolve().parent / "results" / "table"
CHUNK = 16
"""Samples per chunk."""
STRIDE = 4096
FINAL_BASE = 1_000_000
"""Chunk seeds of the judged final of reseed r: FINAL_BASE + r * STRIDE + j (disjoint from the pool)."""
FINAL_CHUNKS = 16
"""A judged final is 16 chunks: 256 samples."""
STEPS = 50
"""The task's own DDIM steps."""
STRUCTURE = {"n_recur": 1, "n_iter": 4, "n_mc": 1, "eta": 1.0}
"""The fixed part of every configuration (the shapes search default)."""
BATCH_CONFIGS = 16
"""Configurations sampled together (16 chunks of 16: 256 samples per call)."""

GRID: dict[str, Lattice] = dict(SHAPES_SPACE)
"""The shapes task's default lattices (``tasks.shapes.SHAPES_SPACE``, 0 in each): 8 x 10 x 4 = 320
points, the space ``tfg-search search --task shapes`` searches."""

Key = tuple[int, ...]


def key_text(key: Key) -> str:
    return ",".join(str(k) for k in key)


def key_params(key: Key) -> dict[str, float]:
    """The strengths of a grid key (exponents in GRID order; -1 is 0)."""
    return {name: GRID[name].value(k) for name, k in zip(GRID, key, strict=True)}


def config_of(key: Key) -> object:
    """The TFGConfig of a grid key (reference default schedules, the fixed structure)."""
    from tfg_search.guidance.config import TFGConfig

    return TFGConfig(**key_params(key), **STRUCTURE, clip_x0=True)


def final_seeds(reseed: int = 0, chunks: int = FINAL_CHUNKS) -> list[int]:
    return [FINAL_BASE + reseed * STRIDE + j for j in range(chunks)]


@functools.lru_cache(maxsize=1)
def fingerprint() -> str:
    """8 hex digits of the shapes weights, the steps and the structure."""
    root = Path(__file__).resolve().parents[1] / "tasks" / "weights" / "shapes"
    digest = hashlib.sha1(repr((STEPS, sorted(STRUCTURE.items()), CHUNK)).encode())
    for path in sorted(root.rglob("*.safetensors")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:8]


@dataclass(frozen=True)
class Chunks:
    """Judge readouts of some chunks of one point, concatenated: [n] colour, shape, clean; [n, 17]."""

    colour: torch.Tensor
    shape: torch.Tensor
    clean: torch.Tensor
    features: torch.Tensor
    bad: bool
    """Sampling went non-finite in one of the chunks (the evaluation fails)."""

    def subset(self, index: Sequence[int] | torch.Tensor) -> Chunks:
        idx = torch.as_tensor(index, dtype=torch.long)
        return Chunks(self.colour[idx], self.shape[idx], self.clean[idx], self.features[idx], self.bad)

    @property
    def n(self) -> int:
        return int(self.colour.numel())


@functools.lru_cache(maxsize=64)
def _reference(target: str) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Mean and covariance of the target's real images' standardised features (as the task's FID
    holds them), and the task's FD scale for the target."""
    from tasks.shapes import JudgeFeatures, fd_scale, reference_images

    f = JudgeFeatures()(reference_images(target)).double()
    n = f.shape[0]
    mean = f.sum(0) / n
    cov = (f.t().mm(f) - n * mean[:, None].mm(mean[None, :])) / (n - 1)
    return mean, cov, fd_scale(target)


def standardised(features: torch.Tensor) -> torch.Tensor:
    """Raw judge features -> the standardised, clipped ones of :class:`tasks.shapes.JudgeFeatures`."""
    from tasks.shapes import FEATURE_CLIP, feature_stats

    mean, std = feature_stats()
    return ((features - mean) / std).clamp(-FEATURE_CLIP, FEATURE_CLIP).double()


def frechet(features: torch.Tensor, target: str) -> float:
    """The task's Frechet distance of samples with these raw judge features to ``target``'s images
    (torchmetrics' FrechetInceptionDistance arithmetic, in float64)."""
    from torchmetrics.image.fid import _compute_fid

    mean_r, cov_r, _ = _reference(target)
    f = standardised(features)
    n = f.shape[0]
    mean = f.sum(0) / n
    cov = (f.t().mm(f) - n * mean[:, None].mm(mean[None, :])) / (n - 1)
    return float(_compute_fid(mean_r, cov_r, mean, cov))


def metrics(chunks: Chunks, target: str) -> dict[str, float] | None:
    """The objective's metrics of these samples (None when sampling failed): validity,
    colour_validity, shape_validity, clean_rate, fd, fidelity."""
    from tasks.base import exp_fidelity
    from tasks.shapes_data import indices, parse_pair

    if chunks.bad or chunks.n < 2:
        return None
    colour, shape = indices(*parse_pair(target))
    ones = torch.ones(chunks.n, dtype=torch.bool)
    colour_ok = chunks.colour == colour if colour is not None else ones
    shape_ok = chunks.shape == shape if shape is not None else ones
    fd = frechet(chunks.features, target)
    _, _, scale = _reference(target)
    return {
        "validity": float((colour_ok & shape_ok).double().mean()),
        "colour_validity": float(colour_ok.double().mean()),
        "shape_validity": float(shape_ok.double().mean()),
        "clean_rate": float(chunks.clean.double().mean()),
        "fd": fd,
        "fidelity": exp_fidelity(fd, scale),
    }


def score(m: dict[str, float] | None) -> float:
    """The task's default objective: the mean of validity and fidelity (-inf for a failure)."""
    if m is None or not all(math.isfinite(m[k]) for k in ("validity", "fidelity")):
        return -math.inf
    return 0.5 * (m["validity"] + m["fidelity"])


class Table:
    """The judged chunks of one target, on disk, with what is missing generated on demand.

    Args:
        target: a colour-shape pair of the shapes task.
        root: where tables live (default :data:`ROOT`).
    """

    FIELDS = ("colour", "shape", "clean", "features", "bad")

    def __init__(self, target: str, root: Path = ROOT) -> None:
        self.target = target
        self.folder = root / fingerprint() / target
        self._data: dict[tuple[Key, int], Chunks] = {}
        self._load()

    @staticmethod
    def grid_keys() -> list[Key]:
        """Every grid point, coarse first (even exponent offsets), so a partial build covers the range."""
        axes = [GRID[n].exponents() for n in GRID]
        keys = [tuple(k) for k in itertools.product(*axes)]
        lows = [GRID[n].lowest_exponent for n in GRID]

        def coarse(key: Key) -> int:
            return sum((k - low) % 2 for k, low in zip(key, lows, strict=True))

        return sorted(keys, key=lambda k: (coarse(k), k))

    def _load(self) -> None:
        if not self.folder.is_dir():
            return
        for shard in sorted(self.folder.glob("shard-*.safetensors")):
            tensors = load_file(shard)
            names = {name.rsplit("/", 1)[0] for name in tensors}
            for name in names:
                key_s, seed_s = name.split("@")
                key = tuple(int(k) for k in key_s.split(","))
                self._data[(key, int(seed_s))] = Chunks(
                    tensors[f"{name}/colour"].long(),
                    tensors[f"{name}/shape"].long(),
                    tensors[f"{name}/clean"].bool(),
                    tensors[f"{name}/features"].double(),
                    bool(tensors[f"{name}/bad"].item()),
                )

    def has(self, key: Key, seed: int) -> bool:
        return (key, seed) in self._data

    def __len__(self) -> int:
        return len(self._data)

    def chunks(self, key: Key, seeds: Iterable[int]) -> Chunks:
        """The concatenated readouts of ``key`` on chunk ``seeds`` (KeyError: not in the table)."""
        parts = [self._data[(key, s)] for s in seeds]
        return Chunks(
            torch.cat([p.colour for p in parts]),
            torch.cat([p.shape for p in parts]),
            torch.cat([p.clean for p in parts]),
            torch.cat([p.features for p in parts]),
            any(p.bad for p in parts),
        )

    def missing(self, requests: Iterable[tuple[Key, int]]) -> list[tuple[Key, int]]:
        return [r for r in dict.fromkeys(requests) if r not in self._data]

    def _save(self, new: dict[tuple[Key, int], Chunks]) -> Path | None:
        if not new:
            return None
        self.folder.mkdir(parents=True, exist_ok=True)
        tensors: dict[str, torch.Tensor] = {}
        for (key, seed), c in new.items():
            name = f"{key_text(key)}@{seed}"
            tensors[f"{name}/colour"] = c.colour.to(torch.int8)
            tensors[f"{name}/shape"] = c.shape.to(torch.int8)
            tensors[f"{name}/clean"] = c.clean.to(torch.uint8)
            tensors[f"{name}/features"] = c.features.double().contiguous()
            tensors[f"{name}/bad"] = torch.tensor([int(c.bad)], dtype=torch.uint8)
        path = self.folder / f"shard-{time.time_ns()}-{os.getpid()}.safetensors"
        tmp = path.with_suffix(".tmp")
        save_file(tensors, str(tmp))
        tmp.rename(path)
        return path

    def build(self, requests: Iterable[tuple[Key, int]], flush_every: int = 8) -> int:
        """Generate and judge every missing (key, chunk seed); returns how many chunks it made.

        Batches share (rho > 0, mu > 0), so that a batch without variance guidance never runs
        the denoiser's backward pass (the sampler takes it when any sample of a batch needs it).
        """
        from tasks import get_task
        from tasks.shapes_judge import judge
        from tfg_search.guidance.sampler import guided_sample_many

        todo = self.missing(requests)
        if not todo:
            return 0
        groups: dict[tuple[bool, bool], list[tuple[Key, int]]] = {}
        for key, seed in todo:
            p = key_params(key)
            groups.setdefault((p["rho"] > 0, p["mu"] > 0), []).append((key, seed))
        task = get_task("shapes")
        model, _ = task.diffusion("cpu")
        log_f = task.log_f(self.target, "cpu")
        batches = [
            group[i : i + BATCH_CONFIGS]
            for group in groups.values()
            for i in range(0, len(group), BATCH_CONFIGS)
        ]
        start, made, unsaved = time.perf_counter(), 0, {}
        log(f"{self.target}: {len(todo)} chunks to make in {len(batches)} batches")
        for b, batch in enumerate(batches):
            configs = [config_of(key) for key, _ in batch]
            gens = [torch.Generator().manual_seed(int(seed)) for _, seed in batch]
            _, scheduler = task.diffusion("cpu")
            samples, errors = guided_sample_many(
                model, scheduler, log_f, configs, (CHUNK, 3, 32, 32), gens, num_inference_steps=STEPS
            )
            for (key, seed), x, err in zip(batch, samples, errors, strict=True):
                if err is not None:
                    x = torch.zeros(CHUNK, 3, 32, 32)
                v = judge(x.detach())
                unsaved[(key, seed)] = Chunks(v.colour, v.shape, v.clean, v.features, err is not None)
            made += len(batch)
            if (b + 1) % flush_every == 0 or b + 1 == len(batches):
                self._save(unsaved)
                self._data.update(unsaved)
                unsaved = {}
                elapsed = time.perf_counter() - start
                eta = elapsed / made * (len(todo) - made)
                log(f"{self.target}: {made}/{len(todo)} chunks, {elapsed:.0f} s, about {eta:.0f} s to go")
        return made

    def compact(self) -> None:
        """Rewrite the table as one shard (what is committed)."""
        shards = sorted(self.folder.glob("shard-*.safetensors"))
        if len(shards) <= 1:
            return
        whole = self._save(dict(self._data))
        for shard in shards:
            if shard != whole:
                shard.unlink()

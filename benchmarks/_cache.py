"""On-disk evaluation cache of the search benchmarks: generated sample chunks and their metrics.

Every search-fidelity evaluation in ``search_efficiency.py`` and ``guidance_quality.py`` is built
from *chunks*: a chunk is ``chunk`` samples (default 16) of one configuration drawn with one seed.
An evaluation of configuration c on ``m`` chunks with search seed s is the concatenation of the
chunks with seeds ``s * STRIDE + j`` (j = 0 .. m - 1), judged by ``task.compute_metrics`` as one
set. Chunks are nested: the first 16 samples of a 64-sample evaluation are the 16-sample
evaluation, which is what makes a cheaper-fidelity search cheap (it extends a candidate instead of
starting it again) and its comparisons paired (two candidates on the same chunks share the noise).

Chunks are generated with ``tfg_search.guidance.guided_sample_many`` (the engine behind
``tfg_search.run.evaluation.evaluate_batch``): many (configuration, seed) entries in one batch, each
drawing from its own generator exactly as it would alone.

Cache layout (keep it out of git): ``benchmarks/results/cache/<task>-<weights fingerprint>/``

* ``chunks-*.pt``: shards of ``{key: samples tensor | None}`` (None: sampling went non-finite);
* ``metrics.jsonl``: one ``{"key": ..., "metrics": {...}}`` per judged evaluation.

Keys hash (task, target, config, samples, seed, steps), as the benchmark issue asks; the folder
name carries a fingerprint of the task's weight files, so retrained weights start a fresh cache.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tasks import get_task
from tasks.base import Task
from tfg_search.guidance.config import TFGConfig
from tfg_search.guidance.sampler import Structure, guided_sample_many
from tfg_search.run.objective import score

CACHE_ROOT = Path(__file__).resolve().parent / "results" / "cache"
STRIDE = 4096
"""Chunk seeds of search seed s are s * STRIDE + j (j < STRIDE)."""
CHUNK = 16
"""Samples per chunk (the smallest fidelity)."""


def weights_fingerprint(task_name: str) -> str:
    """8 hex digits of the contents of the task's weight files (``tasks/weights/<family>/``).

    Contents, not modification times: a fresh clone of the same weights keeps its cache, and
    retrained weights start a new one.
    """
    root = Path(__file__).resolve().parents[1] / "tasks" / "weights"
    family = task_name.split("-")[0]
    folder = root / family if (root / family).is_dir() else root
    digest = hashlib.sha1()
    for path in sorted(folder.rglob("*.safetensors")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:8]


def config_key(config: TFGConfig) -> str:
    """A stable text form of a configuration (sorted JSON of every field)."""
    return json.dumps(config.to_dict(), sort_keys=True)


def cache_key(task: str, target: str, config: TFGConfig, samples: int, seed: int, steps: int) -> str:
    """16 hex digits keyed by (task, target, config, samples, seed, steps)."""
    blob = json.dumps([task, target, config.to_dict(), samples, seed, steps], sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


@dataclass
class Spend:
    """What one search spent: the distinct (configuration, chunk seed) pairs it asked for."""

    chunk: int
    entries: set[tuple[str, int]] = field(default_factory=set)

    @property
    def samples(self) -> int:
        """Generated samples (cache hits included: what the search would have cost alone)."""
        return len(self.entries) * self.chunk


@dataclass
class Evaluated:
    """The judged result of one configuration on ``chunks`` chunks."""

    config: TFGConfig
    metrics: dict[str, float] | None
    score: float
    samples: int


class ChunkEvaluator:
    """Evaluates (configuration, seed, chunks) requests for one task through the on-disk cache.

    Args:
        task_name: a registered task.
        steps: DDIM steps (default: the task's).
        chunk: samples per chunk.
        max_batch_samples: most samples sampled in one ``guided_sample_many`` call (default:
            about 128k pixels per batch, between 256 and 2,048 samples: 2,048 8x8 digits, 256
            32x32 shapes; measured on shapes, 8.0 ms per sample and step at 256, 10.2 at 1,024).
        cache: use and fill the on-disk cache (off: everything is generated again, nothing saved).
        objective: metric names of the score (default: the task's objective).
    """

    def __init__(
        self,
        task_name: str,
        steps: int | None = None,
        chunk: int = CHUNK,
        max_batch_samples: int | None = None,
        cache: bool = True,
        objective: Sequence[str] | None = None,
    ) -> None:
        self.task_name = task_name
        self.task: Task = get_task(task_name)
        self.steps = int(steps or self.task.num_inference_steps)
        self.chunk = chunk
        pixels = math.prod(self.task.sample_shape[1:]) if len(self.task.sample_shape) > 1 else 1
        self.max_batch_samples = max_batch_samples or min(2048, max(256, 131_072 // pixels))
        self.objective = tuple(objective or self.task.objective)
        self.use_cache = cache
        self.folder = CACHE_ROOT / f"{task_name}-{weights_fingerprint(task_name)}"
        self._chunks: dict[str, torch.Tensor | None] = {}
        self._metrics: dict[str, dict[str, float] | None] = {}
        self._unsaved: dict[str, torch.Tensor | None] = {}
        self._last_flush = time.monotonic()
        self.generated_samples = 0
        """Samples actually generated by this process (cache misses)."""
        self.sampling_s = 0.0
        """Wall time spent generating them."""
        if cache:
            self._load()

    # -- persistence -------------------------------------------------------------------------
    def _load(self) -> None:
        if not self.folder.exists():
            return
        for shard in sorted(self.folder.glob("chunks-*.pt")):
            try:
                self._chunks.update(torch.load(shard, weights_only=True))
            except Exception:  # a shard cut short by a kill: skip it, its chunks are redone
                continue
        metrics = self.folder / "metrics.jsonl"
        if metrics.exists():
            for line in metrics.read_text().splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue
                self._metrics[row["key"]] = row["metrics"]

    def flush(self, force: bool = True) -> None:
        """Write unsaved chunks as a new shard (always when ``force``, else at most every 30 s)."""
        if not self.use_cache or not self._unsaved:
            return
        if not force and time.monotonic() - self._last_flush < 30 and len(self._unsaved) < 4096:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        name = self.folder / f"chunks-{time.time_ns()}-{os.getpid()}.pt"
        tmp = name.with_suffix(".tmp")
        torch.save(self._unsaved, tmp)
        tmp.rename(name)
        self._unsaved = {}
        self._last_flush = time.monotonic()

    def _save_metrics(self, key: str, metrics: dict[str, float] | None) -> None:
        self._metrics[key] = metrics
        if not self.use_cache:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        with (self.folder / "metrics.jsonl").open("a") as fh:
            fh.write(json.dumps({"key": key, "metrics": metrics}) + "\n")

    # -- generation --------------------------------------------------------------------------
    def chunk_seeds(self, seed: int, chunks: int) -> list[int]:
        """The chunk seeds of search seed ``seed``: ``seed * STRIDE + j``, j < chunks."""
        if not 0 < chunks <= STRIDE:
            raise ValueError(f"chunks must be in 1..{STRIDE}, got {chunks}")
        return [seed * STRIDE + j for j in range(chunks)]

    def _chunk_key(self, target: str, config: TFGConfig, chunk_seed: int) -> str:
        return cache_key(self.task_name, target, config, self.chunk, chunk_seed, self.steps)

    def _generate(self, target: str, entries: list[tuple[TFGConfig, int]]) -> None:
        """Sample every (config, chunk seed) entry not in the cache, batched by structure."""
        missing: dict[str, tuple[TFGConfig, int]] = {}
        for config, cseed in entries:
            key = self._chunk_key(target, config, cseed)
            if key not in self._chunks and key not in missing:
                missing[key] = (config, cseed)
        if not missing:
            return
        groups: dict[tuple[Any, ...], list[tuple[str, TFGConfig, int]]] = {}
        for key, (config, cseed) in missing.items():
            groups.setdefault(Structure.of(config), []).append((key, config, cseed))
        model, _ = self.task.diffusion("cpu")
        log_f = self.task.log_f(target, "cpu")
        shape = (self.chunk, *self.task.sample_shape)
        per_call = max(1, self.max_batch_samples // self.chunk)
        for group in groups.values():
            for start in range(0, len(group), per_call):
                part = group[start : start + per_call]
                runs = [c.replace(clip_x0=self.task.clip_x0) for _, c, _ in part]
                gens = [torch.Generator().manual_seed(int(s)) for _, _, s in part]
                t0 = time.perf_counter()
                _, scheduler = self.task.diffusion("cpu")  # a fresh scheduler per call
                samples, errors = guided_sample_many(
                    model, scheduler, log_f, runs, shape, gens, num_inference_steps=self.steps, device="cpu"
                )
                self.sampling_s += time.perf_counter() - t0
                self.generated_samples += len(part) * self.chunk
                for (key, _, _), x, err in zip(part, samples, errors, strict=True):
                    value = None if err is not None else x.detach().cpu().clone()
                    self._chunks[key] = value
                    if self.use_cache:
                        self._unsaved[key] = value
                self.flush(force=False)

    # -- evaluation --------------------------------------------------------------------------
    def evaluate(
        self,
        target: str,
        requests: Sequence[tuple[TFGConfig, int, int]],
        spend: Spend | None = None,
    ) -> list[Evaluated]:
        """Judge each (config, search seed, chunks) request on its concatenated chunks.

        All missing chunks of all requests are generated together (one batch per structure).
        ``spend`` (if given) records the (config, chunk seed) pairs asked for.
        """
        entries = []
        for config, seed, chunks in requests:
            for cseed in self.chunk_seeds(seed, chunks):
                entries.append((config, cseed))
                if spend is not None:
                    spend.entries.add((config_key(config), cseed))
        self._generate(target, entries)
        out = []
        for config, seed, chunks in requests:
            n = chunks * self.chunk
            mkey = cache_key(self.task_name, target, config, n, seed, self.steps) + f"/c{self.chunk}"
            if mkey not in self._metrics:
                parts = [
                    self._chunks[self._chunk_key(target, config, s)] for s in self.chunk_seeds(seed, chunks)
                ]
                if any(p is None for p in parts):
                    metrics = None
                else:
                    try:
                        metrics = self.task.compute_metrics(torch.cat(parts), target)  # type: ignore[arg-type]
                    except Exception:
                        metrics = None
                self._save_metrics(mkey, metrics)
            metrics = self._metrics[mkey]
            value = score(metrics, self.objective) if metrics is not None else -math.inf
            out.append(Evaluated(config, metrics, value, n))
        return out

    def evaluate_one(
        self, target: str, config: TFGConfig, seed: int, chunks: int, spend: Spend | None = None
    ) -> Evaluated:
        """:meth:`evaluate` of a single request."""
        return self.evaluate(target, [(config, seed, chunks)], spend)[0]


def unique_configs(configs: Iterable[TFGConfig]) -> list[TFGConfig]:
    """``configs`` without repeats, in first-seen order."""
    seen: dict[str, TFGConfig] = {}
    for c in configs:
        seen.setdefault(config_key(c), c)
    return list(seen.values())

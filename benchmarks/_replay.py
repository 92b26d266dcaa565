"""Searches replayed on the tabular shapes benchmark (``_table.py``): the oracle, the judge, waves.

A search sees an *oracle*: ``evaluate(key, samples) -> score`` of one lattice point on ``samples``
fresh samples. On the table, the samples of a point are read, never generated again (except the
extension chunks a search is the first to ask for, which are generated once and kept):

* **Streams.** Every point has the same sequence of sample *slots*: the 32 of the pool (chunk
  seeds 0 and 1), then those of the extension chunks (seeds 2, 3, ...). A search seed ``s``
  fixes one order of the slots (:meth:`Oracle.stream`: the pool's 32 slots shuffled, then the
  extension chunks in a shuffled order, each chunk's 16 slots in turn), the same for every point:
  candidates of one search are compared on common random numbers, as a live search compares
  them (every candidate drawn with the same seed), and two search seeds see other noise.
* **Independent evaluations.** Each evaluation of a point takes the next slots of its stream:
  a point evaluated again (a promotion to a later rung, a final re-run) gets samples it has not
  had, as a live re-run on a fresh seed does. A search that draws every trial with one seed
  (Optuna's samplers in ``tfg-search search``) evaluates with ``fresh=False``: a point proposed
  again is drawn on the same samples, as it is live.
* **Passes.** Every evaluation counts its model passes (``tfg_search.guidance.pass_counts`` of
  its configuration, times its samples): denoiser forward passes (one per sample, step and
  recurrence round) and predictor gradient passes. Compute budgets are denoiser passes.

The *judge* of an answer is separate from everything a search saw: 256 samples on the final
seeds of ``_table.py`` (:func:`judge`), the same for every point (paired).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from _table import CHUNK, STEPS, Key, Table, config_of, final_seeds, metrics, score
from _waves import Passes

POOL_CHUNKS = 2
"""Chunk seeds 0..1: the part of every point's stream that the table holds for every point."""
EXTENSION_BLOCKS = ((2, 16), (16, 32))
"""Chunk seeds of the extension, generated on demand, in blocks shuffled one after the other:
seeds 2..15, then 16..31 (a point's 32 + 480 samples in all). The blocks keep the order of a
shorter stream: a stream that grew keeps the chunks its first part already asked for."""


def passes_of(key: Key, samples: int) -> Passes:
    """The model passes of an evaluation of ``key`` on ``samples`` samples."""
    from tfg_search.guidance.passes import sample_passes

    return Passes(**sample_passes(config_of(key), STEPS, samples))  # type: ignore[arg-type]


class MissingChunks(Exception):
    """An evaluation needs extension chunks the table does not hold yet (generate, then replay)."""

    def __init__(self, needed: set[tuple[Key, int]]) -> None:
        super().__init__(f"{len(needed)} chunks missing")
        self.needed = needed


@dataclass
class Evaluation:
    key: Key
    samples: int
    score: float
    passes: Passes


@dataclass
class Oracle:
    """Evaluations of one search (one target, one search seed) read from the table."""

    table: Table
    target: str
    seed: int
    lenient: bool = False
    """Collect every missing chunk of a run in one pass: an evaluation that needs chunks the
    table lacks is scored on the point's pool instead (a placeholder that keeps the run going;
    a run that used one is replayed once the chunks are made)."""
    log: list[Evaluation] = field(default_factory=list)
    used: dict[Key, int] = field(default_factory=dict)
    missing: set[tuple[Key, int]] = field(default_factory=set)

    def __post_init__(self) -> None:
        rng = random.Random(10_007 * self.seed + 17)
        pool = list(range(POOL_CHUNKS * CHUNK))
        rng.shuffle(pool)
        chunks: list[int] = []
        for low, high in EXTENSION_BLOCKS:
            block = list(range(low, high))
            rng.shuffle(block)
            chunks += block
        self._slots = pool + [c * CHUNK + i for c in chunks for i in range(CHUNK)]

    def stream(self, key: Key, start: int, n: int) -> list[int]:
        if start + n > len(self._slots):
            raise ValueError(f"point {key} has no {start + n} samples in its stream")
        return self._slots[start : start + n]

    def evaluate(self, key: Key, samples: int, fresh: bool = True) -> float:
        """The score of ``key`` on its next ``samples`` samples (recorded with its passes).

        ``fresh=False``: on the first ``samples`` of its stream instead, as a search that draws
        every trial with one seed does (``tfg-search search --sampler gp|tpe|random``): a point
        proposed again gets the same samples, hence the same score, and costs its passes again.
        """
        start = self.used.get(key, 0) if fresh else 0
        slots = self.stream(key, start, samples)
        seeds = sorted({s // CHUNK for s in slots})
        need = {(key, s) for s in seeds if not self.table.has(key, s)}
        if need:
            self.missing |= need
            if not self.lenient:
                raise MissingChunks(need)
            value = pool_score(self.table, key, self.target)
        else:
            chunks = self.table.chunks(key, seeds)
            position = {s: i for i, s in enumerate(seeds)}
            index = [position[s // CHUNK] * CHUNK + s % CHUNK for s in slots]
            value = score(metrics(chunks.subset(index), self.target))
        self.used[key] = max(self.used.get(key, 0), start + samples)
        self.log.append(Evaluation(key, samples, value, passes_of(key, samples)))
        return value

    @property
    def passes(self) -> Passes:
        total = Passes()
        for e in self.log:
            total = total + e.passes
        return total

    def fork(self) -> Oracle:
        """An oracle that goes on from here independently (the same streams, its own position)."""
        return Oracle(
            self.table, self.target, self.seed, self.lenient, list(self.log), dict(self.used), self.missing
        )


def pool_score(table: Table, key: Key, target: str) -> float:
    """The score of a point on its whole pool (32 samples)."""
    return score(metrics(table.chunks(key, range(POOL_CHUNKS)), target))


def judge(table: Table, key: Key, target: str, reseed: int = 0) -> float | None:
    """The judged final score of a point (256 samples of the final seeds), None if not built."""
    seeds = final_seeds(reseed)
    if not all(table.has(key, s) for s in seeds):
        return None
    return score(metrics(table.chunks(key, seeds), target))


def waves(sizes: Sequence[int], workers: int) -> int:
    """Waves of ``workers`` parallel workers that rounds of these sizes take (a round is a barrier)."""
    return sum(math.ceil(n / workers) for n in sizes if n > 0)


def set_threads(n: int) -> None:
    torch.set_num_threads(n)

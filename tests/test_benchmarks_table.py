"""The tabular shapes benchmark (benchmarks/_table.py, _replay.py): its metrics are the task's, its
storage round-trips, and its oracle hands out samples as a live search draws them."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from _replay import MissingChunks, Oracle, passes_of  # noqa: E402
from _table import CHUNK, Chunks, Table, config_of, metrics  # noqa: E402

from tasks import get_task  # noqa: E402
from tasks.shapes_judge import judge  # noqa: E402
from tfg_search.guidance.sampler import guided_sample_many  # noqa: E402

TARGET = "cyan-triangle"


def _samples(key: tuple[int, ...], seed: int, steps: int = 4) -> torch.Tensor:
    task = get_task("shapes")
    model, scheduler = task.diffusion("cpu")
    out, errors = guided_sample_many(
        model,
        scheduler,
        task.log_f(TARGET, "cpu"),
        [config_of(key)],
        (CHUNK, 3, 32, 32),
        [torch.Generator().manual_seed(seed)],
        num_inference_steps=steps,
    )
    assert errors == [None]
    return out[0].detach()


def test_table_metrics_are_the_tasks_and_survive_storage(tmp_path: Path) -> None:
    x = torch.cat([_samples((0, 5, -1), 1), _samples((0, 5, -1), 2)])
    v = judge(x)
    chunks = Chunks(v.colour, v.shape, v.clean, v.features, False)
    want = get_task("shapes").compute_metrics(x, TARGET)
    got = metrics(chunks, TARGET)
    assert got is not None
    for name in ("validity", "colour_validity", "shape_validity", "clean_rate", "fidelity"):
        assert got[name] == pytest.approx(want[name], abs=1e-9), name
    assert got["fd"] == pytest.approx(want["fd"], rel=1e-6)
    # stored and read back: the same numbers
    table = Table(TARGET, root=tmp_path)
    table._save(
        {
            ((0, 5, -1), 0): chunks.subset(range(CHUNK)),
            ((0, 5, -1), 1): chunks.subset(range(CHUNK, 2 * CHUNK)),
        }
    )
    again = Table(TARGET, root=tmp_path)
    assert len(again) == 2 and metrics(again.chunks((0, 5, -1), [0, 1]), TARGET) == got


def _synthetic(tmp_path: Path, keys, seeds) -> Table:
    """A table of made-up readouts: every sample judged the target, features of real images."""
    from tasks.shapes import JudgeFeatures, reference_images

    real = JudgeFeatures()(reference_images(TARGET)[: 4 * CHUNK]).double()
    table = Table(TARGET, root=tmp_path)
    for k, key in enumerate(keys):
        for s in seeds:
            rows = torch.arange(CHUNK) + CHUNK * ((k + s) % 4)
            table._data[(key, s)] = Chunks(
                torch.full((CHUNK,), 5),
                torch.full((CHUNK,), 2),
                torch.ones(CHUNK, dtype=torch.bool),
                real[rows],
                False,
            )
    return table


def test_oracle_streams_common_numbers_fresh_samples_and_forks(tmp_path: Path) -> None:
    a, b = (0, 5, -1), (1, 5, -1)
    table = _synthetic(tmp_path, [a, b], range(3))
    oracle = Oracle(table, TARGET, seed=7)
    assert oracle.stream(a, 0, 16) == oracle.stream(b, 0, 16)  # every point on the same slots
    assert Oracle(table, TARGET, seed=8).stream(a, 0, 32) != oracle.stream(a, 0, 32)  # another seed
    oracle.evaluate(a, 16)
    oracle.evaluate(a, 16)
    assert oracle.used[a] == 32 and set(oracle.stream(a, 0, 16)).isdisjoint(oracle.stream(a, 16, 16))
    assert oracle.passes == passes_of(a, 16) + passes_of(a, 16)
    fork = oracle.fork()
    with pytest.raises(MissingChunks) as missing:
        fork.evaluate(a, 32)  # needs two extension chunks; the table holds one of them at most
    assert all(key == a and seed >= 2 for key, seed in missing.value.needed)
    assert oracle.used[a] == 32  # the fork went on alone
    lenient = Oracle(table, TARGET, seed=7, lenient=True)
    lenient.evaluate(b, 32)
    value = lenient.evaluate(b, 64)  # scored on the pool, the missing chunks noted
    assert value == value and lenient.missing and lenient.used[b] == 96


def test_search_report_keeps_the_tasks_of_an_earlier_run() -> None:
    """``--tasks shapes`` then ``--tasks digits`` into one report: neither run loses the other's."""
    from search_efficiency import merge_results

    earlier = {"benchmark": "search_efficiency", "tasks": {"shapes": {"wall_time_s": 9}, "digits": {"a": 1}}}
    now = {"benchmark": "search_efficiency", "tasks": {"digits": {"a": 2}}}
    merged = merge_results(earlier, now)
    assert merged["tasks"] == {"shapes": {"wall_time_s": 9}, "digits": {"a": 2}}
    # a file that is not this benchmark's report contributes nothing
    assert merge_results({"benchmark": "other", "tasks": {"x": 1}}, now)["tasks"] == {"digits": {"a": 2}}

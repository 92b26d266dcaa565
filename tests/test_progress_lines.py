"""Off a terminal (CI logs, ``ray job logs``, a pipe) a search prints one plain line per wave, or
one JSON object per wave with ``--log-json``, and a timed line every ``$TFG_SEARCH_LINE_EVERY``
seconds while a wave runs longer; a finished search run again reports the study's own
totals (issue 27, item 3)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from tests.helpers.cli import run_cli, run_proc
from tests.helpers.models import ddim, tiny_unet
from tfg_search.cli.progress import EVERY_ENV

TINY = [
    "search", "--task", "gmm2d", "--target", "3", "--samples", "4", "--final-samples", "4", "--steps", "2",
    "--search", "random", "--trials", "8", "--wave", "4", "--final-top", "1", "--storage", "sqlite:///p.db",
]  # fmt: skip


def test_a_pipe_shows_a_line_per_wave_and_json_lines_for_machines(tmp_path: Path) -> None:
    plain = run_proc(TINY, tmp_path, env={"OMP_NUM_THREADS": "1"})
    assert plain.code == 0, plain.err
    waves = [line for line in plain.err.splitlines() if line.startswith(("wave ", "final re-runs:"))]
    assert [w.split(":")[0] for w in waves] == ["wave 1 of 2", "wave 2 of 2", "final re-runs"]
    assert "4 trials done" in waves[0] and "9 trials done" in waves[2]
    assert "denoiser passes, best " in waves[1] and waves[2].rstrip().endswith(" s")
    assert "(final trial 0:" in waves[2]  # the best once the finals ran: the best final
    assert "\x1b[" not in plain.err and "━" not in plain.err  # no bars, no ANSI

    again = run_proc([*TINY, "--log-json", "--json"], tmp_path, env={"OMP_NUM_THREADS": "1"})
    assert again.code == 0, again.err
    assert not [line for line in again.err.splitlines() if line.startswith("{")]  # nothing ran
    report = json.loads(again.out)
    assert report["wall_time_s"] == report["compute"]["wall_time_s"]  # the study's own time

    fresh = run_proc([*TINY[:-1], "sqlite:///q.db", "--log-json"], tmp_path, env={"OMP_NUM_THREADS": "1"})
    events = [json.loads(line) for line in fresh.err.splitlines() if line.startswith("{")]
    assert [(e["event"], e["phase"], e["wave"], e["of"]) for e in events] == [
        ("wave", "search", 1, 2),
        ("wave", "search", 2, 2),
        ("wave", "final", 3, 2),
    ]
    assert events[-1]["trials"] == 9 and events[-1]["best"]["role"] == "final"
    assert events[-1]["passes"]["denoiser"] > events[0]["passes"]["denoiser"] > 0


def slow_log_f(x: torch.Tensor, target: str) -> torch.Tensor:
    """A guide that takes its time (a long wave, as a real model's are)."""
    time.sleep(0.03)
    return -(x.flatten(1).mean(1) - float(target)).abs()


def success(x: torch.Tensor, target: str) -> torch.Tensor:
    return ((x.flatten(1).mean(1) - float(target)).abs() < 0.5).float()


def test_a_long_wave_adds_a_timed_line_every_n_seconds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    model = tmp_path / "model"
    tiny_unet().save_pretrained(model)
    ddim().save_pretrained(model)
    args = [
        "search", "--task", "custom", "--target", "0.5", "--search", "random", "--trials", "4",
        "--wave", "2", "--samples", "2", "--final-samples", "2", "--final-top", "1", "--steps", "3",
        "--batch-size", "1", "-o", f"model={model}",
        "-o", f"predictor={__name__}:slow_log_f", "-o", f"evaluator={__name__}:success",
    ]  # fmt: skip
    monkeypatch.setenv(EVERY_ENV, "0.05")  # every trial takes longer (3 steps x 0.03 s at least)
    plain = run_cli([*args, "--storage", f"sqlite:///{tmp_path / 'p.db'}"], capsys)
    assert plain.code == 0, plain.err
    lines = plain.err.splitlines()
    waves = [i for i, line in enumerate(lines) if line.startswith(("wave ", "final re-runs:"))]
    timed = [i for i in waves if "running for" in lines[i]]
    told = [i for i in waves if i not in timed]
    assert [lines[i].split(":")[0] for i in told] == ["wave 1 of 2", "wave 2 of 2", "final re-runs"]
    assert timed and timed[0] < told[0]  # the first wave was not silent
    first = lines[timed[0]]
    assert first.startswith("wave 1 of 2: ") and " of 2 trials done, running for " in first
    # each wave's timed lines come before its own line, none after it (the clock stops)
    for start, end in zip([-1, *told], told, strict=False):
        names = {lines[i].split(":")[0] for i in timed if start < i < end}
        assert names <= {lines[end].split(":")[0]}
    assert not [i for i in timed if i > told[-1]]

    fresh = run_cli([*args, "--storage", f"sqlite:///{tmp_path / 'q.db'}", "--log-json"], capsys)
    assert fresh.code == 0, fresh.err
    events = [json.loads(line) for line in fresh.err.splitlines() if line.startswith("{")]
    progress = [e for e in events if e["event"] == "progress"]
    assert progress and {e["phase"] for e in progress} <= {"search", "final"}
    keys = {"event", "wave", "of", "phase", "done", "pending", "wave_elapsed_s", "elapsed_s"}
    assert set(progress[0]) == keys
    assert progress[0]["pending"] == 2 and progress[0]["wave_elapsed_s"] >= 0.05
    assert [e["wave"] for e in events if e["event"] == "wave"] == [1, 2, 3]


def test_a_bad_line_interval_is_one_line_before_anything_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for bad in ("soon", "-1", "nan"):
        monkeypatch.setenv(EVERY_ENV, bad)
        res = run_cli([*TINY, "--quiet"], capsys)
        assert res.code == 2
        assert res.err.strip().splitlines() == [
            f"error: {EVERY_ENV} must be a number of seconds >= 0 (0: no timed lines), got {bad!r}; "
            "fix it or unset it"
        ]
        assert not (tmp_path / "p.db").exists()

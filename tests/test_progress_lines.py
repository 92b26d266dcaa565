"""Off a terminal (CI logs, ``ray job logs``, a pipe) a search prints one plain line per wave, or
one JSON object per wave with ``--log-json``; a finished search run again reports the study's own
totals (issue 27, item 3)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers.cli import run_proc

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

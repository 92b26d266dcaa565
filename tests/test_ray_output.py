"""Ray worker output without ANSI noise (issue 27, item 3): off a terminal (a CI log, ``ray job
logs``, a pipe) a search on a local Ray prints the actors' lines with their ``(pid=...)`` prefix
and no colour codes."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.cli import run_proc
from tests.helpers.models import ddim, tiny_unet

GUIDES = """\
def log_f(x, target):
    print("guide called", flush=True)  # a worker's own output
    return -(x.flatten(1).mean(1) - float(target)).abs()


def success(x, target):
    return ((x.flatten(1).mean(1) - float(target)).abs() < 0.5).float()
"""


@pytest.mark.ray
@pytest.mark.slow
def test_a_piped_ray_search_prints_the_workers_lines_without_ansi(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    tiny_unet().save_pretrained(tmp_path / "model")
    ddim().save_pretrained(tmp_path / "model")
    (tmp_path / "guides_print.py").write_text(GUIDES)  # reaches the actors with the job (py_modules)
    args = [
        "search", "--task", "custom", "--target", "0.5", "--search", "random", "--trials", "2",
        "--wave", "2", "--samples", "2", "--final-samples", "2", "--final-top", "1", "--steps", "2",
        "-o", "model=model", "-o", "predictor=guides_print:log_f", "-o", "evaluator=guides_print:success",
        "--executor", "ray", "--workers", "1", "--storage", "sqlite:///r.db",
    ]  # fmt: skip
    run = run_proc(
        args, tmp_path, 300, env={"PYTHONPATH": "", "OMP_NUM_THREADS": "1", "RAY_COLOR_PREFIX": ""}
    )
    assert run.code == 0, run.err[-3000:]
    worker = [line for line in run.out.splitlines() if line.endswith(" guide called")]
    assert worker and all(line.startswith("(_TrialWorker pid=") for line in worker)  # Ray's prefix
    assert "\x1b[" not in run.out and "\x1b[" not in run.err
    assert "final re-runs: " in run.err  # the search's own lines are there too

"""Smoke tests of the search benchmarks: each ``--quick`` mode on gmm2d, its JSON shape and values.

Both scripts run in subprocesses (as users run them), at the same time, with ``--no-cache`` and
``--out`` in a temporary folder, so nothing under benchmarks/results/ is touched. They need about
40 s of CPU together (about 25 s of wall time on two idle cores).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Both scripts' ``--quick`` JSON; the two subprocesses run at the same time (2 cores)."""
    folder = tmp_path_factory.mktemp("bench")
    procs = {}
    for script in ("search_efficiency.py", "guidance_quality.py"):
        out = folder / script.replace(".py", ".json")
        cmd = [sys.executable, str(ROOT / "benchmarks" / script), "--quick", "--no-cache", "--out", str(out)]
        procs[script] = (
            subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True),
            out,
        )
    results = {}
    for script, (proc, out) in procs.items():
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
        results[script] = json.loads(out.read_text())
    return results


@pytest.fixture(scope="module")
def efficiency(outputs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return outputs["search_efficiency.py"]


@pytest.fixture(scope="module")
def quality(outputs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return outputs["guidance_quality.py"]


def test_search_efficiency_quick(efficiency: dict[str, Any]) -> None:
    data = efficiency
    assert data["benchmark"] == "search_efficiency" and data["workers"] == 8 and data["goal"] == 0.98
    assert {"machine", "methods", "seeds", "tasks"} <= set(data)
    task = data["tasks"]["gmm2d"]
    assert task["wall_time_s"] > 0 and "--quick" in task["command"]  # each task keeps its own
    summary = task["summary"]
    assert set(summary) == {"rungs", "beam", "gp", "tpe", "random"}
    for row in summary.values():
        assert 0 < row["min_fraction"] <= row["mean_fraction"] <= 1.0 + 1e-12  # the best judged is 1
        assert row["evaluations"] >= 1 and row["waves"] >= 2  # a search wave and the finals' wave
        assert row["waves_to_0.98"] is None or row["waves_to_0.98"] >= 1
    # equal compute: Optuna's samplers spend the rung search's model passes (finals included)
    for kind in ("gp", "tpe", "random"):
        assert summary[kind]["passes"] == summary["rungs"]["passes"]
        assert set(summary["rungs"][f"minus_{kind}"]) == {"mean", "low", "high"}
    runs = task["targets"]["3"]["runs"]
    rungs = runs["rungs/0"]
    # 16 spread (presets first) + 16 refine at one unit, 4 at rung 1, 2 at rung 2 (2 units), then
    # the champion rounds (a point ahead of the top rung's best goes up a rung), 2 finals
    assert rungs["evaluations"] >= 16 + 16 + 4 + 2 + 2
    spent = rungs["passes"]["denoiser"] - 8 * 2 * 32  # less the finals: 8 steps x 32 samples, units of 32
    assert spent % (8 * 32) == 0 and spent // (8 * 32) >= 16 + 16 + 4 + 2 * 2
    assert (
        rungs["passes"]["predictor"] > 0
        and rungs["passes"]["denoiser_backward"] <= rungs["passes"]["denoiser"]
    )
    # the rung search's units in trials of 32 samples, in waves of 8, then the finals' wave
    assert runs["gp/0"]["waves"] == -(-(spent // (8 * 32)) // 8) + 1


def test_guidance_quality_quick(quality: dict[str, Any]) -> None:
    data = quality
    assert data["benchmark"] == "guidance_quality"
    assert {"machine", "settings", "summary", "results"} <= set(data)
    summary = data["summary"]["gmm2d"]
    assert summary["targets"] == 1 and 0 <= summary["tfg_wins_or_ties"] <= 1
    assert math.isfinite(summary["mean_gain_pct"]) and summary["comparisons"] == 2
    per_class = data["results"]["gmm2d"]["3"]
    assert set(per_class) == {"n_recur 1", "n_recur 2"}
    one, two = per_class["n_recur 1"], per_class["n_recur 2"]
    assert set(one["methods"]) == {"dps", "mpgd", "lgd"} and set(two["methods"]) == {"freedom", "ugd"}
    # equal compute: TFG's passes per step equal DPS's (n_recur 1) and UGD's (n_recur 2)
    assert one["tfg"]["passes_per_step"]["unet"] == one["methods"]["dps"]["passes_per_step"]["unet"] == 1
    assert two["tfg"]["passes_per_step"]["unet"] == two["methods"]["ugd"]["passes_per_step"]["unet"] == 2
    for rec in (one, two):
        assert rec["best_method"] in rec["methods"] and len(rec["tfg_scores"]) == 3
        d = rec["difference"]
        assert d["low"] <= d["mean"] <= d["high"] and rec["tfg_wins_or_ties"] == (d["high"] >= 0)

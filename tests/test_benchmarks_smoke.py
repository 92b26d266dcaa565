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
    assert data["benchmark"] == "search_efficiency"
    assert {"machine", "settings", "summary", "results", "wall_s"} <= set(data)
    assert data["machine"]["cpu_count"] >= 1
    methods = {row["method"] for row in data["summary"]}
    assert methods == {
        "beam-crn",
        "beam-independent",
        "beam-half",
        "beam-mf-0",
        "beam-mf-0.02",
        "tpe",
        "random",
    }
    for row in data["summary"]:
        assert row["task"] == "gmm2d"
        assert 0 < row["fraction_mean"] <= 1.05
        assert 0 < row["fraction_min"] <= row["fraction_mean"] + 1e-12
        assert row["samples_mean"] > 0
        assert 0 < row["evaluations_share_of_grid"] <= 1
    per_target = data["results"]["gmm2d"]["3"]
    grid = per_target["grid"]
    assert grid["evaluations"] == 5 * 5 * 3  # the quick lattice
    assert 0 < grid["best"]["final_score"] <= 1
    crn = {r["seed"]: r for r in per_target["runs"] if r["method"] == "beam-crn"}
    for run in per_target["runs"]:
        assert 0 < run["fraction_of_grid_best"] <= 1.05
        assert run["samples"] > 0 and run["evaluations"] > 0
        if run["method"] in ("tpe", "random"):  # equal budget
            assert run["evaluations"] == crn[run["seed"]]["evaluations"]
        if run["method"].startswith("beam-mf"):  # never more samples than the full-fidelity beam
            assert run["samples"] <= crn[run["seed"]]["samples"]


def test_guidance_quality_quick(quality: dict[str, Any]) -> None:
    data = quality
    assert data["benchmark"] == "guidance_quality"
    assert {"machine", "settings", "summary", "results", "recurrence"} <= set(data)
    methods = {row["method"] for row in data["summary"]}
    assert methods == {"tfg", "dps", "lgd", "freedom", "mpgd", "ugd"}
    for row in data["summary"]:
        assert 0 <= row["validity"] <= 1
        assert 0 < row["fidelity"] <= 1
        assert row["evaluations"] >= 1
    rec = data["results"]["gmm2d"]
    assert math.isfinite(rec["tfg_relative_improvement_mean"])
    target = rec["targets"]["3"]
    assert target["best_baseline"] in {"dps", "lgd", "freedom", "mpgd", "ugd"}
    assert target["methods"]["dps"]["config"]["n_iter"] == 0  # a real DPS point, not TFG
    recur = data["recurrence"]["targets"]["3"]
    assert set(recur) == {"1", "2"}
    assert all(0 <= r["metrics"]["validity"] <= 1 for r in recur.values())

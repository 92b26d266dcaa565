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
    assert {"machine", "settings", "summary", "paired", "results", "wall_s"} <= set(data)
    assert data["machine"]["cpu_count"] >= 1
    summary = data["summary"]["gmm2d"]
    assert set(summary) == {
        "beam-reference",
        "beam-zero",
        "beam-refined",
        "beam-reeval",
        "tpe",
        "random",
        "gp",
    }
    for row in summary.values():
        assert 0 < row["mean_fraction"] <= 1.1 and row["min_fraction"] <= row["mean_fraction"] + 1e-12
        assert row["evaluations"] >= 1
    per_target = data["results"]["gmm2d"]["3"]
    assert per_target["grid"]["size"] == 6 * 6 * 4  # the quick grid: rho, mu with 0 and 5 values, gamma 4
    by_method = {r["method"]: r for r in per_target["runs"]}
    reeval = by_method["beam-reeval"]  # the refined beam's evaluations and 6 re-evaluations
    assert reeval["evaluations"] == by_method["beam-refined"]["evaluations"]
    assert reeval["total_evaluations"] == reeval["evaluations"] + 6
    for kind in ("tpe", "random", "gp"):  # equal budget: every evaluation of beam-reeval
        assert by_method[kind]["evaluations"] == reeval["total_evaluations"]
    assert by_method["beam-reference"]["chosen"]["mu"] > 0  # the reference lattices have no 0
    assert set(data["paired"]["gmm2d"]) == {
        f"beam-reeval - {m}" for m in ("beam-reference", "beam-zero", "beam-refined", "tpe", "random", "gp")
    } | {f"beam-refined - {m}" for m in ("beam-reference", "beam-zero", "tpe", "random", "gp")}


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

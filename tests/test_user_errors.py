"""A custom task's predictor or evaluator that raises is the user's error (issue 27, item 2): one
line naming the function, exit 2, the search stops at the first, its trial is kept and re-run
when the same command runs again after the fix, and the search then equals one never stopped;
``--debug`` (or ``TFG_SEARCH_DEBUG=1``) adds the traceback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
from optuna.trial import TrialState

from tests.helpers.cli import run_cli
from tests.helpers.models import ddim, tiny_unet
from tests.test_exact_resume import trials
from tfg_search.store.layout import TRIAL_ATTR
from tfg_search.store.studies import load_search

HERE = __name__
BROKEN: dict[str, Any] = {"after": None, "calls": 0}
"""The predictor raises after this many calls while ``after`` is set (the user's bug, then the fix)."""


def log_f(x: torch.Tensor, target: str) -> torch.Tensor:
    BROKEN["calls"] += 1
    if BROKEN["after"] is not None and BROKEN["calls"] > BROKEN["after"]:
        raise ValueError(f"no guide for {target}\nsecond line")
    return -(x.flatten(1).mean(1) - float(target)).abs()


def success(x: torch.Tensor, target: str) -> torch.Tensor:
    return ((x.flatten(1).mean(1) - float(target)).abs() < 0.5).float()


def failing_success(x: torch.Tensor, target: str) -> torch.Tensor:
    return {}["validity"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("user-errors-model")
    tiny_unet().save_pretrained(folder)
    ddim().save_pretrained(folder)
    return folder


def search_args(model: Path, db: Path) -> list[str]:
    return [
        "search", "--task", "custom", "--target", "0.5", "--search", "random", "--trials", "6",
        "--wave", "2", "--samples", "2", "--final-samples", "2", "--final-top", "1", "--steps", "2",
        "--batch-size", "1", "--study", "s", "--storage", f"sqlite:///{db}", "--quiet",
        "-o", f"model={model}", "-o", f"predictor={HERE}:log_f",
        "-o", f"evaluator={HERE}:success",
    ]  # fmt: skip


def test_a_raising_predictor_stops_the_search_and_the_fixed_rerun_equals_an_unbroken_one(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    BROKEN.update(after=None, calls=0)
    fresh = run_cli(search_args(model_dir, tmp_path / "fresh.db"), capsys)
    assert fresh.code == 0, fresh.err
    calls_per_search = BROKEN["calls"]

    BROKEN.update(after=calls_per_search // 3, calls=0)  # the bug bites in the search's middle
    broken = run_cli(search_args(model_dir, tmp_path / "s.db"), capsys)
    assert broken.code == 2
    lines = broken.err.strip().splitlines()
    assert len(lines) == 1, broken.err
    assert lines[0].startswith(f"error: predictor {HERE}:log_f raised ValueError: no guide for 0.5 (trial ")
    assert "run the same command again" in lines[0] and "Traceback" not in broken.err
    studies = load_search(f"sqlite:///{tmp_path / 's.db'}", "s")
    kept = studies.search.get_trials(deepcopy=False)
    failed = [t for t in kept if (t.user_attrs.get(TRIAL_ATTR) or {}).get("failure") == "user"]
    assert len(failed) == 1 and failed[0].state == TrialState.RUNNING  # stopped at the first
    assert failed[0].user_attrs[TRIAL_ATTR]["error"].startswith(f"predictor {HERE}:log_f raised ValueError")
    assert any(t.state == TrialState.COMPLETE for t in kept)  # what ran before it is kept
    assert not studies.main.get_trials(deepcopy=False)

    BROKEN.update(after=None)  # the user's fix; the same command
    fixed = run_cli(search_args(model_dir, tmp_path / "s.db"), capsys)
    assert fixed.code == 0, fixed.err
    assert trials(f"sqlite:///{tmp_path / 's.db'}", "s") == trials(f"sqlite:///{tmp_path / 'fresh.db'}", "s")


def test_a_raising_evaluator_is_one_line_and_debug_shows_its_traceback(
    model_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    args = [
        "evaluate", "--task", "custom", "--target", "0.5", "--samples", "2", "--steps", "2",
        "-o", f"model={model_dir}", "-o", f"predictor={HERE}:log_f",
        "-o", f"evaluator={HERE}:failing_success",
    ]  # fmt: skip
    BROKEN.update(after=None)
    plain = run_cli(args, capsys)
    line = f"error: evaluator {HERE}:failing_success raised KeyError: 'validity'"
    assert (plain.code, plain.err.strip()) == (2, line)
    debug = run_cli([*args, "--debug"], capsys)
    assert debug.code == 2 and debug.err.strip().splitlines()[-1] == line
    assert "Traceback" in debug.err and 'return {}["validity"]' in debug.err
    monkeypatch.setenv("TFG_SEARCH_DEBUG", "1")
    assert "Traceback" in run_cli(args, capsys).err


def test_debug_shows_the_traceback_of_a_trial(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    BROKEN.update(after=0, calls=0)
    result = run_cli(["--debug", *search_args(model_dir, tmp_path / "d.db")], capsys)
    BROKEN.update(after=None)
    assert result.code == 2
    assert "Traceback" in result.err and "in log_f" in result.err
    assert result.err.strip().splitlines()[-1].startswith(f"error: predictor {HERE}:log_f raised ValueError")

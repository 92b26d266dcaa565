"""Predictor and evaluator modules of the working folder reach Ray workers that do not share it
(the job's ``runtime_env``: ``py_modules``), with no PYTHONPATH; which modules go
(:func:`~tfg_search.run.executors.ray_pool.working_modules`)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tfg_search.guidance.config import TFGConfig
from tfg_search.run.executors.ray_pool import working_modules
from tfg_search.trial import TrialOutcome, TrialSpec


def test_only_modules_that_only_the_working_folder_provides_are_sent(tmp_path: Path) -> None:
    (tmp_path / "my_guides.py").write_text("def log_f(x, t): ...\n")
    (tmp_path / "judges").mkdir()
    (tmp_path / "judges" / "__init__.py").write_text("")
    (tmp_path / "json.py").write_text("")  # shadows nothing: the installed json wins, as on import
    options = {
        "predictor": "my_guides:log_f",
        "evaluator": "judges.score:success",  # a submodule: its package folder goes
        "other": "json:loads",
        "missing": "not_here:f",
        "model": "./my_model",
        "prompt": "a photo: a cat",
    }
    found = working_modules([options, None, {"predictor": "my_guides:log_f"}], tmp_path)
    assert found == [str(tmp_path / "judges"), str(tmp_path / "my_guides.py")]
    assert working_modules([{"predictor": "tasks.base:Task"}], tmp_path) == []  # installed


# -- on Ray ------------------------------------------------------------------------------------------
def where_trial(spec: TrialSpec) -> TrialOutcome:
    """Import the spec's predictor module as the custom task does; its VALUE is the validity."""
    from tasks.registry import load_object

    module = load_object(spec.task_options["predictor"], "predictor")
    return TrialOutcome(spec.number, {"validity": float(module)}, None, 0.0, "cpu", "?")


@pytest.mark.ray
@pytest.mark.slow
def test_a_worker_without_the_folder_imports_the_module_ray_sent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The module is removed from the working folder once the executor has started Ray, as on a
    node of a cluster where that folder does not exist: the worker imports Ray's copy."""
    ray = pytest.importorskip("ray")
    from tfg_search.run.executors.ray_pool import RayExecutor

    if ray.is_initialized():  # a Ray left by another test would keep its own runtime_env
        ray.shutdown()
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PYTHONPATH", raising=False)
    module = tmp_path / "guides_sent.py"
    module.write_text("VALUE = 0.75\n")
    options = {"predictor": "guides_sent:VALUE"}
    spec = TrialSpec(0, "gmm2d", "3", TFGConfig(), samples=1, seed=0, steps=1, task_options=options)
    with RayExecutor(num_workers=1, trial_fn=where_trial, task_options=options) as pool:
        assert pool.py_modules == [str(module)]
        module.unlink()
        (outcome,) = pool.map([spec])
    assert outcome.error is None, outcome.error
    assert outcome.metrics == {"validity": 0.75}

"""The Python search API with the user's own objects: a Task built with callables (no
``module:function``), registered under a name the user declares as its identity."""

from __future__ import annotations

import optuna
import pytest
import torch

from tasks import get_task
from tasks.custom import CustomTask
from tasks.registry import describe, register_task, task_names
from tests.helpers.tiny_pipelines import class_pipeline
from tfg_search.errors import TFGSearchError
from tfg_search.run.coordinator import run_search
from tfg_search.run.settings import SearchSettings
from tfg_search.store.layout import StudyInfo


def test_a_task_object_with_callables_is_searched_under_its_declared_name(tmp_path) -> None:
    folder = class_pipeline(tmp_path / "pipe")
    task = CustomTask(
        model=str(folder),
        predictor=lambda x, target: -(x.flatten(1).mean(1) - float(target)).abs(),
        evaluator=lambda x, target: ((x.flatten(1).mean(1) - float(target)).abs() < 0.25).float(),
        class_label="1",
    )
    assert register_task("my-pipe", task) == "my-pipe"
    assert "my-pipe" in task_names() and describe("my-pipe")["metrics"]  # `tfg-search tasks` lists it
    settings = SearchSettings(
        "my-pipe", "0", search="random", trials=2, wave=2, samples=2, final_samples=2, final_top=1, steps=2
    )
    db = f"sqlite:///{tmp_path / 's.db'}"
    report = run_search(settings, db)
    assert report.study_name.startswith("my-pipe-0-tfg-") and not report.resumed
    info = StudyInfo.of(optuna.load_study(study_name=report.study_name, storage=db))
    assert info is not None and info.model_identity == task.model_identity()
    assert run_search(settings, db).resumed  # the same declared name: the same study
    assert get_task("my-pipe", {"dtype": "bfloat16"}).dtype == "bfloat16" and task.dtype == "float32"
    with pytest.raises(TFGSearchError, match="takes no options"):
        get_task("my-pipe", {"class_label": "2"})
    with pytest.raises(TFGSearchError, match="installed task"):
        register_task("digits", task)
    with pytest.raises(TFGSearchError, match="raised ValueError"):  # the user's function, by its name
        bad = CustomTask(model=str(folder), predictor=_raises, evaluator=_raises, class_label="1")
        bad.log_f("0")(torch.zeros(1, 1, 8, 8))


def _raises(x: torch.Tensor, target: str) -> torch.Tensor:
    raise ValueError("no")

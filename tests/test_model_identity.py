"""One model identity, recorded in each study; custom model paths stored absolute, and a study made
under the old spelling (a relative path as given) still found by the same command."""

from __future__ import annotations

import dataclasses
import json

import optuna
import pytest

from tasks import get_task
from tests.helpers.cli import run_cli
from tests.helpers.tiny_pipelines import class_pipeline
from tfg_search.pipelines.identity import folder_identity
from tfg_search.run.settings import SearchSettings
from tfg_search.store.layout import StudyInfo
from tfg_search.store.studies import save_info

GUIDES = "tests.test_custom_pipelines"


def options(folder: str) -> dict[str, str]:
    return {"model": folder, "predictor": f"{GUIDES}:log_f", "evaluator": f"{GUIDES}:success"}


def test_bundled_tasks_and_custom_share_one_identity_of_their_folder() -> None:
    shapes = get_task("shapes")
    assert shapes.model_folder() is not None
    same = get_task("custom", options(str(shapes.model_folder())))
    assert shapes.model_identity() == same.model_identity() == folder_identity(shapes.model_folder())
    assert get_task("digits").model_identity() == get_task("digits-attrs").model_identity()
    assert get_task("digits").model_identity() != shapes.model_identity()


def test_custom_paths_are_stored_absolute(tmp_path, monkeypatch) -> None:
    folder = class_pipeline(tmp_path / "pipe")
    monkeypatch.chdir(tmp_path)
    names = set()
    for spelling in ("pipe", "./pipe", "pipe/../pipe", str(folder)):
        opts = {**options(spelling), "class_label": "1"}
        resolved = SearchSettings("custom", "0", task_options=opts).resolve(get_task("custom", opts))
        assert resolved.task_options["model"] == str(folder.resolve())
        names.add(resolved.study_name)
    assert len(names) == 1


def test_a_study_made_under_a_relative_path_is_found_again(tmp_path, monkeypatch, capsys) -> None:
    """Made as a version that stored the path as given (its settings rewritten so), the same
    command from the same folder continues it under its name; nothing is renamed or re-run."""
    class_pipeline(tmp_path / "pipe")
    monkeypatch.chdir(tmp_path)
    db = f"sqlite:///{tmp_path / 's.db'}"
    opts = {**options("./pipe"), "class_label": "1"}
    budget = dict(search="random", trials=2, wave=2, samples=2, final_samples=2, final_top=1, steps=2)
    settings = SearchSettings("custom", "0", task_options=opts, **budget)
    resolved = settings.resolve(get_task("custom", opts))
    old = dataclasses.replace(resolved, task_options=dict(opts))  # what the old version stored
    args = ["search", "--task", "custom", "--target", "0", "--storage", db, "--search", "random"]
    args += ["--trials", "2", "--wave", "2", "--samples", "2", "--final-samples", "2", "--final-top", "1"]
    args += ["--steps", "2", "--quiet", "--json", "--threads", "1"]
    for key, value in opts.items():
        args += ["-o", f"{key}={value}"]
    first = run_cli([*args, "--study", old.study_name], capsys)
    assert first.code == 0, first.err
    main = optuna.load_study(study_name=old.study_name, storage=db)
    info = StudyInfo.of(main)
    assert info is not None
    save_info(main, dataclasses.replace(info, settings=old.to_dict()))
    before = len(optuna.load_study(study_name=f"{old.study_name}:search", storage=db).trials)
    again = run_cli(args, capsys)  # no --study: the derived name is the absolute one's
    assert again.code == 0, again.err
    report = json.loads(again.out)
    assert report["study"] == old.study_name != resolved.study_name
    assert len(optuna.load_study(study_name=f"{old.study_name}:search", storage=db).trials) == before
    stored = StudyInfo.of(optuna.load_study(study_name=old.study_name, storage=db))
    assert stored is not None and stored.settings["task_options"]["model"] == "./pipe"  # kept as stored


@pytest.mark.parametrize("targets", [None, "0,1"])
def test_batch_bytes_of_a_custom_task_takes_the_run_target(tmp_path, targets) -> None:
    from tfg_search.guidance.config import TFGConfig

    folder = class_pipeline(tmp_path / "pipe")
    opts = {**options(str(folder)), "class_label": "1", **({"targets": targets} if targets else {})}
    task = get_task("custom", opts)
    assert task.batch_bytes(4, TFGConfig(), 10, target="0") > task.batch_bytes(1, TFGConfig(), 10, target="0")
    if targets is None:
        with pytest.raises(Exception, match="pass the run's target"):
            get_task("custom", opts).batch_bytes(4, TFGConfig(), 10)


def test_a_study_refuses_another_model(tmp_path, capsys) -> None:
    """Resuming a study whose model changed (a retrained or edited folder) is one line, exit 2."""
    folder = class_pipeline(tmp_path / "pipe")
    db = f"sqlite:///{tmp_path / 's.db'}"
    args = ["search", "--task", "custom", "--target", "0", "--storage", db, "--search", "random"]
    args += ["--trials", "2", "--wave", "2", "--samples", "2", "--final-samples", "2", "--final-top", "1"]
    args += ["--steps", "2", "--quiet", "--json", "--threads", "1"]
    for key, value in {**options(str(folder)), "class_label": "1"}.items():
        args += ["-o", f"{key}={value}"]
    assert run_cli(args, capsys).code == 0
    class_pipeline(folder, seed=1)  # other weights in the same folder
    again = run_cli(args, capsys)
    assert again.code == 2 and again.err.count("\n") == 1
    assert "searched another model" in again.err

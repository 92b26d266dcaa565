"""What a search's studies show to Optuna's own tools: ``optuna studies`` prints one short line per
study (the info is a study *system* attr, beside the short user attr ``tfg_search_summary``), and
the studies of tfg-search 0.1-0.3, whose info is a user attr, are still read and keep that attr as
they stored it when resumed or migrated (tfg_search/store/layout.py, issue 27 item 5)."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from searchers import optuna_internals
from tests.helpers.cli import run_cli
from tests.test_bad_inputs import SETTINGS as TINY
from tests.test_layouts import DATA, FIXTURES, RUNGS, RUNGS_SETTINGS
from tfg_search.run.coordinator import run_search
from tfg_search.run.settings import SearchSettings
from tfg_search.store.layout import LAYOUT, STUDY_ATTR, SUMMARY_ATTR, StudyInfo
from tfg_search.store.studies import save_info


def _study_user_attrs(db: Path) -> dict[tuple[str, str], object]:
    """Every study user attr of an SQLite study file, decoded, by (study, key), read with sqlite3
    (Optuna's storage is not opened on the fixtures)."""
    query = (
        "select s.study_name, a.key, a.value_json from study_user_attributes a "
        "join studies s on s.study_id = a.study_id"
    )
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return {(name, key): json.loads(value) for name, key, value in conn.execute(query)}


def test_optuna_studies_prints_one_short_line_per_study(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    name = run_search(TINY, url, "s1").study_name
    optuna_cli = Path(sys.executable).with_name("optuna")  # Optuna's own entry point
    shown = subprocess.run(
        [str(optuna_cli), "studies", "--storage", url], capture_output=True, text=True, timeout=120
    )
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert max(len(line) for line in lines) < 200, shown.stdout
    for study in (name, f"{name}:search"):
        (row,) = [line for line in lines if f"| {study} " in line]
        assert SUMMARY_ATTR in row and "gmm2d 3 tfg, beam search, 2 steps" in row
    for study in optuna.storages.RDBStorage(url).get_all_studies():
        info = StudyInfo.of(study)
        assert info is not None and study.system_attrs[STUDY_ATTR] == info.attr()  # the whole record
        assert study.user_attrs == {SUMMARY_ATTR: info.summary()}  # and only its line beside it
        assert len(info.summary()) < 100


def test_the_system_attr_is_read_first_and_a_damaged_one_is_not_replaced_by_the_old() -> None:
    study = optuna.create_study(study_name="N")
    old = StudyInfo("gmm2d", "3", "tfg", {"steps": 10, "search": "beam"}, layout=2)
    study.set_user_attr(STUDY_ATTR, old.attr())  # as tfg-search 0.1-0.3 stored it
    assert StudyInfo.of(study) == old
    new = StudyInfo("gmm2d", "3", "tfg", {"steps": 10, "search": "beam"}, layout=LAYOUT)
    save_info(study, new)
    (frozen,) = optuna_internals.storage(study).get_all_studies()
    assert StudyInfo.of(study) == new and StudyInfo.of(frozen) == new
    assert study.user_attrs[STUDY_ATTR] == old.attr()  # the user's stored attr, as it was
    assert StudyInfo.stored(study) == new.attr()
    optuna_internals.set_study_system_attr(study, STUDY_ATTR, {"task": "gmm2d"})  # edited by hand
    assert StudyInfo.of(study) is None  # damaged: said so (run/damage.py), never the stale old one


def test_a_0_2_study_resumed_keeps_its_own_attr_and_reads_the_new_one(tmp_path: Path) -> None:
    file, name = RUNGS
    shutil.copy(DATA / file, tmp_path / file)
    db = tmp_path / file
    before = _study_user_attrs(db)
    assert {key for _, key in before} == {STUDY_ATTR}
    report = run_search(SearchSettings(task="gmm2d", target="3", **RUNGS_SETTINGS), f"sqlite:///{db}")
    assert report.study_name == name and report.resumed
    after = _study_user_attrs(db)
    assert {k: v for k, v in after.items() if k in before} == before  # nothing stored rewritten
    assert set(after) - set(before) == {(name, SUMMARY_ATTR)}  # the answer study's line, new
    studies = {s.study_name: s for s in optuna.storages.RDBStorage(f"sqlite:///{db}").get_all_studies()}
    main, search = StudyInfo.of(studies[name]), StudyInfo.of(studies[f"{name}:search"])
    assert main is not None and main.layout == LAYOUT and STUDY_ATTR in studies[name].system_attrs
    assert search is not None and search.is_search_study and search.layout == 2  # its 0.2 attr, read


@pytest.mark.parametrize("file, name", [v[:2] for v in FIXTURES.values()], ids=["layout-1", "layout-2"])
def test_migrate_copies_the_info_to_the_system_attr_and_keeps_the_old(
    file: str, name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copy(DATA / file, tmp_path / file)
    db = tmp_path / file
    before = _study_user_attrs(db)
    assert run_cli(["migrate", "--storage", f"sqlite:///{db}"], capsys).code == 0
    after = _study_user_attrs(db)
    assert {k: v for k, v in after.items() if k in before} == before  # the old attrs, as they were
    studies = {s.study_name: s for s in optuna.storages.RDBStorage(f"sqlite:///{db}").get_all_studies()}
    for study, role in ((name, None), (f"{name}:search", "search")):
        info = StudyInfo.of(studies[study])
        assert info is not None and info.layout == LAYOUT and info.role == role
        assert studies[study].system_attrs[STUDY_ATTR] == info.attr()
        assert after[(study, SUMMARY_ATTR)] == info.summary()

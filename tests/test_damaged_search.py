"""A search a user took apart, and a launcher whose study was taken over (issue 27, item 6): one
line each, saying what is missing and the command that starts over (or that the lease was lost),
with the database left as it was."""

from __future__ import annotations

import os
import re
import socket
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import optuna
import pytest

from searchers import optuna_internals
from tests.helpers.cli import run_cli
from tests.test_bad_inputs import DB, SETTINGS, STUDY, TINY, dump, prepare, study_db  # noqa: F401
from tfg_search.errors import TFGSearchError
from tfg_search.run.coordinator import run_search
from tfg_search.run.executors import LocalExecutor
from tfg_search.store.layout import STUDY_ATTR, StudyInfo
from tfg_search.store.lease import LEASE_ATTR, read_lease
from tfg_search.trial import TrialOutcome, TrialSpec

S = ["search", "--task", "gmm2d", "--target", "3", *TINY, "--study", STUDY]


def _delete(url: str, name: str) -> None:
    optuna.delete_study(study_name=name, storage=url)


def _strip_settings(url: str, name: str) -> None:
    study = optuna.load_study(study_name=name, storage=url)
    kept = {k: v for k, v in StudyInfo.stored(study).items() if k != "settings"}
    optuna_internals.set_study_system_attr(study, STUDY_ATTR, kept)


CASES = [
    (
        lambda url: _delete(url, f"{STUDY}:search"),
        f"search 's1' lost its search study 's1:search' (deleted by hand?) and cannot be continued; its "
        f"answer study is still there: to start over delete it too: optuna delete-study --storage "
        f"'sqlite:///{DB}' --study-name 's1'; or choose another --study",
    ),
    (
        lambda url: _delete(url, STUDY),
        "search 's1' lost its answer study (deleted by hand?) while its search study 's1:search' keeps 4 "
        f"trial(s); to start over delete that too: optuna delete-study --storage 'sqlite:///{DB}' "
        "--study-name 's1:search'; or choose another --study",
    ),
    (
        lambda url: _strip_settings(url, STUDY),
        "study 's1' has tfg-search's 'tfg_search' attribute without its settings (edited by hand?), so it "
        f"cannot be continued; to start over delete it: optuna delete-study --storage 'sqlite:///{DB}' "
        f"--study-name 's1'; optuna delete-study --storage 'sqlite:///{DB}' --study-name 's1:search'; or "
        "choose another --study",
    ),
]


@pytest.mark.parametrize(
    ("damage", "line"), CASES, ids=["search-study-deleted", "answer-deleted", "no-settings"]
)
def test_a_search_taken_apart_is_one_line_with_the_way_out(
    damage: object,
    line: str,
    study_db: Path,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TFG_SEARCH_STORAGE", raising=False)
    prepare(tmp_path, study_db)
    damage(f"sqlite:///{DB}")  # type: ignore[operator]
    rows = dump(tmp_path / DB)
    res = run_cli(S, capsys)
    assert res.code == 2, res
    assert res.err.strip() == f"error: {line}"
    assert dump(tmp_path / DB) == rows
    # The command it names starts over: the same search then runs from scratch.
    for name in re.findall(r"optuna delete-study --storage '[^']*' --study-name '([^']*)'", line):
        _delete(f"sqlite:///{DB}", name)
    res = run_cli([*S, "--json"], capsys)
    assert res.code == 0, res.err


class TakenOver(LocalExecutor):
    """Evaluates the first batch, then (as if this launcher had been paused past its lease)
    another launcher takes the study over and finishes the trials in flight before it wakes."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url
        self.done = False

    def map(self, specs: Sequence[TrialSpec]) -> Iterator[TrialOutcome]:
        outcomes = list(super().map(specs))
        if not self.done:
            self.done = True
            storage = optuna.storages.RDBStorage(self.url)
            other = {"holder": "other", "host": socket.gethostname(), "pid": os.getpid(), "since": "now"}
            for name in (STUDY, f"{STUDY}:search"):
                study = optuna.load_study(study_name=name, storage=storage)
                if name == STUDY:
                    storage.set_study_system_attr(
                        study._study_id, LEASE_ATTR, {**other, "heartbeat": time.time()}
                    )
                for trial in study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.RUNNING]):
                    storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.COMPLETE, [0.5])
        yield from outcomes


def test_a_lost_lease_is_one_line_and_the_data_is_intact(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / DB}"
    with pytest.raises(TFGSearchError) as caught:
        run_search(SETTINGS, url, STUDY, TakenOver(url))
    line = str(caught.value)
    assert "\n" not in line
    assert line.startswith(
        f"this launcher lost its lease on study {STUDY!r} while it was paused or cut off (longer than the "
        f"lease's 30 s): process {os.getpid()} on {socket.gethostname()} since now took the search over"
    )
    search = optuna.load_study(study_name=f"{STUDY}:search", storage=url)
    assert [t.values for t in search.trials] == [[0.5]] * len(search.trials)  # the other's writes stand
    lease = read_lease(optuna.load_study(study_name=STUDY, storage=url))
    assert lease is not None and lease.holder == "other"  # not cleared by the launcher that lost it

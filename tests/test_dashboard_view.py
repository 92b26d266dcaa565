"""What Optuna's tools show of a search (issue 27, item 5): each trial's metrics as numeric user
attributes that optuna-dashboard sorts, beside the record, which stays the source (a study of the
layout before reads the same); a note on each of the two studies saying which is which; the
final trials' sample grids as Optuna artifacts beside tfg-output/."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tests.helpers.cli import run_cli
from tests.test_bad_inputs import SETTINGS, TINY
from tfg_search.run.coordinator import run_search
from tfg_search.run.dashboard import ARTIFACTS
from tfg_search.store.layout import METRIC_PREFIX, TRIAL_ATTR
from tfg_search.store.record import read_all
from tfg_search.store.studies import load_search

optuna_dashboard = pytest.importorskip("optuna_dashboard")


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('dashboard') / 'studies.db'}"
    run_search(SETTINGS, url, "s")
    return url


def test_each_metric_is_a_numeric_attr_the_dashboard_sorts(searched: str) -> None:
    from optuna_dashboard._inmemory_cache import _CachedExtraStudyProperty  # how it finds sortable attrs

    studies = load_search(searched, "s")
    for study, role in studies.parts():
        trials = study.get_trials(deepcopy=False, states=[TrialState.COMPLETE])
        assert trials
        for trial in trials:
            metrics = trial.user_attrs[TRIAL_ATTR]["metrics"]
            numbers = {k: v for k, v in trial.user_attrs.items() if k.startswith(METRIC_PREFIX)}
            assert numbers == {METRIC_PREFIX + k: float(v) for k, v in metrics.items()}
        view = _CachedExtraStudyProperty()
        view.update(list(trials))
        sortable = dict(view.union_user_attrs)
        assert {k for k, ok in sortable.items() if ok} == {
            METRIC_PREFIX + m for m in ("validity", "sw", "fidelity")
        }
        assert sortable[TRIAL_ATTR] is False  # the record: JSON text
        # The record is what tfg-search reads: the same with the metric attrs as without them.
        stripped = [
            optuna.trial.create_trial(
                state=t.state, value=t.value, params=t.params, distributions=t.distributions,
                user_attrs={TRIAL_ATTR: t.user_attrs[TRIAL_ATTR]},
            )
            for t in trials
        ]  # fmt: skip
        plain = optuna.create_study()
        plain.add_trials(stripped)
        kept = [vars(r) | {"number": 0, "study": ""} for r in read_all(study, role=role) if r.ok]
        assert kept == [vars(r) | {"number": 0, "study": ""} for r in read_all(plain, role=role)]


def test_each_study_has_a_note_saying_what_it_holds(searched: str) -> None:
    studies = load_search(searched, "s")
    answer = optuna_dashboard.get_note(studies.main)
    search = optuna_dashboard.get_note(studies.search)
    assert answer.startswith("## tfg-search: the answer of search `s`\ngmm2d target 3, method tfg.")
    assert "**final re-runs**" in answer and "study `s:search`" in answer
    assert search.startswith("## tfg-search: the search of `s`\ngmm2d target 3, method tfg, search `beam`.")
    assert "is study `s`" in search and f"`{METRIC_PREFIX}<name>`" in search


def test_every_final_trials_grid_is_an_artifact_the_dashboard_finds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from optuna.artifacts import FileSystemArtifactStore, download_artifact, get_all_artifact_meta

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TFG_SEARCH_STORAGE", raising=False)
    tiny = [*TINY]
    tiny[tiny.index("--final-top") + 1] = "2"  # two final re-runs: the answer and the runner-up
    args = ["search", "--task", "gmm2d", "--target", "3", *tiny, "--study", "s", "--json"]
    for _ in range(2):  # a finished search run again draws and attaches nothing more
        res = run_cli(args, capsys)
        assert res.code == 0, res.err
    best = json.loads(res.out)["best"]
    studies = load_search("sqlite:///tfg-studies.db", "s")
    finals = [t.number for t in studies.main.get_trials(states=[TrialState.COMPLETE])]
    assert len(finals) == 2 and best["role"] == "final" and best["trial"] in finals
    (other,) = set(finals) - {best["trial"]}
    metas = {m.filename: m for m in get_all_artifact_meta(studies.main)}
    expected = {
        f"trial-{best['trial']}-best-samples.png": tmp_path / "tfg-output" / "s" / "best-samples.png",
        f"trial-{other}-samples.png": tmp_path / "tfg-output" / "s" / f"trial-{other}-samples.png",
    }
    assert set(metas) == set(expected) and {m.mimetype for m in metas.values()} == {"image/png"}
    assert sorted(p.name for p in (tmp_path / ARTIFACTS).iterdir()) == sorted(
        m.artifact_id for m in metas.values()
    )
    assert not get_all_artifact_meta(studies.search)
    for name, grid in expected.items():
        download_artifact(
            artifact_store=FileSystemArtifactStore(str(ARTIFACTS)),
            artifact_id=metas[name].artifact_id,
            file_path=f"got-{name}",
        )
        assert Path(f"got-{name}").read_bytes() == grid.read_bytes()
    # the runner-up's grid is its own samples, not a copy of the answer's
    assert (
        expected[f"trial-{other}-samples.png"].read_bytes()
        != expected[f"trial-{best['trial']}-best-samples.png"].read_bytes()
    )

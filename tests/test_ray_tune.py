"""The Ray Tune entry point evaluates exactly the search trials the coordinator evaluates, into the same
study."""

from __future__ import annotations

import pytest
from optuna.trial import TrialState

from tfg_search.run.coordinator import run_search
from tfg_search.run.settings import SearchSettings
from tfg_search.store.record import TrialRecord
from tfg_search.store.studies import load_search

pytest.importorskip("ray.tune")

from tfg_search.run.tune import run_tune_search

pytestmark = [pytest.mark.ray, pytest.mark.slow]

SETTINGS = SearchSettings(
    task="gmm2d", target="3", samples=16, final_samples=16, final_top=1, rounds=2, steps=10, search="beam"
)


def search_trials(records: list[TrialRecord]) -> list[tuple[int, tuple[tuple[str, float], ...]]]:
    """(round, params) of every search trial, in a canonical order."""
    return sorted((r.round, tuple(sorted(r.params.items()))) for r in records if r.role == "search")


def test_tune_runs_the_same_search_into_the_study(tmp_storage_url: str) -> None:
    run_tune_search(SETTINGS, tmp_storage_url, "tuned", num_workers=2)
    run_search(SETTINGS, tmp_storage_url, "local")
    local = load_search(tmp_storage_url, "local").records()
    tuned = load_search(tmp_storage_url, "tuned").records()
    assert search_trials(tuned) == search_trials(local)
    assert len(search_trials(tuned)) >= 5 and {r for r, _ in search_trials(tuned)} == {0, 1}
    for r in tuned:
        assert r.state == TrialState.COMPLETE
        assert r.config and r.samples and r.steps and r.metrics and r.wall_time_s is not None and r.node
        assert r.device == "cpu"
    by_params = {tuple(sorted(r.params.items())): r for r in local if r.role == "search"}
    for r in tuned:
        if r.role == "search":  # same config, same seed: the same score
            assert r.value == pytest.approx(by_params[tuple(sorted(r.params.items()))].value)
    finals = [r for r in tuned if r.role == "final"]
    local_finals = [r for r in local if r.role == "final"]
    assert [r.params for r in finals] == [r.params for r in local_finals]
    assert finals[0].samples == SETTINGS.final_samples

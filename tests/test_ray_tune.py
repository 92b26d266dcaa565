"""The Ray Tune entry point evaluates exactly the beam the coordinator evaluates, into the same study."""

from __future__ import annotations

import optuna
import pytest

from tfg_search.search import run_search
from tfg_search.settings import SearchSettings
from tfg_search.storage import ROLE_ATTR

pytest.importorskip("ray.tune")

from tfg_search.tune import run_tune_search

pytestmark = [pytest.mark.ray, pytest.mark.slow]

SETTINGS = SearchSettings(
    task="gmm2d", target="3", samples=16, final_samples=16, final_top=1, rounds=2, steps=10
)


def beam(study: optuna.Study) -> list[tuple[int, tuple[tuple[str, float], ...]]]:
    """(round, params) of every beam trial, in a canonical order."""
    return sorted(
        (t.user_attrs["round"], tuple(sorted(t.params.items())))
        for t in study.get_trials()
        if t.user_attrs.get(ROLE_ATTR) == "beam"
    )


def test_tune_runs_the_same_beam_into_the_study(tmp_storage_url: str) -> None:
    tuned = run_tune_search(SETTINGS, tmp_storage_url, "tuned", num_workers=2)
    run_search(SETTINGS, tmp_storage_url, "local")
    local = optuna.load_study(study_name="local", storage=tmp_storage_url)

    tuned = optuna.load_study(study_name="tuned", storage=tmp_storage_url)
    assert beam(tuned) == beam(local)
    assert len(beam(tuned)) >= 5 and {r for r, _ in beam(tuned)} == {0, 1}
    for t in tuned.get_trials():
        assert t.state == optuna.trial.TrialState.COMPLETE
        for key in ("role", "config", "samples", "seed", "steps", "metrics", "wall_time_s", "device", "node"):
            assert key in t.user_attrs, key
        assert t.user_attrs["device"] == "cpu"
    local_beam = [t for t in local.get_trials() if t.user_attrs[ROLE_ATTR] == "beam"]
    by_params = {tuple(sorted(t.params.items())): t for t in local_beam}
    for t in tuned.get_trials():
        if t.user_attrs[ROLE_ATTR] == "beam":  # same config, same seed: the same score
            assert t.value == pytest.approx(by_params[tuple(sorted(t.params.items()))].value)
    finals = [t for t in tuned.get_trials() if t.user_attrs[ROLE_ATTR] == "final"]
    local_finals = [t for t in local.get_trials() if t.user_attrs[ROLE_ATTR] == "final"]
    assert [t.params for t in finals] == [t.params for t in local_finals]
    assert finals[0].user_attrs["samples"] == SETTINGS.final_samples

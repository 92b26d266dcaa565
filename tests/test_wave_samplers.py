"""`--search gp|tpe|random`: Optuna's samplers on the same lattices, in waves, with the same study
layout, final re-runs, summary and queries as the rung search."""

from __future__ import annotations

import json

import optuna
import pytest

from tests.helpers.cli import run_cli
from tfg_search.run.coordinator import run_search
from tfg_search.run.settings import SearchSettings
from tfg_search.run.waves import EXPONENT, lattice_params
from tfg_search.store import query
from tfg_search.store.studies import load_search

BASE = dict(task="gmm2d", target="3", samples=8, final_samples=16, steps=6, final_top=2)


@pytest.mark.parametrize("kind", ["gp", "tpe", "random"])
def test_an_optuna_sampler_runs_its_trials_in_waves_on_the_lattice(kind: str, tmp_storage_url: str) -> None:
    settings = SearchSettings(**BASE, search=kind, trials=6, wave=3)
    report = run_search(settings, tmp_storage_url)
    studies = load_search(tmp_storage_url, report.study_name)
    assert studies.search.study_name == report.study_name + ":search"  # the same two studies
    resolved = settings.resolve(__import__("tasks").get_task("gmm2d"))
    lattices = resolved.lattices()
    searched = [r for r in studies.records() if r.role == "search"]
    assert len(searched) == 6 and [r.round for r in searched] == [0, 0, 0, 1, 1, 1]
    for r in searched:
        assert set(r.params) == {name + EXPONENT for name in lattices}
        values = lattice_params(r.params, lattices)
        assert all(values[n] in lattices[n].values() for n in lattices)
        assert {k: r.config[k] for k in lattices} == values  # the configuration is the lattice point
    finals = [r for r in studies.records() if r.role == "final"]
    assert len(finals) == 2 and report.best_role == "final"
    assert study_best(tmp_storage_url, report.study_name) == report.best_trial
    # resuming finds the study done; more --trials continue it
    again = run_search(settings, tmp_storage_url)
    assert again.resumed and again.counts.search == 6
    more = run_search(SearchSettings(**BASE, search=kind, trials=9, wave=3), tmp_storage_url)
    assert more.study_name == report.study_name and more.counts.search == 9


def study_best(url: str, name: str) -> int:
    main = optuna.load_study(study_name=name, storage=url)
    assert main.best_trial.number == query.best_payload(url, name)["trial"]
    return main.best_trial.number


def test_the_cli_runs_gp_and_reports_it_like_the_rungs(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path}/s.db"
    args = ["search", "--task", "gmm2d", "--target", "3", "--samples", "8", "--final-samples", "16"]
    args += ["--steps", "6", "--search", "gp", "--trials", "4", "--wave", "2", "--final-top", "1"]
    out = run_cli([*args, "--storage", url, "--json", "--out-dir", str(tmp_path / "o")], capsys)
    assert out.code == 0, out.err
    payload = json.loads(out.out)
    assert payload["trials"]["search"] == 4 and payload["trials"]["final"] == 1
    assert payload["compute"]["trials"] == {"search": 4, "final": 1}
    best = query.best_payload(url, payload["study"])
    assert best["config"] == payload["best"]["config"] and best["role"] == "final"


@pytest.mark.parametrize("wave", [None, 4])
def test_default_trials_spend_the_default_rung_searchs_search_samples(wave: int | None) -> None:
    """`--search gp` on its defaults is the equal-compute comparison with the default search: its
    trials of one sample unit add up to the rung search's units at the same --wave."""
    from searchers.rungs import RungSchedule
    from tasks import get_task

    task = get_task("gmm2d")
    optuna_run = SearchSettings(**BASE, search="gp", wave=wave).resolve(task)
    rungs = SearchSettings(**BASE, wave=wave).resolve(task)
    schedule = RungSchedule(wave=rungs.wave)
    assert optuna_run.trials * optuna_run.samples == schedule.units() * rungs.samples
    assert optuna_run.trials == (40 if wave is None else 32)


def test_planned_rounds_count_the_waves_each_search_runs() -> None:
    """The progress display's round count: the beam's limit, the rung search's rounds, or an
    Optuna sampler's trials in waves."""
    from searchers.rungs import RungSchedule

    assert SearchSettings(**BASE).planned_rounds() == RungSchedule(wave=8).rounds == 6
    assert SearchSettings(**BASE, wave=4).planned_rounds() == RungSchedule(wave=4).rounds
    assert SearchSettings(**BASE, search="beam").planned_rounds() == 6
    assert SearchSettings(**BASE, search="beam", rounds=3).planned_rounds() == 3
    assert SearchSettings(**BASE, search="gp", trials=20).planned_rounds() == 3  # 8 + 8 + 4
    assert SearchSettings(**BASE, search="tpe").planned_rounds() == 5  # 40 default trials

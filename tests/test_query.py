"""The read path (tfg_search.store.query): ``studies``, ``best``, ``export`` and ``load_best`` answer
from each search's summary row (SQLAlchemy Core), on SQLite and PostgreSQL: the searches' own
answers (finished or not, every search), foreign studies, searches deleted with Optuna's tools,
errors in one line, a study of an earlier layout or without its row (run ``tfg-search migrate``),
no write, and no torch imported."""

from __future__ import annotations

import json
import math
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import optuna
import pytest

from tests.helpers.cli import run_cli
from tfg_search.errors import TFGSearchError
from tfg_search.run.coordinator import Coordinator, open_search_study, run_search
from tfg_search.run.executors import Executor
from tfg_search.run.settings import SearchSettings
from tfg_search.store import query, summary
from tfg_search.store.database import connection
from tfg_search.store.studies import load_search, open_storage
from tfg_search.trial import TrialOutcome, TrialSpec

DATA = Path(__file__).parent / "data"

optuna.logging.set_verbosity(optuna.logging.WARNING)


class Synthetic(Executor):
    """Metrics from the configuration at once; a stronger gamma fails, as non-finite samples would."""

    name = "synthetic"

    def map(self, specs: Sequence[TrialSpec]) -> Iterator[TrialOutcome]:
        for spec in specs:
            c = spec.config
            if c.gamma > 0.005:
                yield TrialOutcome(spec.number, None, "non-finite", 0.0, "cpu", "q", failure="trial")
                continue
            value = -abs(math.log(c.rho / 0.03)) - abs(math.log(c.mu / 0.05)) + 0.01 * spec.samples
            yield TrialOutcome(
                spec.number, {"validity": value, "fidelity": value, "sw": -value}, None, 0.0, "cpu", "q"
            )


def _settings(target: str, **kw: Any) -> SearchSettings:
    kw.setdefault("search", "beam")
    return SearchSettings(task="gmm2d", target=target, samples=16, final_samples=32, steps=10, **kw)


def _fill(url: str) -> dict[str, Any]:
    """One database with each kind of study the query commands meet; the answers they should give."""
    answers = {}
    for name, settings in (("finished", _settings("3", rounds=3)), ("rungs", _settings("1", search="rungs"))):
        report = run_search(settings, url, name, Synthetic())
        answers[name] = (report.best_role, report.best_trial, report.best_score, report.best_config.to_dict())
    loop, _ = open_search_study(_settings("5", rounds=2), url, "search-only")
    coordinator = Coordinator(loop, Synthetic())
    while loop.phase == "search":  # the search, without its final re-runs yet
        coordinator._run_batch(loop.wave())
    leader = loop.leader()
    assert leader is not None
    answers["search-only"] = ("search", leader.number, leader.value, leader.config)
    open_search_study(_settings("7"), url, "empty")  # created, nothing run
    storage = open_storage(url, create=False)
    up = optuna.create_study(study_name="foreign-max", storage=storage, direction="maximize")
    x = optuna.distributions.FloatDistribution(0, 9)
    for value in (1.0, math.inf, 3.0):
        up.add_trial(optuna.trial.create_trial(value=value, params={"x": 1.0}, distributions={"x": x}))
    optuna.create_study(study_name="foreign-empty", storage=storage)
    return answers


def _dump(db: Path) -> list[tuple]:
    """Every row of every table of an SQLite file (to check that nothing was written)."""
    with sqlite3.connect(db) as conn:
        tables = [t for (t,) in conn.execute("select name from sqlite_master where type = 'table'")]
        return [(t, row) for t in sorted(tables) for row in conn.execute(f"select * from {t}")]


def check_answers(url: str, answers: dict[str, Any]) -> None:
    rows = {r["study"]: r for r in query.list_searches(url)}
    assert set(rows) == {*answers, "empty", "foreign-max", "foreign-empty"}
    for name, (role, trial, score, config) in answers.items():
        payload = query.best_payload(url, name)
        assert (payload["role"], payload["trial"], payload["score"], payload["config"]) == (
            role,
            trial,
            score,
            config,
        )
        assert query.best_payload(url, name + ":search") == payload  # named by its search study
        records = load_search(url, name).records()
        assert rows[name]["trials"] == len(records) and rows[name]["best"] == score
        assert rows[name]["finished"] == (role == "final") and rows[name]["layout"] == 3
        assert payload["compute"]["trials"]["search"] == sum(
            r.role == "search" and r.state.is_finished() for r in records
        )
    assert rows["empty"] == {"study": "empty", "task": "gmm2d", "target": "7", "method": "tfg", "trials": 0,
                             "best": None, "finished": False, "layout": 3}  # fmt: skip
    assert rows["foreign-max"]["trials"] == 3 and rows["foreign-max"]["best"] is None
    for name, message in (
        ("nope", "no study named 'nope' in this storage; studies: "),
        ("empty", "study 'empty' has no completed trial yet"),
        ("foreign-max", "study 'foreign-max' was not made by tfg-search"),
    ):
        with pytest.raises(TFGSearchError, match=message):
            query.best_payload(url, name)


@pytest.fixture(scope="module")
def sqlite_db(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Any]]:
    url = f"sqlite:///{tmp_path_factory.mktemp('query')}/studies.db"
    return url, _fill(url)


def test_the_queries_answer_each_search_as_it_ranks_itself_on_sqlite(sqlite_db: tuple[str, dict]) -> None:
    url, answers = sqlite_db
    check_answers(url, answers)
    assert query.best_payload(url, "rungs")["role"] == "final"
    config, metrics = query.load_best(url, "finished")
    assert config.to_dict() == answers["finished"][3] and "validity" in metrics


def test_the_queries_answer_on_postgresql(fresh_postgres_url: str) -> None:
    check_answers(fresh_postgres_url, _fill(fresh_postgres_url))
    _probe("studies", "--storage", fresh_postgres_url)
    _probe("best", "--study", "finished", "--storage", fresh_postgres_url)


def test_no_read_writes(
    sqlite_db: tuple[str, dict], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, _ = sqlite_db
    db = Path(url.removeprefix("sqlite:///"))
    before = _dump(db)
    for args in (
        ["studies"],
        ["best", "--study", "rungs"],
        ["export", "--study", "rungs", "--out", str(tmp_path / "b.json")],
    ):
        assert run_cli([*args, "--storage", url], capsys).code == 0
    assert _dump(db) == before


def test_a_study_of_an_earlier_layout_says_to_migrate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for file, name, layout in (
        ("legacy-v0.1.db", "gmm2d-3-tfg-43e62bc5", 1),
        ("layout-2-v0.2.db", "gmm2d-3-tfg-c8fe984c", 2),
    ):
        shutil.copy(DATA / file, tmp_path / file)
        url = f"sqlite:///{tmp_path / file}"
        before = _dump(tmp_path / file)
        res = run_cli(["best", "--study", name, "--storage", url], capsys)
        assert res.code == 2 and len(res.err.strip().splitlines()) == 1
        assert (
            f"was written by tfg-search 0.{layout} (layout {layout}); run `tfg-search migrate --storage"
            in res.err
        )
        (row,) = query.list_searches(url)
        assert row["study"] == name and row["finished"] is None and row["layout"] == layout
        assert _dump(tmp_path / file) == before  # the query wrote nothing


PROBE = (
    "import sys\nfrom tfg_search.cli import main\n"
    "try:\n    main(sys.argv[1:])\nexcept SystemExit as exit:\n    assert not exit.code, exit.code\n"
    "loaded = [m for m in ('torch', 'tfg_search.run', 'searchers.rungs') if m in sys.modules]\n"
    "assert not loaded, loaded\n"
)
"""Runs ``tfg-search ARGV`` and fails if it failed or imported torch or the search's code."""


def _probe(*args: str) -> None:
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, (args, proc.stderr[-2000:])


def test_the_commands_answer_without_torch(sqlite_db: tuple[str, dict], tmp_path: Path, capsys) -> None:
    url, _ = sqlite_db
    shown = run_cli(["studies", "--json", "--storage", url], capsys)
    assert shown.code == 0 and json.loads(shown.out) == query.list_searches(url)
    shown = run_cli(["best", "--study", "finished", "--json", "--storage", url], capsys)
    assert shown.code == 0 and json.loads(shown.out) == query.best_payload(url, "finished")
    out = tmp_path / "best.json"
    _probe("--help")
    _probe("tasks")
    _probe("studies", "--storage", url)
    _probe("best", "--study", "finished", "--storage", url)
    _probe("export", "--study", "finished", "--out", str(out), "--storage", url)
    assert json.loads(out.read_text()) == query.best_payload(url, "finished")


def test_the_study_names_are_optunas(sqlite_db: tuple[str, dict]) -> None:
    url, _ = sqlite_db
    with connection(url, create=False) as conn:
        names = summary.study_names(conn)
    assert names == optuna.get_all_study_names(open_storage(url, create=False))


def test_a_search_deleted_with_optunas_tools_is_gone(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    for name in ("kept", "deleted"):
        run_search(_settings("3", rounds=1), url, name, Synthetic())
    storage = open_storage(url, create=False)
    for study in ("deleted", "deleted:search"):
        optuna.delete_study(study_name=study, storage=storage)
    assert [r["study"] for r in query.list_searches(url)] == ["kept"]
    with pytest.raises(TFGSearchError, match=r"no study named 'deleted' in this storage; studies: kept$"):
        query.best_payload(url, "deleted")
    run_search(_settings("5", rounds=1), url, "other", Synthetic())  # a search drops the rows of the gone
    with connection(url, create=False) as conn:
        assert set(summary.read_rows(conn)) == {"kept", "other"}
    run_search(_settings("5", rounds=1), url, "deleted", Synthetic())  # the name made again
    assert query.best_payload(url, "deleted")["target"] == "5"


def test_a_search_without_its_summary_row_says_to_migrate_and_migrate_writes_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "studies.db"
    url = f"sqlite:///{db}"
    run_search(_settings("3", rounds=1), url, "s", Synthetic())
    answer = query.best_payload(url, "s")
    with sqlite3.connect(db) as conn:  # as a development version between 0.2 and 0.3 left it
        conn.execute("delete from tfg_search_summaries")
    res = run_cli(["best", "--study", "s", "--storage", url], capsys)
    assert (
        res.code == 2
        and "has no summary row (layout 3, written by a development version); run `tfg-search migrate"
        in res.err
    )
    assert run_cli(["migrate", "--storage", url], capsys).code == 0
    assert query.best_payload(url, "s") == answer

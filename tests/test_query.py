"""The read path (tfg_search.store.query): its direct reads give the Optuna path's answers.

``tfg-search studies``, ``best`` and ``export`` (and ``load_best`` in Python) read the database with
its own driver, without Optuna, falling back to Optuna where the direct reads cannot answer; these
tests build databases with every kind of study the commands meet (searches finished
and not, with failed and non-finite trials, a search named by its beam study, a search with no
result yet, foreign Optuna studies maximising and minimising with infinite values, the tfg-search
0.1 fixture) on SQLite and PostgreSQL, and compare each answer, errors included, with the one
Optuna's storage gives. Then the commands themselves: same output either way, and neither torch nor
Optuna nor SQLAlchemy imported.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import optuna
import pytest

from tests.helpers.cli import run_cli
from tests.helpers.search import SMALL
from tfg_search.run.coordinator import Coordinator, open_search_study, run_search
from tfg_search.run.executors import Executor
from tfg_search.run.settings import SearchSettings
from tfg_search.store import query
from tfg_search.store.studies import open_storage
from tfg_search.trial import TrialOutcome, TrialSpec

LEGACY_DB = Path(__file__).parent / "data" / "legacy-v0.1.db"
LEGACY_STUDY = "gmm2d-3-tfg-43e62bc5"

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


def _fill(url: str) -> None:
    """One database with each kind of study the query commands meet."""
    run_search(_settings("3", rounds=3, final_top=2), url, "finished", Synthetic())
    loop, _ = open_search_study(_settings("5", rounds=2), url, "beam-only")
    while loop.phase == "search":  # the search, without its final re-runs yet
        Coordinator(loop, Synthetic())._run_batch(loop.wave())
    open_search_study(_settings("7"), url, "empty")  # created, nothing run
    run_search(_settings("1", search="rungs", final_top=2), url, "rungs", Synthetic())
    storage = open_storage(url, create=False)
    up = optuna.create_study(study_name="foreign-max", storage=storage, direction="maximize")
    x = optuna.distributions.FloatDistribution(0, 9)
    for value in (1.0, math.inf, 3.0):
        up.add_trial(optuna.trial.create_trial(value=value, params={"x": 1.0}, distributions={"x": x}))
    down = optuna.create_study(study_name="foreign-min", storage=storage, direction="minimize")
    for value in (2.0, -math.inf):
        down.add_trial(optuna.trial.create_trial(value=value))
    optuna.create_study(study_name="foreign-empty", storage=storage)
    info = {"task": "t", "target": "1", "method": "m", "settings": {"steps": 1}, "layout": 2}
    for direction, values in (("maximize", (1.0, math.inf)), ("minimize", (2.0, -math.inf, 1.0))):
        hand = optuna.create_study(study_name=f"by-hand-{direction}", storage=storage, direction=direction)
        hand.set_user_attr("tfg_search", info)  # a search's answer study without its beam study
        for value in values:
            hand.add_trial(optuna.trial.create_trial(value=value))


def _outcome(fn: Any, *args: Any) -> Any:
    """A function's result, or the type and message of the error it raised."""
    try:
        return fn(*args)
    except Exception as err:
        return (type(err).__name__, str(err))


NAMES = [
    "finished",
    "finished:search",
    "beam-only",
    "beam-only:search",
    "empty",
    "rungs",
    "rungs:search",
    "foreign-max",
    "nope",
]


def _optuna_best(url: str, name: str) -> dict[str, Any]:
    return query.best_payload(url, name, via="optuna")


def _same_answers(url: str, names: Sequence[str]) -> None:
    assert query.list_searches(url, via="direct") == query.list_searches(url, via="optuna")
    for name in names:
        fast = _outcome(lambda u, n: query.best_payload(u, n, via="direct"), url, name)
        slow = _outcome(_optuna_best, url, name)
        assert fast == slow, name
        assert json.dumps(fast) == json.dumps(slow), name  # same order too


@pytest.fixture(scope="module")
def sqlite_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('query')}/studies.db"
    _fill(url)
    return url


def test_direct_reads_answer_as_optuna_on_sqlite(sqlite_db: str) -> None:
    _same_answers(sqlite_db, NAMES)
    rows = {r["study"]: r for r in query.list_searches(sqlite_db)}
    assert rows["finished"]["finished"] and not rows["beam-only"]["finished"]
    assert rows["foreign-max"]["best"] is None and rows["empty"]["best"] is None
    assert rows["by-hand-maximize"]["best"] == math.inf and rows["by-hand-minimize"]["best"] == -math.inf
    assert query.best_payload(sqlite_db, "finished:search")["role"] == "final"
    assert query.best_payload(sqlite_db, "beam-only")["role"] == "search"


def test_direct_reads_answer_as_optuna_on_postgresql(fresh_postgres_url: str) -> None:
    _fill(fresh_postgres_url)
    _same_answers(fresh_postgres_url, NAMES)
    _probe("studies", "--storage", fresh_postgres_url)  # psycopg only: no SQLAlchemy, no Optuna
    _probe("best", "--study", "finished", "--storage", fresh_postgres_url)


def test_direct_reads_answer_as_optuna_on_a_tfg_search_0_1_study(tmp_path: Path) -> None:
    db = tmp_path / "legacy.db"
    shutil.copy(LEGACY_DB, db)
    url = f"sqlite:///{db}"
    _same_answers(url, [LEGACY_STUDY, "nope"])
    assert query.best_payload(url, LEGACY_STUDY)["role"] == "final"
    # Resumed by today's code (one more round), the study gets trials of today's layout too.
    settings = SearchSettings(task="gmm2d", target="3", **{**SMALL, "rounds": 3, "final_top": 2})
    assert run_search(settings, url, None, Synthetic()).resumed
    _same_answers(url, [LEGACY_STUDY])


def test_an_unknown_schema_is_left_to_optuna(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    shutil.copy(LEGACY_DB, db)
    url = f"sqlite:///{db}"
    with open_storage(url, create=False).engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = 'v9.9.9'")
    with pytest.raises(query.Unanswered):
        query.list_searches(url, via="direct")
    with pytest.raises(query.Unanswered):
        query.best_payload(url, LEGACY_STUDY, via="direct")
    assert query.list_searches(url) == query.list_searches(url, via="optuna")  # the fallback answers
    assert query.best_payload(url, LEGACY_STUDY) == _optuna_best(url, LEGACY_STUDY)


PROBE = (
    "import sys\nfrom tfg_search.cli import main\n"
    "try:\n    main(sys.argv[1:])\nexcept SystemExit as exit:\n    assert not exit.code, exit.code\n"
    "loaded = [m for m in ('torch', 'optuna', 'alembic', 'sqlalchemy') if m in sys.modules]\n"
    "assert not loaded, loaded\n"
)
"""Runs ``tfg-search ARGV`` and fails if it failed or imported torch, Optuna or SQLAlchemy."""


def _probe(*args: str) -> None:
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, (args, proc.stderr[-2000:])


def test_the_commands_answer_the_same_without_optuna_or_torch(sqlite_db: str, tmp_path: Path, capsys) -> None:
    fast = run_cli(["studies", "--json", "--storage", sqlite_db], capsys)
    assert fast.code == 0 and json.loads(fast.out) == query.list_searches(sqlite_db, via="optuna")
    fast = run_cli(["best", "--study", "finished", "--json", "--storage", sqlite_db], capsys)
    assert fast.code == 0 and json.loads(fast.out) == _optuna_best(sqlite_db, "finished")
    out = tmp_path / "best.json"
    _probe("--help")
    _probe("tasks")
    _probe("studies", "--storage", sqlite_db)
    _probe("best", "--study", "finished", "--storage", sqlite_db)
    _probe("export", "--study", "finished", "--out", str(out), "--storage", sqlite_db)
    assert json.loads(out.read_text()) == _optuna_best(sqlite_db, "finished")

"""Bad input through the real CLI: one ``error: ...`` line, exit code 2, and nothing written.

Each case runs ``tfg-search`` (in this process, a few as real subprocesses) in a fresh folder that
holds a text file, an empty file, a folder and, where the case says so, a copy of a real study
database. Afterwards: no traceback, exactly one non-blank line on stderr starting with ``error: ``,
no file created or touched, and the database either still absent or unchanged row for row (every
study, trial and attribute) with no RUNNING trial.

Also here: study names that are data, not paths (slashes, ``..``, absolute paths, non-ASCII, Rich
markup, matplotlib math, SQL, the longest name allowed) are stored exactly as given and their
plots stay inside ``tfg-output/``; names no storage can hold as one line of text are refused.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import optuna
import pytest

from tests.helpers.cli import run_cli, run_proc
from tfg_search.paths import safe_name
from tfg_search.run.coordinator import run_search
from tfg_search.run.settings import SearchSettings
from tfg_search.store.database import MAX_STUDY_NAME
from tfg_search.store.studies import load_search

STUDY = "s1"
"""The study of the shared database (a finished tiny gmm2d search)."""
TINY = [
    "--samples",
    "4",
    "--final-samples",
    "4",
    "--steps",
    "2",
    "--rounds",
    "1",
    "--final-top",
    "1",
    "--search",
    "beam",
]
SETTINGS = SearchSettings(
    task="gmm2d", target="3", samples=4, final_samples=4, steps=2, rounds=1, final_top=1, search="beam"
)
S = ["search", "--task", "gmm2d", "--target", "3"]
EV = ["evaluate", "--task", "gmm2d", "--target", "3", "--samples", "4", "--steps", "2"]
DB = "tfg-studies.db"


@pytest.fixture(scope="module")
def study_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real finished study database (study ``s1``), its write-ahead log folded in."""
    db = tmp_path_factory.mktemp("bad-inputs") / DB
    run_search(SETTINGS, f"sqlite:///{db}", STUDY)
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return db


def dump(db: Path) -> list[str]:
    """Every row of the database as SQL (what the command could have changed)."""
    with sqlite3.connect(db) as conn:
        return list(conn.iterdump())


def running(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return conn.execute("select count(*) from trials where state = 'RUNNING'").fetchone()[0]


def files(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file below ``folder`` but SQLite's -wal / -shm side files: (size, mtime)."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in folder.rglob("*")
        if not p.name.endswith(("-wal", "-shm"))
    }


def prepare(folder: Path, study_db: Path | None) -> None:
    (folder / "notes.txt").write_text("not a database\n")
    (folder / "empty.db").write_bytes(b"")
    (folder / "sub").mkdir()
    if study_db is not None:
        shutil.copy(study_db, folder / DB)


def assert_refused(err: str, out: str, needle: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert needle in lines[0], lines[0]
    assert "Traceback" not in err + out
    assert "hunter2secret" not in err + out


def assert_nothing_written(folder: Path, before: dict[str, tuple[int, int]], rows: list[str] | None) -> None:
    after = files(folder)
    db = folder / DB
    if rows is None:
        assert not db.exists(), "a database was created"
        assert after == before
    else:
        assert {k: v for k, v in after.items() if k != DB} == {k: v for k, v in before.items() if k != DB}
        assert dump(db) == rows  # unchanged row for row
        assert running(db) == 0


# (args, text the error line must contain, whether the folder holds the study database)
BAD: list[tuple[list[str], str, bool]] = [
    ([*S, "--search", "clever"], "--search must be one of rungs, beam, gp, tpe, random", False),
    ([*S, "--search", ""], "--search is empty", False),
    ([*S, "--rounds", "3"], "--rounds applies to --search beam, not --search rungs", False),
    ([*S, "--top-k", "3"], "--top-k applies to --search beam, not --search rungs", False),
    ([*S, "--steps-down"], "--steps-down applies to --search beam, not --search rungs", False),
    ([*S, "--search", "beam", "--wave", "4"], "--wave applies to --search rungs, gp, tpe or random", False),
    ([*S, "--search", "gp", "--rounds", "3"], "--rounds applies to --search beam, not --search gp", False),
    ([*S, "--trials", "10"], "--trials applies to --search gp, tpe or random", False),
    ([*S, "--search", "gp", "--trials", "0"], "--trials must be an integer >= 1", False),
    ([*S, "--search", "random", "--wave", "0"], "--wave must be an integer >= 1", False),
    ([*S, "--search", "gp", "--seed-presets"], "(a warm start) applies to --search rungs or beam", False),
    # -- tfg-search 0.2's flags: one line naming the new one
    ([*S, "--sampler", "gp"], "--sampler was replaced by --search in tfg-search 0.3: use --search gp", False),
    ([*S, "--sampler", "beam"], "use --search rungs (the default) or --search beam", False),
    ([*S, "--mode", "reference"], "--mode was replaced by --search in tfg-search 0.3", False),
    ([*S, "--mode", "refined"], "use --search beam --steps-down", False),
    ([*S, "--mode", "rungs"], "use --search rungs (the default; leave it out)", False),
    ([*S, "--threads", "0"], "--threads must be an integer >= 1", False),
    ([*EV, "--threads", "0"], "--threads must be >= 1", False),
    ([*S, "--seed-presets", "--method", "dps"], "applies to method 'tfg' only", False),
    # -- search: the cases of tests/test_cli_search.py (none may create the database)
    (["search", "--task", "nope", "--target", "3"], "unknown task 'nope'", False),
    ([*S[:3], "--target", "99"], "unknown target '99'", False),
    ([*S, "--method", "foo"], "unknown method 'foo'", False),
    ([*S, "--samples", "0"], "--samples must be an integer >= 1", False),
    ([*S, "--samples", "-5"], "--samples must be an integer >= 1", False),
    ([*S, "--samples", "abc"], "Invalid value for '--samples'", False),
    ([*S, "--search", "beam", "--rounds", "0"], "--rounds must be an integer >= 1", False),
    ([*S, "--search", "beam", "--top-k", "0"], "--top-k must be an integer >= 1", False),
    ([*S, "--final-top", "-1"], "--final-top must be an integer >= 1", False),
    ([*S, "--final-top", "0"], "--final-top must be an integer >= 1", False),
    ([*S, "--n-recur", "0"], "--n-recur must be an integer >= 1", False),
    ([*S, "--eta", "2"], "--eta must be a number in [0, 1]", False),
    ([*S, "--space", "rho=abc"], "bad --space", False),
    ([*S, "--method", "dps", "--space", "rho=0.1:2:1"], "--space for method 'dps' must name strength", False),
    ([*S, "--objective", "accuracy"], "objective metric(s) accuracy", False),
    ([*S, "--executor", "spark"], "unknown executor 'spark'", False),
    ([*S, "--batch-size", "0"], "--batch-size must be an integer >= 1", False),
    ([*S, "--method", "dps", "--search-schedules"], "--search-schedules applies to method 'tfg' only", False),
    ([*S, "--task-option", "novalue"], "must look like KEY=VALUE", False),
    ([*S, "--storage", "not a url"], "malformed storage URL", False),
    ([*S, "--storage", "sqlite:///no/such/dir/x.db"], "folder no/such/dir does not exist", False),
    ([*S, "--storage", "sqlite:///notes.txt"], "notes.txt is not an SQLite database", False),
    ([*S, "--storage", "postgresql+psycopg://tfg:hunter2secret@127.0.0.1:9/tfg"], "cannot connect to storage",
     False),
    ([*S, "--storage", "mysql://u:p@127.0.0.1/db"], "is not installed for storage", False),
    (["search", "--target", "3"], "Missing option '--task'", False),
    # -- search: empty values
    ([*S, "--storage", ""], "--storage is empty", False),
    ([*S, "--storage", "  "], "--storage is empty", False),
    ([*S, "--study", ""], "--study is empty", False),
    ([*S, "--study", " "], "--study is empty", True),
    (["search", "--task", "", "--target", "3"], "--task is empty", False),
    ([*S[:3], "--target", ""], "--target is empty", False),
    ([*S, "--method", ""], "--method is empty", False),
    ([*S, "--objective", ""], "--objective is empty", False),
    ([*S, "--objective", "validity,"], "--objective 'validity,' has an empty metric name", False),
    ([*S, "--device", ""], "--device is empty", False),
    ([*S, "--space", ""], "--space is empty", False),
    ([*S, "--out-dir", ""], "--out-dir is empty", False),
    ([*S, "--executor", ""], "--executor is empty", False),
    ([*S, "--ray-address", ""], "--ray-address is empty", False),
    ([*S, "--task-option", ""], "--task-option '' must look like KEY=VALUE", False),
    ([*S, "--task-option", "weights="], "--task-option 'weights=' has an empty value", False),
    # -- search: devices (checked before anything is written, also next to an existing study)
    ([*S, "--device", "tpu9"], "--device 'tpu9' is not a device name", False),
    ([*S, "--device", "cuda", *TINY], "this torch has no CUDA device", False),
    ([*S, "--device", "cuda:0", *TINY, "--study", STUDY], "this torch has no CUDA device", True),
    ([*S, "--device", "meta", *TINY], "device meta is not supported", False),
    # -- search: other bad values
    ([*S, "--seed", "-1"], "--seed must be an integer >= 0", False),
    ([*S, "--gpus-per-trial", "nan"], "must be finite numbers", False),
    ([*S, "--eta", "nan"], "--eta must be a number in [0, 1]", False),
    ([*S, "--out-dir", "notes.txt"], "--out-dir notes.txt is a file", False),
    ([*S, "--task-option", "a=1", "--task-option", "a=2"], "--task-option a is given twice", False),
    ([*S, *TINY, "--samples", "8", "--study", STUDY], "exists with other settings", True),
    # -- search: study names no storage holds as given, or that name a search's search study
    ([*S, "--study", "a\x00b"], "contains the control character U+0000 at position 1", False),
    ([*S, "--study", "a\nb"], "control character U+000A", False),
    ([*S, "--study", "tab\there"], "control character U+0009", True),
    ([*S, "--study", "del\x7f"], "control character U+007F", False),
    ([*S, "--study", "bad\udcffbyte"], "--study is not valid UTF-8 text", False),
    ([*S, "--study", "x" * 1000], "--study is 1000 characters long; at most 505", False),
    ([*S, "--study", "x" * (MAX_STUDY_NAME + 1)], f"is {MAX_STUDY_NAME + 1} characters long", False),
    ([*S, "--study", "mine:search"], "--study may not end in ':search'", False),
    ([*S, "--study", f"{STUDY}:search"], "--study may not end in ':search'", True),
    # -- studies
    (["studies"], "no study database at tfg-studies.db", False),
    (["studies", "--storage", ""], "--storage is empty", False),
    (["studies", "--storage", "sqlite:///notes.txt"], "not an SQLite database", False),
    (["studies", "--storage", "sqlite:///sub"], "sub is a folder, not a database file", False),
    (["studies", "--storage", "sqlite:///empty.db"], "holds no tfg-search studies", False),
    (["studies", "extra"], "unexpected extra argument", True),
    # -- best
    (["best", "--study", "x"], "no study database at tfg-studies.db", False),
    (["best", "--study", "x", "--storage", "sqlite:///empty.db"], "holds no tfg-search studies", False),
    (["best", "--study", "nope"], f"no study named 'nope' in this storage; studies: {STUDY}", True),
    (["best", "--study", ""], "--study is empty", True),
    (["best", "--study", "a\x00"], "control character U+0000", True),
    (["best", "--study", STUDY, "--storage", ""], "--storage is empty", True),
    (["best"], "Missing option '--study'", True),
    # -- export
    (["export", "--study", "x", "--out", "o.json"], "no study database", False),
    (["export", "--study", STUDY, "--out", ""], "--out is empty", True),
    (["export", "--study", "", "--out", "o.json"], "--study is empty", True),
    (["export", "--study", STUDY, "--out", "sub"], "--out sub is a folder", True),
    (["export", "--study", STUDY, "--out", "sub", "--force"], "--out sub is a folder", True),
    (["export", "--study", STUDY, "--out", "notes.txt"], "notes.txt exists; pass --force", True),
    (["export", "--study", STUDY, "--out", "no/such/o.json"], "folder no/such does not exist", True),
    # -- sample
    (["sample", "--study", "x", "--n", "0", "--out", "g.png"], "--n must be >= 1", False),
    (["sample", "--study", "x", "--out", "g.jpg"], "--out must be a .png file", False),
    (["sample", "--study", STUDY, "--out", ""], "--out is empty", True),
    (["sample", "--study", STUDY, "--out", "g.png", "--device", ""], "--device is empty", True),
    (["sample", "--study", STUDY, "--out", "g.png", "--device", "tpu9"], "not a device name", True),
    (["sample", "--study", STUDY, "--out", "g.png", "--device", "cuda"], "no CUDA device", True),
    (["sample", "--study", STUDY, "--out", "g.png", "--seed", "-1"], "--seed >= 0", True),
    (["sample", "--study", "nope", "--out", "g.png"], "no study named 'nope'", True),
    # -- evaluate
    ([*EV[:-4], "--samples", "0"], "--samples must be >= 1", False),
    ([*EV, "--device", ""], "--device is empty", False),
    ([*EV, "--device", "tpu9"], "not a device name", False),
    ([*EV, "--device", "cuda"], "no CUDA device", False),
    (["evaluate", "--task", "", "--target", "3"], "--task is empty", False),
    (["evaluate", "--task", "gmm2d", "--target", ""], "--target is empty", False),
    ([*EV, "--method", ""], "--method is empty", False),
    ([*EV, "--strength", ""], "--strength must be a number, got ''", False),
    ([*EV, "--rho", "nan"], "--rho must be a finite number", False),
    ([*EV, "--save-grid", ""], "--save-grid is empty", False),
    ([*EV, "--save-grid", "no/dir/g.png"], "folder no/dir does not exist", False),
    ([*EV, "--save-grid", "sub"], "--save-grid sub is a folder", False),
    ([*EV, "--option", "k="], "--option 'k=' has an empty value", False),
    # -- tasks
    (["tasks", "--bogus"], "No such option", False),
    (["tasks", "extra"], "unexpected extra argument", False),
    # -- train (each refused before any training starts; --out keeps the package's weights safe)
    (["train", ""], "TASK is empty", False),
    (["train", "nope", "--out", "w"], "unknown task 'nope'", False),
    (["train", "gmm2d", "--out", ""], "--out is empty", False),
    (["train", "gmm2d", "--out", "notes.txt"], "--out notes.txt is a file", False),
    (["train", "gmm2d", "--seed", "abc", "--out", "w"], "--seed must be an integer", False),
    (["train", "gmm2d", "--steps", "0", "--out", "w"], "--steps must be >= 1", False),
    (["train", "gmm2d", "--epochs", "2", "--out", "w"], "--epochs does not apply", False),
    (["train", "digits-attrs", "--out", "w"], "reuses the digits models", False),
    (["train", "custom", "--out", "w"], "cannot train task 'custom'", False),
]  # fmt: skip


def _id(case: tuple[list[str], str, bool]) -> str:
    return ascii(" ".join(case[0]))[1:-1][:70]


@pytest.mark.parametrize(("args", "needle", "with_db"), BAD, ids=[_id(c) for c in BAD])
def test_bad_input_one_line_exit_2_nothing_written(
    args: list[str],
    needle: str,
    with_db: bool,
    study_db: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TFG_SEARCH_STORAGE", raising=False)
    prepare(tmp_path, study_db if with_db else None)
    before = files(tmp_path)
    rows = dump(tmp_path / DB) if with_db else None
    res = run_cli(args, capsys)
    assert res.code == 2, (res.out, res.err)
    assert_refused(res.err, res.out, needle)
    assert_nothing_written(tmp_path, before, rows)


@pytest.mark.parametrize(
    ("value", "needle", "exists"),
    [
        ("", "no study database at tfg-studies.db", False),  # empty: unset, the default is used
        ("   ", "no study database at tfg-studies.db", False),
        ("not a url", "malformed storage URL (from $TFG_SEARCH_STORAGE)", False),
        ("sqlite:///notes.txt", "notes.txt is not an SQLite database", False),
    ],
)
def test_storage_from_the_environment(
    value: str,
    needle: str,
    exists: bool,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TFG_SEARCH_STORAGE", value)
    prepare(tmp_path, None)
    before = files(tmp_path)
    for args in (["studies"], ["best", "--study", STUDY]):
        res = run_cli(args, capsys)
        assert res.code == 2, (res.out, res.err)
        assert_refused(res.err, res.out, needle)
    res = run_cli([*S, "--study", ""], capsys)  # an explicitly empty flag stays an error
    assert res.code == 2 and "--study is empty" in res.err
    assert_nothing_written(tmp_path, before, None)


# A few through the console script itself: argv as the operating system passes it.
PROC: list[tuple[list[str], str, bool]] = [
    ([*S, "--device", "cuda", *TINY], "this torch has no CUDA device", True),
    ([*S, "--study", "two\nlines", *TINY], "control character U+000A", False),
    ([*S, "--study", "bad\udcffbyte", *TINY], "not valid UTF-8 text", False),  # the byte 0xFF
    (["studies", "--storage", ""], "--storage is empty", False),
    (["export", "--study", STUDY, "--out", ""], "--out is empty", True),
]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize(("args", "needle", "with_db"), PROC, ids=[_id(c) for c in PROC])
def test_bad_input_in_a_real_process(
    args: list[str], needle: str, with_db: bool, study_db: Path, tmp_path: Path
) -> None:
    prepare(tmp_path, study_db if with_db else None)
    before = files(tmp_path)
    rows = dump(tmp_path / DB) if with_db else None
    res = run_proc(args, tmp_path, timeout=180)
    assert res.code == 2, (res.out, res.err)
    assert res.out == ""
    assert_refused(res.err, res.out, needle)
    assert_nothing_written(tmp_path, before, rows)


HOSTILE = [
    "a/b",
    "../../escape",
    "/abs/olute",
    "..",
    "Zürich 🙂 ß",
    "$\\frac{$ [/] [red]x",  # matplotlib math, Rich markup
    "'; DROP TABLE studies; --",
    "ü" * MAX_STUDY_NAME,  # the longest name: 505 characters (1,010 UTF-8 bytes)
]


@pytest.mark.slow
@pytest.mark.parametrize("name", HOSTILE, ids=[ascii(n)[1:30] for n in HOSTILE])
def test_hostile_study_names_are_data(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    res = run_cli([*S, *TINY, "--study", name, "--json"], capsys)
    assert res.code == 0, res.err
    assert "Traceback" not in res.err
    payload = json.loads(res.out)
    assert payload["study"] == name
    # Stored exactly as given: the main study and its search study, and read back by name.
    names = {s.study_name for s in optuna.get_all_study_summaries(f"sqlite:///{work / DB}")}
    assert names == {name, name + ":search"}
    finals = [r for r in load_search(f"sqlite:///{work / DB}", name).records() if r.role == "final" and r.ok]
    assert max(finals, key=lambda r: (r.value, -r.number)).number == payload["best"]["trial"]
    res = run_cli(["best", "--study", name, "--json"], capsys)
    assert res.code == 0 and json.loads(res.out)["study"] == name
    res = run_cli(["studies", "--json"], capsys)
    assert res.code == 0 and [r["study"] for r in json.loads(res.out)] == [name]
    res = run_cli(["studies"], capsys)  # the table prints it (not as Rich markup)
    assert res.code == 0 and "Traceback" not in res.err
    # Plots stay in tfg-output/, in one folder named by safe_name: nothing anywhere else.
    folder = safe_name(name)
    written = {str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()}
    assert len([p for p in written if p.startswith("work/tfg-artifacts/")]) == 1  # the grid, by its id
    assert {p for p in written if not p.startswith("work/tfg-artifacts/")} <= {
        f"work/{DB}",
        f"work/{DB}-wal",
        f"work/{DB}-shm",
        f"work/tfg-output/{folder}/search.png",
        f"work/tfg-output/{folder}/best-samples.png",
    }
    assert [p.name for p in (work / "tfg-output").iterdir()] == [folder]
    assert Path(payload["files"]["search_plot"]) == Path("tfg-output") / folder / "search.png"
    assert (work / "tfg-output" / folder / "search.png").stat().st_size > 1000
    assert not Path("/abs").exists()


def test_a_name_of_the_longest_length_fits_postgresql_and_one_more_is_refused(
    fresh_postgres_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """PostgreSQL enforces Optuna's 512-character study names: the limit is what it holds."""
    monkeypatch.chdir(tmp_path)
    longest = "é" * (MAX_STUDY_NAME - 2) + "/🙂"
    url = fresh_postgres_url
    res = run_cli([*S, *TINY, "--study", longest + "x", "--storage", url, "--quiet"], capsys)
    assert res.code == 2
    assert_refused(res.err, res.out, f"is {MAX_STUDY_NAME + 1} characters long")
    assert optuna.storages.RDBStorage(url).get_all_studies() == []
    res = run_cli([*S, *TINY, "--study", longest, "--storage", url, "--json"], capsys)
    assert res.code == 0, res.err
    names = {s.study_name for s in optuna.get_all_study_summaries(url)}
    assert names == {longest, longest + ":search"}
    assert [p.name for p in (tmp_path / "tfg-output").iterdir()] == [safe_name(longest)]


SB = [*S, "--samples", "4", "--final-samples", "4", "--final-top", "1"]
"""A search whose every other option is valid (the study database is in the folder: nothing may
reach it)."""
BEFORE_WRITING: list[tuple[list[str], str]] = [
    ([*SB, "--seed", str(2**32)], "--seed must be an integer in [0, 4294967295]"),
    ([*SB, "--search", "tpe", "--seed", str(2**40)], "--seed must be an integer in [0, 4294967295]"),
    ([*SB, "--steps", "1001"], "--steps 1001 is more than the 1000 timesteps the model of task 'gmm2d'"),
    ([*SB, "--steps", str(10**9)], "give at most 1000"),
    ([*SB, "--threads", "100000"], "--threads 100000 is more than the"),
    ([*S, "--samples", str(10**12)], "--samples 1000000000000 needs about"),
    ([*S, "--samples", str(2**63)], f"--samples {2**63} needs about"),
    ([*S, "--final-samples", str(10**12)], "--final-samples 1000000000000 needs about"),
    ([*SB, "--search", "random", "--trials", str(2**65)], f"--trials {2**65} is more than the"),
    ([*SB, "--wave", str(10**9)], "--wave 1000000000 is more than the"),
    ([*SB, "--n-recur", str(10**9)], "--n-recur 1000000000 is more than 100"),
    ([*SB, "--objective", "validity,validity"], "--objective names 'validity' twice"),
    ([*SB, "--device", "cpu:99"], "--device 'cpu:99' names a CPU by index"),
    (["search", "--task", "gmm2d", "--target", " 3"], "--target ' 3' has spaces around it; give '3'"),
    ([*SB, "--space", "rho=1e-300:2:8,mu=0.25:2:8,gamma=0.001:10:1"], "--space rho's lattice holds"),
    ([*SB, "--space", "rho=0.25:2:8"], "--space leaves out mu, gamma, which would be held at 0"),
    ([*EV, "--seed", str(2**32)], "--seed must be an integer in [0, 4294967295]"),
    ([*EV[:-2], "--steps", "1001"], "--steps 1001 is more than the 1000 timesteps"),
    ([*EV, "--threads", "100000"], "--threads 100000 is more than the"),
    ([*EV[:-4], "--samples", str(10**12)], "--samples 1000000000000 needs about"),
    ([*EV, "--device", "cpu:99"], "--device 'cpu:99' names a CPU by index"),
    ([*EV, "--n-recur", str(10**9)], "--n-recur 1000000000 is more than 100"),
    (["sample", "--study", STUDY, "--out", "g.png", "--seed", str(2**32)], "--seed must be an integer in"),
    (["sample", "--study", STUDY, "--out", "g.png", "--threads", "100000"], "is more than the"),
    (["sample", "--study", STUDY, "--out", "g.png", "--n", str(10**12)], "--n 1000000000000 needs about"),
    (["sample", "--study", STUDY, "--save-tensors", "t.safetensors", "--n", str(2**63)], "--n 9223372"),
    ([*S, "--executor", "ray", "--samples", str(10**12)], "--samples 1000000000000 needs about"),
    ([*SB, "--executor", "ray", "--final-samples", str(10**12)], "--final-samples 1000000000000 needs"),
    ([*SB, "--executor", "ray", "--final-samples", str(10**12), "--workers", "1"], "is available; lower"),
]  # fmt: skip
"""Issue 27, item 1: values no run can use, each refused before any storage is opened (a Ray
search's batch against one actor's share of this machine, before Ray starts)."""


@pytest.mark.parametrize(
    ("args", "needle"), BEFORE_WRITING, ids=lambda v: " ".join(v)[:60] if isinstance(v, list) else None
)
def test_checked_before_writing_one_line_exit_2_database_byte_identical(
    args: list[str],
    needle: str,
    study_db: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TFG_SEARCH_STORAGE", raising=False)
    prepare(tmp_path, study_db)
    before = files(tmp_path)
    stored = (tmp_path / DB).read_bytes()
    res = run_cli(args, capsys)
    assert res.code == 2, (res.out, res.err)
    assert_refused(res.err, res.out, needle)
    assert (tmp_path / DB).read_bytes() == stored
    assert files(tmp_path) == before

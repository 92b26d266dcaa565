"""Storage URLs a user can get wrong, through the real CLI (issue 27, items 1 and 6).

- No password is printed, wherever the URL carries it: the user info (also with an unescaped ``@``),
  query parameters (``?password=``, ``?sslpassword=``), a malformed URL.
- SQLite URL options act or are refused in one line: ``?mode=ro`` (with or without ``uri=true``)
  reads without writing, is refused by ``search``, and never becomes a file literally named
  ``x.db?mode=ro``.
- A database ``search`` cannot write (immutable, read-only permissions), a file name too long for
  the file system, a missing folder: one line, exit 2, the database byte-identical.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers.cli import run_cli
from tests.test_bad_inputs import DB, STUDY, TINY, assert_refused, files, prepare, study_db  # noqa: F401
from tfg_search.store.database import redact, resolve_storage, scrub

SECRET = "hunter2secret"


def _folder(tmp_path: Path, db: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[bytes, dict]:
    """The test's folder with a copy of the study database, as the working folder: (its bytes,
    every file's size and time)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TFG_SEARCH_STORAGE", raising=False)
    prepare(tmp_path, db)
    return (tmp_path / DB).read_bytes(), files(tmp_path)


def _untouched(tmp_path: Path, stored: bytes, before: dict) -> None:
    """The database byte-identical, no file created or touched."""
    assert (tmp_path / DB).read_bytes() == stored
    assert files(tmp_path) == before


S = ["search", "--task", "gmm2d", "--target", "3", *TINY, "--study", STUDY]


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"postgresql+psycopg://u:{SECRET}@db:5432/tfg", "postgresql+psycopg://u:***@db:5432/tfg"),
        (f"postgresql+psycopg://u@db/tfg?password={SECRET}", "postgresql+psycopg://u@db/tfg?password=***"),
        (f"postgresql://db/tfg?user=u&sslpassword={SECRET}&x=1", "postgresql://db/tfg?user=u&sslpassword=***&x=1"),
        (f"postgresql://u:{SECRET[:4]}@{SECRET[4:]}@db/tfg", "postgresql://u:***@db/tfg"),  # unescaped @
        (f"postgresql://u:{SECRET}@db:notaport/tfg", "postgresql://u:***@db:notaport/tfg"),  # malformed
        (f"postgresql://u:a/{SECRET}?@db/tfg", "postgresql://u:***@db/tfg"),
        (f"u:{SECRET}@db/tfg", "<unparseable storage URL>"),
    ],
)  # fmt: skip
def test_redact_hides_every_password(url: str, shown: str) -> None:
    assert redact(url) == shown
    assert SECRET[4:] not in scrub(f"driver says: {url} failed", url)


BAD_URLS = [
    f"postgresql+psycopg://tfg@127.0.0.1:9/tfg?password={SECRET}",
    f"postgresql+psycopg://tfg:{SECRET[:4]}@{SECRET[4:]}@127.0.0.1:9/tfg",
    f"postgresql+psycopg://tfg:{SECRET}@127.0.0.1:notaport/tfg",
    f"postgresql+psycopg://tfg:{SECRET}@127.0.0.1:9/tfg?sslpassword={SECRET}",
    f"tfg:{SECRET}@127.0.0.1/tfg",
]


@pytest.mark.parametrize("url", BAD_URLS, ids=range(len(BAD_URLS)))
@pytest.mark.parametrize("command", ["search", "studies", "best"])
def test_no_password_in_any_output(
    url: str,
    command: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.chdir(tmp_path)
    args = {"search": S, "studies": ["studies"], "best": ["best", "--study", STUDY]}[command]
    for given in (["--storage", url], []):  # as a flag, and from the environment
        monkeypatch.setenv("TFG_SEARCH_STORAGE", url)
        res = run_cli([*args, *given], capsys)
        assert res.code == 2, res
        everything = res.out + res.err + caplog.text
        for part in (SECRET, SECRET[:4] + "@", SECRET[4:]):
            assert part not in everything, everything
        assert_refused(res.err, res.out, "storage")
        if "@" + SECRET[4:] in url:
            assert "the password holds an unescaped '@', '/', '?' or '#'; write them as %40" in res.err
    assert list(tmp_path.iterdir()) == []


def test_sqlite_options_act_as_sqlite_says() -> None:
    assert resolve_storage("sqlite:///x.db?mode=ro") == "sqlite:///file:x.db?mode=ro&uri=true"
    assert resolve_storage("sqlite:///x.db?mode=ro&uri=true") == "sqlite:///file:x.db?mode=ro&uri=true"
    assert resolve_storage("sqlite:////a b/x?.db") == "sqlite:////a b/x?.db"  # no option: as given
    weird = resolve_storage("sqlite:////tmp/a b%3F.db?immutable=1")  # SQLite's own escapes
    assert weird == "sqlite:///file:/tmp/a%2520b%253F.db?immutable=1&uri=true"
    assert resolve_storage("sqlite:///x.db?timeout=5") == "sqlite:///x.db?timeout=5"  # the driver's


@pytest.mark.parametrize("ro", ["?mode=ro", "?mode=ro&uri=true", "?immutable=1"])
def test_read_only_url_reads_and_search_refuses(
    ro: str,
    study_db: Path,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stored, _ = _folder(tmp_path, study_db, monkeypatch)
    url = f"sqlite:///{DB}{ro}"
    res = run_cli(["best", "--study", STUDY, "--storage", url, "--json"], capsys)
    assert res.code == 0 and f'"study": "{STUDY}"' in res.out, res
    assert "Warning" not in res.err
    res = run_cli(["studies", "--storage", url], capsys)
    assert res.code == 0 and STUDY in res.out
    before = files(tmp_path)
    res = run_cli([*S, "--storage", url], capsys)
    assert res.code == 2
    assert_refused(res.err, res.out, "is read-only; a search writes its trials")
    _untouched(tmp_path, stored, before)
    assert sorted(p.name for p in tmp_path.iterdir() if "?" in p.name or "mode" in p.name) == []


@pytest.mark.parametrize(
    ("query", "needle"),
    [
        ("?mode=memory", "mode=memory is not an option of a study database"),
        ("?foo=1", "SQLite takes no option 'foo'"),
        ("?mode=sideways", "give mode=ro or rw or rwc"),
    ],
)
def test_bad_sqlite_options_one_line(
    query: str,
    needle: str,
    study_db: Path,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stored, before = _folder(tmp_path, study_db, monkeypatch)
    for args in (S, ["best", "--study", STUDY], ["studies"]):
        res = run_cli([*args, "--storage", f"sqlite:///{DB}{query}"], capsys)
        assert res.code == 2
        assert_refused(res.err, res.out, needle)
    _untouched(tmp_path, stored, before)


def _chattr(flag: str, path: Path) -> bool:
    tool = shutil.which("chattr")
    return tool is not None and subprocess.run([tool, flag, str(path)], capture_output=True).returncode == 0


@pytest.mark.parametrize("resume", [True, False], ids=["resumed", "new"])
def test_immutable_database_one_line(
    resume: bool,
    study_db: Path,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stored, _ = _folder(tmp_path, study_db, monkeypatch)
    if not _chattr("+i", tmp_path / DB):
        pytest.skip("chattr +i needs root (CAP_LINUX_IMMUTABLE) on a file system that has the flag")
    try:
        before = files(tmp_path)
        args = S if resume else [*S[:-1], "another"]
        res = run_cli(args, capsys)
        assert res.code == 2
        assert_refused(res.err, res.out, f"{DB} is not writable (read-only permissions, an immutable file")
        _untouched(tmp_path, stored, before)
        res = run_cli(["best", "--study", STUDY], capsys)  # reading is fine
        assert res.code == 0, res
    finally:
        _chattr("-i", tmp_path / DB)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes a file without write permission")
def test_read_only_permissions_one_line(
    study_db: Path,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stored, _ = _folder(tmp_path, study_db, monkeypatch)
    (tmp_path / DB).chmod(0o444)
    before = files(tmp_path)
    res = run_cli(S, capsys)
    assert res.code == 2
    assert_refused(res.err, res.out, f"{DB} is not writable")
    _untouched(tmp_path, stored, before)
    (tmp_path / DB).chmod(0o644)
    tmp_path.chmod(0o555)  # the folder, where SQLite keeps its journal
    try:
        res = run_cli(S, capsys)
        assert res.code == 2
        assert_refused(res.err, res.out, "is not writable and SQLite keeps its journal beside the database")
        _untouched(tmp_path, stored, before)
    finally:
        tmp_path.chmod(0o755)


@pytest.mark.parametrize(
    ("storage", "needle"),
    [
        (f"sqlite:///{'y' * 300}.db", "is 303 bytes long, more than the 255 a file system allows"),
        (f"sqlite:///sub/{'é' * 200}.db", "is 403 bytes long"),
        ("sqlite:///no/such/folder/x.db", "folder no/such/folder does not exist"),
    ],
    ids=["long", "long-utf8", "missing-folder"],
)
def test_storage_path_one_line(
    storage: str,
    needle: str,
    study_db: Path,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stored, before = _folder(tmp_path, study_db, monkeypatch)
    for args in (S, ["best", "--study", STUDY]):
        res = run_cli([*args, "--storage", storage], capsys)
        assert res.code == 2
        expected = needle if args is S or "long" in needle else "no study database"
        assert_refused(res.err, res.out, expected)
    _untouched(tmp_path, stored, before)


def test_a_real_server_never_sees_a_password_printed(
    postgres_server: object,
    fresh_postgres_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """PostgreSQL with password authentication: the right password as a query parameter works and
    is never shown; a wrong one (in the user info or the query) is one line without it."""
    monkeypatch.chdir(tmp_path)
    password = postgres_server.password  # type: ignore[attr-defined]
    user_info = fresh_postgres_url.split("//", 1)[1].split("@", 1)[0]
    in_query = (
        fresh_postgres_url.replace(f"{user_info}@", f"{user_info.split(':')[0]}@") + f"?password={password}"
    )
    res = run_cli([*S, "--storage", in_query, "--json"], capsys)
    assert res.code == 0, res.err
    assert password not in res.out + res.err and '"storage": "postgresql+psycopg://' in res.out
    assert "?password=***" in res.out
    wrong = [in_query.replace(password, SECRET), fresh_postgres_url.replace(password, SECRET)]
    for url in wrong:
        for args in (S, ["studies"], ["best", "--study", STUDY]):
            res = run_cli([*args, "--storage", url], capsys)
            assert res.code == 2
            assert_refused(res.err, res.out, "cannot connect to storage")
            assert "password authentication failed" in res.err and password not in res.err

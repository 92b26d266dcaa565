"""Every write checks its errors (issue 27, item 6): ``--json > /dev/full``, a closed stdout and
``export --out /dev/full`` end with one line and a non-zero exit code instead of "wrote" and 0;
a device is written in place, never replaced by a file; a link to nothing is not written
without ``--force``; ``| head`` ends quietly."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.helpers.cli import cli_cmd, run_cli
from tests.test_bad_inputs import DB, STUDY, TINY, prepare, study_db  # noqa: F401

pytestmark = pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")


def _run(args: list[str], cwd: Path, stdout: str) -> tuple[int, str]:
    """``tfg-search ARGS`` with its stdout ``/dev/full`` or closed: (exit code, stderr)."""

    def close_stdout() -> None:
        os.close(1)

    with open(os.devnull if stdout == "closed" else stdout, "w") as out:
        proc = subprocess.run(
            cli_cmd(*args),
            cwd=cwd,
            stdout=out,
            stderr=subprocess.PIPE,
            text=True,
            timeout=300,
            preexec_fn=close_stdout if stdout == "closed" else None,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
    return proc.returncode, proc.stderr


QUERIES = [["best", "--study", STUDY, "--json"], ["best", "--study", STUDY], ["studies", "--json"], ["tasks"]]


@pytest.mark.parametrize("stdout", ["/dev/full", "closed"])
@pytest.mark.parametrize("args", QUERIES, ids=[" ".join(a) for a in QUERIES])
def test_a_failed_stdout_is_one_line_and_exit_1(
    args: list[str],
    stdout: str,
    study_db: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    prepare(tmp_path, study_db)
    code, err = _run(args, tmp_path, stdout)
    reason = "No space left on device" if stdout == "/dev/full" else "it is closed"
    assert code == 1, err
    assert err.strip() == f"error: cannot write to standard output: {reason}"


@pytest.mark.slow
def test_search_json_to_a_full_disk(tmp_path: Path) -> None:
    args = ["search", "--task", "gmm2d", "--target", "3", *TINY, "--json", "--quiet"]
    code, err = _run(args, tmp_path, "/dev/full")
    assert code == 1 and err.strip() == "error: cannot write to standard output: No space left on device"
    assert (tmp_path / DB).exists()  # the search itself is stored: the same command prints it again


def test_a_closed_pipe_ends_quietly(study_db: Path, tmp_path: Path) -> None:  # noqa: F811
    prepare(tmp_path, study_db)
    proc = subprocess.Popen(
        cli_cmd("tasks", "--json"), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None
    proc.stdout.read(1)
    proc.stdout.close()  # as `| head -c 1` does
    _, err = proc.communicate(timeout=120)
    assert b"Traceback" not in err and b"Exception ignored" not in err, err


def test_export_to_a_full_device_fails_and_leaves_it_a_device(
    study_db: Path,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    prepare(tmp_path, study_db)
    res = run_cli(["export", "--study", STUDY, "--out", "/dev/full", "--force"], capsys)
    assert res.code == 2 and "wrote" not in res.out
    assert (
        res.err.strip()
        == "error: cannot write /dev/full: No space left on device; free space or choose another file"
    )
    assert Path("/dev/full").is_char_device()
    assert not any(p.name.startswith(".full") for p in Path("/dev").iterdir())


def test_export_onto_a_link_to_nothing_needs_force(
    study_db: Path,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    prepare(tmp_path, study_db)
    (tmp_path / "latest.json").symlink_to("results/best.json")
    res = run_cli(["export", "--study", STUDY, "--out", "latest.json"], capsys)
    assert res.code == 2
    assert res.err.strip() == (
        "error: latest.json is a link to results/best.json, which does not exist; pass --force to write "
        "there, or choose another --out"
    )
    assert (tmp_path / "latest.json").is_symlink() and not (tmp_path / "results").exists()
    (tmp_path / "results").mkdir()
    res = run_cli(["export", "--study", STUDY, "--out", "latest.json", "--force"], capsys)
    assert res.code == 0, res.err
    assert (tmp_path / "latest.json").is_symlink()  # written through the link, which stays
    assert (tmp_path / "results" / "best.json").read_text().startswith("{")

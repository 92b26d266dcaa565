"""Run the ``tfg-search`` CLI in-process (fast) or as a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tfg_search.cli import main


@dataclass
class CliResult:
    code: int
    out: str
    err: str


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> CliResult:
    """``tfg-search ARGS`` in this process; returns the exit code and captured output."""
    capsys.readouterr()
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return CliResult(code, captured.out, captured.err)


def cli_cmd(*args: str) -> list[str]:
    """The argv of a real ``tfg-search`` subprocess."""
    return [sys.executable, "-m", "tfg_search", *args]


def run_proc(
    args: list[str], cwd: Path, timeout: float = 300, env: dict[str, str] | None = None
) -> CliResult:
    """``tfg-search ARGS`` as a subprocess (``env``: variables to set; an empty value unsets one)."""
    merged = {**os.environ, "COLUMNS": "160", **(env or {})}
    merged = {k: v for k, v in merged.items() if v != ""}
    proc = subprocess.run(
        cli_cmd(*args), cwd=cwd, capture_output=True, text=True, timeout=timeout, env=merged
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)

"""Output a script can use: nothing wraps on a pipe; on a narrow terminal names stay whole."""

from __future__ import annotations

import json
import re

from rich.console import Console

from tests.helpers.cli import run_proc
from tfg_search.cli import output


def test_tables_keep_names_whole_on_a_narrow_terminal() -> None:
    rows = [["digits-inpaint", "0..9 (digit class, a long description of the targets)", "x" * 40]]
    table = output.table("tasks", ["task", "targets", "description"], rows, keep={"task"})
    term = Console(force_terminal=True, width=50, record=True)
    term.print(table)
    text = term.export_text()
    assert "digits-inpaint" in text  # on one line, not "digits-inpain" / "t"
    assert max(len(line) for line in text.splitlines()) <= 50  # the other columns shrank


def test_nothing_wraps_on_a_pipe(tmp_path) -> None:
    # `tfg-search tasks` and a whole search through a pipe (not a terminal), COLUMNS unset.
    res = run_proc(["tasks"], tmp_path, env={"COLUMNS": ""})
    assert res.code == 0, res.err
    assert re.search(r"digits-inpaint", res.out) and "digits-inpain\n" not in res.out
    db = tmp_path / "a-rather-long-folder-name-for-the-study-database-to-make-the-url-long" / "s.db"
    db.parent.mkdir()
    args = ["search", "--task", "gmm2d", "--target", "3", "--samples", "8", "--final-samples", "8"]
    args += [
        "--steps",
        "4",
        "--search",
        "beam",
        "--rounds",
        "1",
        "--final-top",
        "1",
        "--quiet",
        "--storage",
        f"sqlite:///{db}",
    ]
    res = run_proc(args, tmp_path, env={"COLUMNS": ""})
    assert res.code == 0, res.err
    best = next(line for line in res.out.splitlines() if line.startswith("best ("))
    assert "n_recur=1 n_iter=4" in best
    assert f"sqlite:///{db}" in res.out  # the storage URL in one piece
    tasks = run_proc(["tasks", "--json"], tmp_path)
    assert {r["name"] for r in json.loads(tasks.out)} >= {"digits", "shapes"}

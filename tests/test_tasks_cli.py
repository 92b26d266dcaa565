"""The task commands of the CLI: tasks, evaluate (JSON, bad input), train."""

from __future__ import annotations

import json
import os

import pytest

from tfg_search.cli import main


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


def test_tasks_lists_names_targets_and_metrics(capsys) -> None:
    code, out, _ = run(["tasks", "--json"], capsys)
    assert code == 0
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows["digits"]["targets"].startswith("0..9")
    assert "validity" in rows["gmm2d"]["metrics"] and "custom" in rows


def test_evaluate_json_and_grid(capsys, tmp_path) -> None:
    grid = tmp_path / "g.png"
    argv = [
        "evaluate",
        "--task",
        "gmm2d",
        "--target",
        "2",
        "--method",
        "dps",
        "--rho",
        "0.01",
        "--samples",
        "8",
        "--seed",
        "1",
        "--steps",
        "4",
        "--json",
        "--save-grid",
        str(grid),
    ]
    code, out, _ = run(argv, capsys)
    assert code == 0
    metrics = json.loads(out)
    assert 0.0 <= metrics["validity"] <= 1.0 and set(metrics) == {"validity", "sw", "fidelity"}
    assert grid.stat().st_size > 0


def test_evaluate_table(capsys) -> None:
    code, out, _ = run(
        [
            "evaluate",
            "--task",
            "gmm2d",
            "--target",
            "0",
            "--method",
            "mpgd",
            "--mu",
            "0.02",
            "--samples",
            "4",
            "--steps",
            "3",
        ],
        capsys,
    )
    assert code == 0 and "validity" in out and "score" in out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--task", "nope", "--target", "1"], "unknown task"),
        (["--task", "gmm2d", "--target", "8"], "unknown target"),
        (["--task", "digits", "--target", "ten"], "unknown target"),
        (["--task", "digits-inpaint", "--target", "297"], "out of range"),
        (["--task", "gmm2d", "--target", "1", "--rho", "abc"], "--rho must be a number"),
        (["--task", "gmm2d", "--target", "1", "--n-recur", "1.5"], "--n-recur must be an integer"),
        (["--task", "gmm2d", "--target", "1", "--samples", "-4"], "--samples must be >= 1"),
        (["--task", "gmm2d", "--target", "1", "--method", "magic"], "unknown method"),
        (
            [
                "--task",
                "custom",
                "--target",
                "1",
                "-o",
                "model=.",
                "-o",
                "predictor=a:b",
                "-o",
                "evaluator=a:b",
            ],
            "not a diffusers model folder",
        ),
    ],
)
def test_evaluate_bad_input_is_one_line_exit_2(capsys, tmp_path, extra, message) -> None:
    grid = tmp_path / "never.png"
    code, out, err = run(["evaluate", *extra, "--save-grid", str(grid)], capsys)
    assert code == 2
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert out == "" and not grid.exists()


def test_train_refuses_unknown_and_shared_tasks(capsys) -> None:
    code, _, err = run(["train", "custom"], capsys)
    assert code == 2 and "cannot train task 'custom'" in err
    code, _, err = run(["train", "digits-attrs"], capsys)
    assert code == 2 and "tfg-search train digits" in err


def test_train_gmm2d_writes_weights(capsys, tmp_path) -> None:
    code, _out, err = run(["train", "gmm2d", "--steps", "3", "--seed", "1", "--out", str(tmp_path)], capsys)
    assert code == 0
    # Not a terminal: progress comes as plain lines (a background run's log shows where it is).
    assert "training gmm2d: 3/3 steps, loss " in err
    meta = json.loads((tmp_path / "eps_mlp.json").read_text())
    assert meta["seed"] == 1 and meta["steps"] == 3 and meta["format_version"] == 1
    assert (tmp_path / "eps_mlp.safetensors").is_file()


def test_threads_option_sets_torch_threads(capsys) -> None:
    import torch

    from tests.helpers.cli import run_cli
    from tfg_search.run.threads import cpu_share

    before = torch.get_num_threads()
    try:
        res = run_cli(
            [
                "evaluate",
                "--task",
                "gmm2d",
                "--target",
                "3",
                "--samples",
                "4",
                "--steps",
                "2",
                "--threads",
                "1",
                "--json",
            ],
            capsys,
        )
        assert res.code == 0, res.err
        assert torch.get_num_threads() == 1
        assert 1 <= cpu_share() <= (os.cpu_count() or 1)
    finally:
        torch.set_num_threads(before)

"""CLI commands on stored studies: ``studies``, ``best``, ``export``, ``sample`` read them
(through :mod:`tfg_search.store.query`: ``studies``, ``best`` and ``export`` answer from each
search's summary, without importing torch), ``migrate`` brings studies of earlier versions to this
version's layout (:mod:`tfg_search.run.migrate`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer
from rich.markup import escape

from tfg_search.cli import common, output
from tfg_search.errors import TFGSearchError

out = output.console()


def _study_arg(value: str) -> str:
    """A required ``--study`` of a command that reads a study."""
    checked = common.study(value, "give a study name (see `tfg-search studies`)")
    assert checked is not None
    return checked


def studies(
    storage: str | None = typer.Option(None, "--storage", help=common.STORAGE_HELP),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """List the searches in the storage with their task, target, method and best score."""
    common.text("--storage", storage, common.STORAGE_FIX)
    from tfg_search.store import query

    rows = query.list_searches(storage)
    if as_json:
        out.print_json(json.dumps(rows))
        return
    cells = [
        [
            r["study"],
            str(r["task"]),
            str(r["target"]),
            str(r["method"]),
            str(r["trials"]),
            "-" if r["best"] is None else f"{r['best']:.4f}",
            "run `tfg-search migrate`" if r["finished"] is None else "yes" if r["finished"] else "no",
        ]
        for r in rows
    ]
    columns = ["study", "task", "target", "method", "trials", "best", "finished"]
    out.print(output.table("studies", columns, cells, keep={"study", "task", "target", "method"}))


def best(
    study: str = typer.Option(..., "--study", help="study name (see `tfg-search studies`)"),
    storage: str | None = typer.Option(None, "--storage", help=common.STORAGE_HELP),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """The best configuration of a study (its final re-run when the search finished)."""
    from tfg_search.store import query

    payload = query.best_payload(storage, _study_arg(study))
    if as_json:
        out.print_json(json.dumps(payload))
        return
    note = "" if payload["role"] == "final" else "  (search not finished: best search trial)"
    out.print(
        f"study {escape(payload['study'])}: {escape(str(payload['task']))} target "
        f"{escape(str(payload['target']))} ({escape(str(payload['method']))}){note}"
    )
    out.print(f"trial {payload['trial']} score {payload['score']:.4f}")
    out.print("config: " + ", ".join(f"{k}={v}" for k, v in payload["config"].items()))
    out.print("metrics: " + ", ".join(f"{k}={v:.4g}" for k, v in payload["metrics"].items()))
    spent = payload["compute"]
    out.print(
        f"compute: {spent['trials'].get('search', 0)} search + {spent['trials'].get('final', 0)} final "
        f"trials, {spent['passes']['denoiser']:,} denoiser and {spent['passes']['predictor']:,} "
        f"predictor passes, {spent['wall_time_s']:.1f} s"
    )


def _write_error(file: Path, err: OSError) -> TFGSearchError:
    return TFGSearchError(f"cannot write {file}: {err.strerror or err}; choose another --out")


def export(
    study: str = typer.Option(..., "--study", help="study name (see `tfg-search studies`)"),
    out_file: str = typer.Option(..., "--out", help="JSON file to write"),
    storage: str | None = typer.Option(None, "--storage", help=common.STORAGE_HELP),
    force: bool = typer.Option(False, "--force", help="overwrite an existing file"),
) -> None:
    """Write the best configuration (TFGConfig JSON, with its task, target and metrics) to a file."""
    name = _study_arg(study)
    file = common.path("--out", out_file, "give the JSON file to write")
    assert file is not None
    common.output_file("--out", file, force)
    from tfg_search.store import query

    payload = query.best_payload(storage, name)
    tmp = file.with_name(file.name + f".tmp{os.getpid()}")
    try:
        tmp.write_text(json.dumps(payload, indent=2) + "\n")
        tmp.replace(file)
    except OSError as err:
        raise _write_error(file, err) from None
    finally:
        tmp.unlink(missing_ok=True)
    out.print(f"wrote {escape(str(file))}")


def sample(
    study: str = typer.Option(..., "--study", help="study name (see `tfg-search studies`)"),
    n: int = typer.Option(64, "--n", help="how many samples"),
    out_file: str = typer.Option(..., "--out", help="PNG grid to write"),
    seed: int = typer.Option(0, "--seed"),
    device: str | None = typer.Option(None, "--device", help="cpu | cuda | cuda:N (default: cuda if any)"),
    storage: str | None = typer.Option(None, "--storage", help=common.STORAGE_HELP),
    force: bool = typer.Option(False, "--force", help="overwrite an existing file"),
) -> None:
    """Generate samples with a study's best configuration and save them as a grid."""
    from tfg_search.cli.results import sample_grid
    from tfg_search.guidance.config import TFGConfig
    from tfg_search.run.devices import resolve_device
    from tfg_search.store import query

    name = _study_arg(study)
    if n < 1 or seed < 0:
        raise TFGSearchError("--n must be >= 1 and --seed >= 0")
    file = common.path("--out", out_file, "give the PNG file to write")
    assert file is not None
    if file.suffix.lower() != ".png":
        raise TFGSearchError(f"--out must be a .png file, got {file}")
    common.output_file("--out", file, force)
    if common.device(device) is not None:
        resolve_device(device, flag="--device")  # before any work: an unusable device is refused now
    payload = query.best_payload(storage, name)
    config = TFGConfig.from_dict(payload["config"])
    tmp = file.with_name(f".{file.stem}.tmp{os.getpid()}.png")
    try:
        sample_grid(
            payload["task"],
            payload["task_options"],
            payload["target"],
            config,
            n,
            seed,
            payload["steps"],
            device,
            tmp,
        )
        tmp.replace(file)
    except OSError as err:
        raise _write_error(file, err) from None
    finally:
        tmp.unlink(missing_ok=True)
    out.print(
        f"wrote {escape(str(file))} ({n} samples of {escape(str(payload['task']))} "
        f"target {escape(str(payload['target']))})"
    )


def migrate(
    storage: str | None = typer.Option(None, "--storage", help=common.STORAGE_HELP),
    yes: bool = typer.Option(False, "--yes", help="a database server: it is backed up (go ahead)"),
) -> None:
    """Bring the studies of tfg-search 0.1 and 0.2 in the storage to this version's layout, once
    (an SQLite file is copied first; back a database server up yourself, then pass --yes)."""
    common.text("--storage", storage, common.STORAGE_FIX)
    common.quiet_optuna()
    from tfg_search.run.migrate import migrate as run_migrate

    rows, backup = run_migrate(storage, yes=yes)
    if not rows:
        out.print("nothing to migrate: every tfg-search study here has this version's layout")
        return
    if backup is not None:
        out.print(f"backup: {escape(backup)}")
    for row in rows:
        out.print(f"study {escape(row.study)}: layout {row.from_layout} -> 3 ({row.done})")


def register(app: typer.Typer) -> None:
    """Add the search commands to the CLI app."""
    from tfg_search.cli.search_command import search

    app.command("search")(search)
    app.command("studies")(studies)
    app.command("best")(best)
    app.command("export")(export)
    app.command("sample")(sample)
    app.command("migrate")(migrate)

"""CLI commands on stored studies: ``studies``, ``best``, ``export``, ``sample`` read them
(through :mod:`tfg_search.store.query`: ``studies``, ``best`` and ``export`` answer from each
search's summary, without importing torch), ``migrate`` brings studies of earlier versions to this
version's layout (:mod:`tfg_search.run.migrate`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

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
    passes = spent["passes"]
    decoder = f", {passes['decoder']:,} decoder" if "decoder" in passes else ""  # a latent model's
    out.print(
        f"compute: {spent['trials'].get('search', 0)} search + {spent['trials'].get('final', 0)} final "
        f"trials, {passes['denoiser']:,} denoiser{decoder} and {passes['predictor']:,} "
        f"predictor passes, {spent['wall_time_s']:.1f} s"
    )
    if payload.get("transfer"):
        from tfg_search.cli.results import transfer_line

        out.print(escape(transfer_line(payload["transfer"])))


def _write_error(file: Path, err: OSError) -> TFGSearchError:
    return TFGSearchError(f"cannot write {file}: {err.strerror or err}; choose another --out")


EXPORT_FORMATS = ("json", "diffusers")


def export(
    study: str = typer.Option(..., "--study", help="study name (see `tfg-search studies`)"),
    out_file: str = typer.Option(
        ..., "--out", help="JSON file to write (--format diffusers: the folder of its tfg_config.json)"
    ),
    storage: str | None = typer.Option(None, "--storage", help=common.STORAGE_HELP),
    force: bool = typer.Option(False, "--force", help="overwrite an existing file"),
    fmt: str = typer.Option(
        "json",
        "--format",
        help="json: the best configuration with its metrics and compute; diffusers: tfg_config.json "
        "in the folder --out, for TFGConfig.from_pretrained and TFGPipeline",
    ),
) -> None:
    """Write the best configuration (TFGConfig JSON, with its task, target and metrics) to a file,
    or (--format diffusers) as tfg_config.json in a folder, diffusers' config format."""
    name = _study_arg(study)
    common.text("--format", fmt, f"choose one of {', '.join(EXPORT_FORMATS)}")
    if fmt not in EXPORT_FORMATS:
        raise TFGSearchError(f"--format must be one of {', '.join(EXPORT_FORMATS)}, got {fmt!r}")
    given = common.path("--out", out_file, "give the file (or with --format diffusers the folder) to write")
    assert given is not None
    if fmt == "diffusers":
        _export_diffusers(storage, name, given, force)
        return
    file = given
    common.output_file("--out", file, force)
    from tfg_search.store import query

    payload = query.best_payload(storage, name)
    common.write_file(file, lambda path: path.write_text(json.dumps(payload, indent=2) + "\n"))
    out.print(f"wrote {escape(str(file))}")


def _export_diffusers(storage: str | None, name: str, folder: Path, force: bool) -> None:
    """``--format diffusers``: the answer as ``folder/tfg_config.json``
    (:meth:`TFGConfig.save_pretrained <tfg_search.guidance.config.TFGConfig.save_pretrained>`),
    with what the answer is for as metadata: the study, task, target, task options, DDIM steps,
    model identity and metrics. The folder may be a model's pipeline folder (the config then sits
    beside its ``model_index.json`` and ``TFGPipeline.from_pretrained`` loads it as its default).
    Torch-free."""
    from tfg_search.guidance.config import TFGConfig
    from tfg_search.guidance.config_file import CONFIG_NAME, save_config

    if folder.exists() and not folder.is_dir():
        raise TFGSearchError(f"--out {folder} is a file; --format diffusers writes into a folder")
    if not folder.parent.is_dir():
        raise TFGSearchError(f"folder {folder.parent} does not exist; create it or choose another --out")
    target = folder / CONFIG_NAME
    if target.exists() and not force:
        raise TFGSearchError(f"{target} exists; pass --force to overwrite it, or choose another --out")
    from tfg_search.store import query

    payload = query.best_payload(storage, name)
    metadata = {
        "study": payload["study"],
        "task": payload["task"],
        "target": payload["target"],
        "task_options": payload.get("task_options") or {},
        "num_inference_steps": payload["steps"],
        "model_identity": payload.get("model_identity"),
        "metrics": payload["metrics"],
    }
    try:
        save_config(TFGConfig.from_dict(payload["config"]), folder, overwrite=True, **metadata)
    except OSError as err:
        raise _write_error(target, err) from None
    out.print(f"wrote {escape(str(target))}")


def _sample_file(flag: str, value: str | None, suffix: str, force: bool) -> Path | None:
    """An output file of ``sample`` (None when not asked for): its suffix checked, never over an
    existing file without ``force``."""
    file = common.path(flag, value, f"give a {suffix} file, or leave {flag} out")
    if file is None:
        return None
    if file.suffix.lower() != suffix:
        raise TFGSearchError(f"{flag} must be a {suffix} file, got {file}")
    common.output_file(flag, file, force)
    return file


def sample(
    study: str = typer.Option(..., "--study", help="study name (see `tfg-search studies`)"),
    n: int = typer.Option(64, "--n", help="how many samples"),
    out_file: str | None = typer.Option(None, "--out", help="PNG grid to write"),
    save_tensors: str | None = typer.Option(
        None,
        "--save-tensors",
        help="safetensors file to write the samples to (tensor 'samples': what the evaluator judged, "
        "images in [-1, 1], decoded for a latent model)",
    ),
    seed: int = typer.Option(0, "--seed"),
    device: str | None = typer.Option(None, "--device", help="cpu | cuda | cuda:N (default: cuda if any)"),
    dtype: str | None = typer.Option(
        None, "--dtype", help="float32 | float16 | bfloat16: the models' dtype (default: the search's)"
    ),
    threads: int | None = typer.Option(
        None, "--threads", help=f"torch threads (default: {common.THREADS_DEFAULT})"
    ),
    storage: str | None = typer.Option(None, "--storage", help=common.STORAGE_HELP),
    force: bool = typer.Option(False, "--force", help="overwrite existing files"),
    as_json: bool = typer.Option(False, "--json", help="print the metrics as one JSON object"),
) -> None:
    """Generate samples with a study's best configuration, print their held-out metrics, and save
    them as a grid (--out) and as tensors (--save-tensors).

    On the same seed, --n, device, dtype and threads the tensors equal those of ``TFGPipeline`` with
    the configuration ``export --format diffusers`` writes (docs/tasks.md)."""
    name = _study_arg(study)
    if n < 1 or seed < 0 or (threads is not None and threads < 1):
        raise TFGSearchError("--n must be >= 1, --seed >= 0 and --threads >= 1")
    grid_file = _sample_file("--out", out_file, ".png", force)
    tensor_file = _sample_file("--save-tensors", save_tensors, ".safetensors", force)
    if grid_file is None and tensor_file is None:
        raise TFGSearchError("give --out FILE.png (a grid), --save-tensors FILE.safetensors, or both")
    from tfg_search.run import validate

    validate.check_seed(seed)
    validate.check_threads(threads)
    validate.check_device(device)
    from tfg_search.run.devices import resolve_device

    common.device(device)
    on = resolve_device(device, flag="--device")  # before any work: an unusable device is refused now
    from tfg_search.store import query

    payload = query.best_payload(storage, name)
    options = dict(payload["task_options"] or {})
    if dtype is not None:  # else the search's own (its task option dtype)
        from tfg_search.cli.task_commands import with_dtype

        options = with_dtype({k: v for k, v in options.items() if k != "dtype"}, dtype, on.type == "cpu")
    elif options.get("dtype") == "float16" and on.type == "cpu":
        raise TFGSearchError("this study ran in float16, which needs a GPU: give --device cuda or --dtype")
    from tasks import get_task
    from tfg_search.cli.results import draw_samples
    from tfg_search.guidance.config import TFGConfig
    from tfg_search.run.threads import set_threads

    config = TFGConfig.from_dict(payload["config"])  # --n in one batch: it must fit (one line if not)
    validate.check_batch_memory(
        get_task(payload["task"], options), payload["target"], config, {"n": (n, n)}, on
    )
    set_threads(threads)
    task, result = draw_samples(
        payload["task"],
        options,
        payload["target"],
        config,
        n,
        seed,
        payload["steps"],
        device,
    )
    written = []
    if grid_file is not None:
        from tfg_search.cli.results import save_grid

        _write_atomic(grid_file, lambda tmp: save_grid(task, payload["target"], result.samples, tmp))
        written.append(str(grid_file))
    if tensor_file is not None:
        meta = {"study": name, "task": payload["task"], "target": payload["target"], "seed": str(seed)}
        _write_atomic(tensor_file, lambda tmp: _save_tensors(result.samples, tmp, meta))
        written.append(str(tensor_file))
    if as_json:
        out.print_json(json.dumps({"metrics": result.metrics, "files": written}))
        return
    out.print("metrics: " + ", ".join(f"{k}={v:.4g}" for k, v in result.metrics.items()))
    out.print(
        f"wrote {escape(' and '.join(written))} ({n} samples of {escape(str(payload['task']))} "
        f"target {escape(str(payload['target']))})"
    )


def _save_tensors(samples: Any, file: Path, metadata: dict[str, str]) -> None:
    from safetensors.torch import save_file

    save_file({"samples": samples.contiguous()}, str(file), metadata=metadata)


def _write_atomic(file: Path, write: Callable[[Path], Any]) -> None:
    """``write(tmp)`` to a temporary file beside ``file``, then renamed into place: the file is
    written whole or not at all (:func:`tfg_search.cli.common.write_file`)."""
    common.write_file(file, write)


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
    from tfg_search.cli.suggest_command import suggest

    app.command("search")(search)
    app.command("suggest")(suggest)
    app.command("studies")(studies)
    app.command("best")(best)
    app.command("export")(export)
    app.command("sample")(sample)
    app.command("migrate")(migrate)

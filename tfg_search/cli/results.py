"""What ``tfg-search search`` prints and writes when it is done: the top table, the summary (or
JSON), the search plot and a grid of the best configuration's samples."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from tfg_search.cli import output
from tfg_search.errors import TFGSearchError
from tfg_search.paths import safe_name

out = output.console()


def top_table(report: Any, objective: list[str]) -> Table:
    from tfg_search.cli.report import describe_params

    wanted = ["validity", *(m.lstrip("_") for m in objective)]
    names = list(dict.fromkeys(m for m in wanted if report.top and m in report.top[0]["metrics"]))
    rows = [
        [
            str(row["trial"]),
            str(row["role"]),
            f"{row['score']:.4f}",
            describe_params(row["params"]),
            *[f"{row['metrics'].get(n, float('nan')):.4g}" for n in names],
        ]
        for row in report.top
    ]
    return output.table(
        f"top configurations of {report.study_name}",
        ["trial", "role", "score", "params", *names],
        rows,
        keep={"params"},
    )


def finish(
    report: Any,
    settings: Any,
    storage: str | None,
    out_dir: Path | None,
    device: str | None,
    as_json: bool,
    quiet: bool,
) -> None:
    """The plots and the summary (or JSON) of a finished search; plots go to ``out_dir``, else to
    ``tfg-output/<safe_name(study)>`` (one folder inside tfg-output, whatever the study name)."""
    from tfg_search.cli.report import plot_search
    from tfg_search.run.dashboard import attach_grids
    from tfg_search.run.settings import DEFAULT_TOP_K
    from tfg_search.store.studies import load_search

    folder = out_dir or Path("tfg-output") / safe_name(report.study_name)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise TFGSearchError(
            f"the search is done (study {report.study_name!r}) but its plots cannot be written to "
            f"{folder} ({err.strerror or err}); rerun with another --out-dir"
        ) from None
    studies = load_search(storage, report.study_name)
    plot = plot_search(studies, folder / "search.png", report.ranking, settings.top_k or DEFAULT_TOP_K)
    task, best = draw_samples(
        settings.task,
        settings.task_options,
        settings.target,
        report.best_config,
        64,
        settings.seed + 2,
        settings.steps,
        device,
    )
    grid = save_grid(task, settings.target, best.samples, folder / "best-samples.png")

    def final_grid(config: Any, path: Path) -> Path:  # another final's samples, on the same seed
        drawn = draw_samples(
            settings.task, settings.task_options, settings.target, config, 64, settings.seed + 2,
            settings.steps, device,
        )[1]  # fmt: skip
        return save_grid(task, settings.target, drawn.samples, path)

    # the dashboard shows them (--artifact-dir tfg-artifacts)
    attach_grids(studies, report.best_role, report.best_trial, grid, final_grid, folder)
    payload = {
        "study": report.study_name,
        "storage": report.storage,
        "best": {
            "trial": report.best_trial,
            "role": report.best_role,
            "score": report.best_score,
            "config": report.best_config.to_dict(),
            "metrics": report.best_metrics,
        },
        "trials": {
            "search": report.counts.search,
            "final": report.counts.final,
            "failed": report.counts.failed,
            "interrupted": report.counts.interrupted,
            "environment": report.counts.environment,
        },
        "wall_time_s": round(report.wall_time_s, 2),
        "compute": report.compute,
        "files": {"search_plot": str(plot), "samples": str(grid)},
    }
    if as_json:
        out.print_json(json.dumps(payload))
        return
    if not quiet:
        out.print(top_table(report, studies.info.settings["objective"]))
    cfg = report.best_config
    out.print(
        f"best ({report.best_role} trial {report.best_trial}): score {report.best_score:.4f}  "
        f"rho={cfg.rho:g} mu={cfg.mu:g} gamma={cfg.gamma:g} n_recur={cfg.n_recur} n_iter={cfg.n_iter}"
    )
    out.print("metrics: " + ", ".join(f"{k}={v:.4g}" for k, v in report.best_metrics.items()))
    c = report.counts
    extra = "".join(
        f", {n} {what}"
        for n, what in ((c.interrupted, "interrupted"), (c.environment, "failed on the machine"))
        if n
    )
    out.print(
        f"{c.search} search + {c.final} final trials ({c.failed} failed{extra}) in "
        f"{report.wall_time_s:.1f} s; study '{escape(report.study_name)}' in {escape(report.storage)}"
    )
    passes = report.compute.get("passes", {})
    decoder = (  # a latent model's VAE decoder passes
        f", {passes['decoder']:,} decoder passes ({passes.get('decoder_backward', 0):,} with backward)"
        if "decoder" in passes
        else ""
    )
    out.print(
        f"compute: {passes.get('denoiser', 0):,} denoiser passes ({passes.get('denoiser_backward', 0):,} "
        f"with backward), {passes.get('predictor', 0):,} predictor passes{decoder}, over all the "
        "study's trials"
    )
    if report.transfer:
        out.print(escape(transfer_line(report.transfer)))
    for reason in c.reasons[:3]:
        out.print(f"machine failure: {escape(reason[:300])}")
    out.print(f"wrote {escape(str(plot))} and {escape(str(grid))}")


def transfer_line(transfer: dict[str, Any]) -> str:
    """One line on what a search started from (its summary's ``transfer``)."""
    sources = transfer.get("sources") or []
    targets = ", ".join(str(s["target"]) for s in sources[:6]) + (", ..." if len(sources) > 6 else "")
    start = transfer.get("start") or {}
    passes = (start.get("passes") or {}).get("denoiser", 0)
    return (
        f"transfer: started from {len(sources)} earlier search(es) of other targets ({targets}); "
        f"its start: {start.get('trials', 0)} trials, {passes:,} denoiser passes (--no-transfer: cold)"
    )


def draw_samples(
    task_name: str,
    task_options: Any,
    target: str,
    config: Any,
    n: int,
    seed: int,
    steps: int | None,
    device: str | None,
) -> tuple[Any, Any]:
    """(task, its evaluation of ``n`` samples of ``config`` with their metrics and samples): the
    service's one evaluation path (:func:`tfg_search.run.evaluation.evaluate`)."""
    from tasks import get_task
    from tfg_search.run.evaluation import evaluate

    task = get_task(task_name, task_options)
    result = evaluate(
        task, target, config, n, seed, device=device, num_inference_steps=steps, return_samples=True
    )
    return task, result


def save_grid(task: Any, target: str, samples: Any, path: Path) -> Path:
    """Samples as a PNG (an image grid, or a scatter plot with the target's reference points)."""
    from tfg_search.cli.images import save_samples

    reference = None
    if samples is not None and samples.dim() == 2:
        try:
            reference = task.reference(target)
        except TFGSearchError:
            reference = None
    save_samples(samples, path, title=f"{task.name} target {target}", reference=reference)
    return path

"""Pictures and tables of a study: the search plot (score of each trial by round, the top marked)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from optuna.trial import TrialState

from tfg_search.store.layout import FINAL, SEARCH
from tfg_search.store.studies import SearchStudies


def describe_params(params: dict[str, Any]) -> str:
    """``rho=0.5 mu=2 gamma=0.001`` (schedules abbreviated: ``rho=0.5/dec``)."""
    parts = []
    for name, value in params.items():
        if name.endswith("_schedule"):
            continue
        text = f"{name}={value:.4g}"
        schedule = params.get(f"{name}_schedule")
        if schedule:
            text += f"/{schedule[:3]}"
        parts.append(text)
    return " ".join(parts)


def plot_search(studies: SearchStudies, path: Path, ranking: list[int], top_k: int) -> Path:
    """Save a PNG of the search: every search trial's score by round, the top ``top_k`` of the
    search's own ``ranking`` (search-trial numbers, best first) ringed, the final re-runs at the
    right, failed trials as crosses at the bottom."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = studies.records()
    searched = [r for r in records if r.role == SEARCH and r.state.is_finished()]
    finals = [r for r in records if r.role == FINAL and r.ok]
    done = [r for r in searched if r.ok]
    failed = [r for r in searched if r.state == TrialState.FAIL]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    if done:
        ax.scatter(
            [r.round or 0 for r in done],
            [r.value for r in done],
            s=18,
            color="tab:blue",
            label="search trial",
            zorder=2,
        )
    by_number = {r.number: r for r in done}
    top = [by_number[n] for n in ranking[:top_k] if n in by_number]
    if top:
        ax.scatter(
            [r.round or 0 for r in top],
            [r.value for r in top],
            s=110,
            facecolors="none",
            edgecolors="tab:red",
            linewidths=1.5,
            label=f"top {top_k} of the ranking",
            zorder=3,
        )
    rounds = [r.round or 0 for r in searched] or [0]
    final_x = max(rounds) + 1.2
    if finals:
        ax.scatter(
            [final_x] * len(finals),
            [r.value for r in finals],
            marker="*",
            s=140,
            color="tab:green",
            label="final re-run",
            zorder=3,
        )
    if failed:
        floor = min([float(r.value) for r in done] or [0.0])  # type: ignore[arg-type]
        ax.scatter(
            [r.round or 0 for r in failed],
            [floor] * len(failed),
            marker="x",
            color="0.4",
            label="failed",
            zorder=2,
        )
    ax.set_xlabel("round")
    ax.set_ylabel("score (higher is better)")
    title = studies.name if len(studies.name) <= 90 else studies.name[:89] + "…"
    ax.set_title(title, fontsize=9, parse_math=False)  # a name is text ("$" is no formula)
    ticks = list(range(max(rounds) + 1))
    ax.set_xticks([*ticks, final_x], [*map(str, ticks), "final"])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    with warnings.catch_warnings():  # a study name in a script the font lacks (emoji): boxes
        warnings.filterwarnings("ignore", message="Glyph .* missing from font", category=UserWarning)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
    plt.close(fig)
    return path

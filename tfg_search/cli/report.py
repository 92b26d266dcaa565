"""Pictures and tables of a study: the search plot (score of each trial by round, beam marked)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from tfg_search.storage import ROLE_ATTR, ranked_trials


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


def plot_search(study: optuna.Study, path: Path, top_k: int) -> Path:
    """Save a PNG of the search: every beam trial's score by round, the final beam ringed, the
    final re-runs at the right, failed trials as crosses at the bottom."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trials = study.get_trials(deepcopy=False)
    beam = [t for t in trials if t.user_attrs.get(ROLE_ATTR) == "beam" and t.state.is_finished()]
    finals = [t for t in trials if t.user_attrs.get(ROLE_ATTR) == "final" and t.state == TrialState.COMPLETE]
    done = [t for t in beam if t.state == TrialState.COMPLETE and t.value is not None]
    failed = [t for t in beam if t.state == TrialState.FAIL]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    if done:
        ax.scatter(
            [t.user_attrs.get("round", 0) for t in done],
            [t.value for t in done],
            s=18,
            color="tab:blue",
            label="beam trial",
            zorder=2,
        )
    top = ranked_trials(study, "beam")[:top_k]
    if top:
        ax.scatter(
            [t.user_attrs.get("round", 0) for t in top],
            [t.value for t in top],
            s=110,
            facecolors="none",
            edgecolors="tab:red",
            linewidths=1.5,
            label=f"top-{top_k} beam",
            zorder=3,
        )
    rounds = [t.user_attrs.get("round", 0) or 0 for t in beam] or [0]
    final_x = max(rounds) + 1.2
    if finals:
        ax.scatter(
            [final_x] * len(finals),
            [t.value for t in finals],
            marker="*",
            s=140,
            color="tab:green",
            label="final re-run",
            zorder=3,
        )
    if failed:
        floor = min([t.value for t in done] or [0.0])
        ax.scatter(
            [t.user_attrs.get("round", 0) for t in failed],
            [floor] * len(failed),
            marker="x",
            color="0.4",
            label="failed",
            zorder=2,
        )
    ax.set_xlabel("round")
    ax.set_ylabel("score (higher is better)")
    ax.set_title(study.study_name, fontsize=9)
    ticks = list(range(max(rounds) + 1))
    ax.set_xticks([*ticks, final_x], [*map(str, ticks), "final"])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path

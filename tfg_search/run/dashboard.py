"""What optuna-dashboard shows of a search: a note on each of its two studies saying what it holds.

A search is two studies (docs/search.md): ``N:search`` holds the search's trials, ``N`` the final
re-runs whose best is the answer. Someone opening the database in optuna-dashboard sees both,
with their records as JSON text; the notes (optuna-dashboard's own study notes, Markdown, saved
with :func:`optuna_dashboard.save_note` when optuna-dashboard is installed: ``pip install
tfg-search[dashboard]``) say which is which and where the sortable metrics are
(:data:`tfg_search.store.layout.METRIC_PREFIX`). Written once, when a search creates its studies.
"""

from __future__ import annotations

import optuna

from tfg_search.store.layout import METRIC_PREFIX, StudyInfo, search_study_name

ANSWER_NOTE = """\
## tfg-search: the answer of search `{name}`
{task} target {target}, method {method}. This study holds the **final re-runs**: the search's top
configurations evaluated again with {final} samples and fresh seeds; its best trial is the search's
answer (`tfg-search best --study '{name}'`). The search's own trials are in study `{twin}`.

Each trial's record is the user attr `tfg_search:trial`; each metric is also a numeric user attr
`{prefix}<name>` (sortable in the trials table)."""

SEARCH_NOTE = """\
## tfg-search: the search of `{name}`
{task} target {target}, method {method}, search `{search}`. This study holds the **search's
trials** ({samples} samples each; a rung search's trial is one point, its rungs as intermediate
values). Its answer, the final re-runs of its top configurations, is study `{name}`.

Each trial's record is the user attr `tfg_search:trial`; each metric is also a numeric user attr
`{prefix}<name>` (sortable in the trials table)."""


def write_notes(main: optuna.Study, search: optuna.Study, info: StudyInfo) -> bool:
    """Save the two studies' notes; False (nothing written) without optuna-dashboard."""
    try:
        from optuna_dashboard import save_note
    except ImportError:
        return False
    name = main.study_name
    fields = {
        "name": name,
        "twin": search_study_name(name),
        "task": info.task,
        "target": info.target,
        "method": info.method,
        "search": info.settings.get("search", "rungs"),
        "samples": info.settings.get("samples"),
        "final": info.settings.get("final_samples"),
        "prefix": METRIC_PREFIX,
    }
    save_note(main, ANSWER_NOTE.format(**fields))
    save_note(search, SEARCH_NOTE.format(**fields))
    return True

"""What optuna-dashboard shows of a search: a note on each of its two studies saying what it holds,
and the answer's sample grid as an Optuna artifact.

A search is two studies (docs/search.md): ``N:search`` holds the search's trials, ``N`` the final
re-runs whose best is the answer. Someone opening the database in optuna-dashboard sees both,
with their records as JSON text; the notes (optuna-dashboard's own study notes, Markdown, saved
with :func:`optuna_dashboard.save_note` when optuna-dashboard is installed: ``pip install
tfg-search[dashboard]``) say which is which and where the sortable metrics are
(:data:`tfg_search.store.layout.METRIC_PREFIX`). Written once, when a search creates its studies.

The grid of samples a finished search draws with its answer (``best-samples.png``) is attached to
the answer's study as an artifact named after the trial (:func:`attach_grid`) in an
:class:`optuna.artifacts.FileSystemArtifactStore` in :data:`ARTIFACTS`, beside ``tfg-output/``:
``optuna-dashboard sqlite:///tfg-studies.db --artifact-dir tfg-artifacts`` shows it on the study.
"""

from __future__ import annotations

from pathlib import Path

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


ARTIFACTS = Path("tfg-artifacts")
"""The artifact store of the searches run in a folder (beside their ``tfg-output/``)."""


def attach_grid(study: optuna.Study, number: int, grid: Path, store: Path = ARTIFACTS) -> str | None:
    """Attach ``grid`` (the samples of trial ``number``'s configuration) to ``study`` as an artifact
    named ``trial-<number>-<grid name>`` in the folder ``store`` (made if missing), once. (To the
    study: Optuna refuses to change a finished trial, and the grid is drawn once the search ends.)

    Returns:
        the artifact's id (None: it was attached before).
    """
    from optuna.artifacts import FileSystemArtifactStore, get_all_artifact_meta, upload_artifact

    name = f"trial-{number}-{grid.name}"
    if any(m.filename == name for m in get_all_artifact_meta(study)):
        return None
    store.mkdir(parents=True, exist_ok=True)
    named = grid.with_name(name)
    try:
        named.hardlink_to(grid)  # upload_artifact names the artifact after its file
    except OSError:
        named.write_bytes(grid.read_bytes())
    try:
        return upload_artifact(
            artifact_store=FileSystemArtifactStore(str(store)),
            file_path=str(named),
            study_or_trial=study,
            mimetype="image/png",
        )
    finally:
        named.unlink(missing_ok=True)

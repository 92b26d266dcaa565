"""What optuna-dashboard shows of a search: a note on each of its two studies saying what it holds,
and the final trials' sample grids as Optuna artifacts.

A search is two studies (docs/search.md): ``N:search`` holds the search's trials, ``N`` the final
re-runs whose best is the answer. Someone opening the database in optuna-dashboard sees both,
with their records as JSON text; the notes (optuna-dashboard's own study notes, Markdown, saved
with :func:`optuna_dashboard.save_note` when optuna-dashboard is installed: ``pip install
tfg-search[dashboard]``) say which is which and where the sortable metrics are
(:data:`tfg_search.store.layout.METRIC_PREFIX`). Written once, when a search creates its studies.

The grid of samples a finished search draws with its answer (``best-samples.png``) is attached to
the answer's study as an artifact named after the trial (:func:`attach_grid`) in an
:class:`optuna.artifacts.FileSystemArtifactStore` in :data:`ARTIFACTS`, beside ``tfg-output/``,
and so is a grid of every other completed final re-run (``trial-<n>-samples.png``, drawn on the
same seed, :func:`attach_grids`): ``optuna-dashboard sqlite:///tfg-studies.db --artifact-dir
tfg-artifacts`` shows them on the study, to compare the answer with the runner-up by eye.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna

from tfg_search.store.layout import FINAL, METRIC_PREFIX, StudyInfo, search_study_name
from tfg_search.store.record import read_all

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
    named ``trial-<number>-<grid name>`` (the grid's own name when it starts so) in the folder
    ``store`` (made if missing), once. (To the study: Optuna refuses to change a finished trial,
    and the grid is drawn once the search ends.)

    Returns:
        the artifact's id (None: it was attached before).
    """
    from optuna.artifacts import FileSystemArtifactStore, upload_artifact

    prefix = f"trial-{number}-"
    if number in _attached(study):
        return None
    store.mkdir(parents=True, exist_ok=True)
    named = grid if grid.name.startswith(prefix) else grid.with_name(prefix + grid.name)
    if named != grid:  # upload_artifact names the artifact after its file
        try:
            named.hardlink_to(grid)
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
        if named != grid:
            named.unlink(missing_ok=True)


def attach_grids(
    studies: Any,
    best_role: str,
    best_trial: int,
    best_grid: Path,
    draw: Callable[[Any, Path], Path],
    folder: Path,
    store: Path = ARTIFACTS,
) -> list[str]:
    """Attach the answer's grid to the answer's study, and a grid of every other completed final
    re-run to the answer's study ``N`` (``studies``: a :class:`~tfg_search.store.studies.SearchStudies`).
    ``draw(config, path)`` draws the samples of a final's configuration (a
    :class:`~tfg_search.guidance.config.TFGConfig`) into ``path``
    (``folder/trial-<n>-samples.png``); it runs only for a final whose grid is not attached yet, so
    a finished search run again draws and attaches nothing more.

    Returns:
        the ids of the artifacts attached now.
    """
    answer = studies.main if best_role == FINAL else studies.search
    ids = [attach_grid(answer, best_trial, best_grid, store)]
    done = _attached(studies.main)
    for record in read_all(studies.main, role=FINAL):
        if not record.ok or record.number in done or (best_role == FINAL and record.number == best_trial):
            continue
        grid = draw(record.tfg_config(), folder / f"trial-{record.number}-samples.png")
        ids.append(attach_grid(studies.main, record.number, grid, store))
    return [i for i in ids if i is not None]


def _attached(study: optuna.Study) -> set[int]:
    """The trial numbers whose grid is attached to ``study`` (artifacts ``trial-<n>-...``)."""
    from optuna.artifacts import get_all_artifact_meta

    numbers = set()
    for meta in get_all_artifact_meta(study):
        head, _, rest = meta.filename.partition("-")
        number = rest.split("-", 1)[0]
        if head == "trial" and number.isdigit():
            numbers.add(int(number))
    return numbers

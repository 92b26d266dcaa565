"""What a user's own hands (or another launcher) left of a search, said in one line with the way out.

A search is two Optuna studies, ``N`` (its answer) and ``N:search`` (its search; docs/search.md).
A run stopped between their creation leaves ``N:search`` without trials and ``N`` missing or
without its info: :func:`tfg_search.run.coordinator.open_search_study` completes that itself.
Anything else is a user's doing, which a search does not guess at: a study deleted by hand while
its twin keeps trials, or a study whose tfg-search attribute lost its settings.
:func:`check_whole` refuses it in one line with the command that starts over.

A launcher that was paused (SIGSTOP, a suspended laptop) past its lease's time finds on waking
that another launcher took the study over and finished trials it thought its own (Optuna's
``UpdateFinishedTrialError``): :func:`lost_lease` says so in one line; the data is intact.
"""

from __future__ import annotations

from typing import Any

import optuna

from searchers import optuna_internals
from tfg_search.errors import TFGSearchError
from tfg_search.store.database import redact, resolve_storage
from tfg_search.store.layout import STUDY_ATTR, StudyInfo, search_study_name
from tfg_search.store.lease import StudyLease, read_lease


def start_over(storage: str | None, names: list[str]) -> str:
    """The commands that delete ``names`` (the password shown as ``***``: type it in)."""
    shown = redact(resolve_storage(storage))
    return "; ".join(f"optuna delete-study --storage '{shown}' --study-name '{n}'" for n in names)


def check_whole(rdb: optuna.storages.BaseStorage, name: str, storage: str | None) -> None:
    """Refuse search ``name`` when a user took its studies apart (see the module docstring).

    Raises:
        TFGSearchError: one study of the two deleted by hand (the other kept its trials), or a
            study whose tfg-search attribute has no settings; the message names the command
            that starts over, or another ``--study``.
    """
    studies = {s.study_name: s for s in rdb.get_all_studies()}
    twin = search_study_name(name)
    main, search = studies.get(name), studies.get(twin)
    for study in (main, search):
        raw: Any = StudyInfo.stored(study) if study is not None else None
        if study is not None and raw is not None and StudyInfo.parse(raw) is None:
            kept = [n for n in (name, twin) if n in studies]
            raise TFGSearchError(
                f"study {study.study_name!r} has tfg-search's {STUDY_ATTR!r} attribute without its "
                "settings (edited by hand?), so it cannot be continued; to start over delete it: "
                f"{start_over(storage, kept)}; or choose another --study"
            )
    main_info = StudyInfo.of(main) if main is not None else None
    search_info = StudyInfo.of(search) if search is not None else None
    if main_info is not None and not main_info.is_search_study and search is None and main_info.layout >= 2:
        raise TFGSearchError(
            f"search {name!r} lost its search study {twin!r} (deleted by hand?) and cannot be continued; "
            f"its answer study is still there: to start over delete it too: {start_over(storage, [name])}; "
            "or choose another --study"
        )
    if main is None and search is not None and search_info is not None and search_info.main_study == name:
        trials = rdb.get_n_trials(optuna_internals.study_id(search))
        if trials:  # a run stopped before its answer study was made has not run a trial yet
            raise TFGSearchError(
                f"search {name!r} lost its answer study (deleted by hand?) while its search study {twin!r} "
                f"keeps {trials} trial(s); to start over delete that too: {start_over(storage, [twin])}; "
                "or choose another --study"
            )


def lost_lease(lease: StudyLease, name: str) -> TFGSearchError | None:
    """The one line of a launcher whose study was taken over while it was paused (None when this
    launcher still holds its lease: the error is another one)."""
    try:
        if lease.holds():
            return None
        holder = read_lease(lease.study)
    except Exception:  # the database is gone too: not a lost lease to report
        return None
    who = holder.describe() if holder is not None else "another launcher, which has finished since"
    return TFGSearchError(
        f"this launcher lost its lease on study {name!r} while it was paused or cut off (longer than "
        f"the lease's {lease.ttl:g} s): {who} took the search over; the trials stored are intact, "
        "and this run stops; run the same command again once the other has finished to see the answer"
    )

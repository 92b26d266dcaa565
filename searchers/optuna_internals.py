"""The one place where tfg-search reads Optuna's private fields.

Optuna's public API has no way to reach a study's storage, a study's or trial's storage id, or a
distribution's membership test, and tfg-search needs each (below, per function: why, and what the
public alternative would be). Every such read in the library (``searchers``, ``tfg_search``,
``tasks``) goes through this module, and tests/test_optuna_internals.py checks each one against
the installed Optuna, so that an Optuna release that renames a field fails that test by name
instead of some search at run time. Everything else in the library uses public Optuna API: e.g.
``len(study.directions) > 1`` instead of ``study._is_multi_objective()``, and ``study.stop()``
(which raises RuntimeError outside ``optimize``) instead of reading ``study._thread_local``.

This module imports nothing from ``tfg_search``, so ``searchers`` stays importable on its own (and
as an OptunaHub package, see README.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import optuna

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution
    from optuna.storages import BaseStorage
    from optuna.study import Study
    from optuna.trial import FrozenTrial, Trial

__all__ = [
    "OptunaInternalsError",
    "all_trials",
    "contains",
    "new_trial",
    "set_study_system_attr",
    "storage",
    "study_id",
    "study_system_attrs",
    "trial_id",
]


class OptunaInternalsError(RuntimeError):
    """The installed Optuna lacks a private field that tfg-search reads (Optuna changed it)."""


def _read(obj: object, name: str) -> Any:
    try:
        return getattr(obj, name)
    except AttributeError:
        raise OptunaInternalsError(
            f"Optuna {optuna.__version__} has no {type(obj).__name__}.{name}, which tfg-search reads "
            "(searchers/optuna_internals.py): this Optuna version is not supported yet; run "
            "tests/test_optuna_internals.py and adapt that module."
        ) from None


def storage(study: Study) -> BaseStorage:
    """The storage a study reads and writes (``Study._storage``).

    Needed for what the public Study API does not offer: study system attributes (``Study``'s
    ``system_attrs`` and ``set_system_attr`` were removed in Optuna 5), writes to trials that are
    already frozen (user/system attributes, a trial's state without ``Study.tell``, which would
    also run the sampler's ``after_trial`` and log), heartbeats, and reading all trials unfiltered
    (see :func:`all_trials`). No public alternative: ``Trial.storage`` is public, but a Study has
    no such attribute.
    """
    return _read(study, "_storage")


def study_id(study: Study | Any) -> int:
    """The storage id of a study (``Study._study_id``), or of a ``FrozenStudy`` (``_study_id``).

    (``FrozenStudy``, what ``storage.get_all_studies()`` returns, is not exported by Optuna 5.)

    Storage methods take this id. Public alternative:
    ``storage(study).get_study_id_from_name(study.study_name)``, which costs a storage query per
    call; the sampler needs the id on every trial and while waiting at its barrier, so the field is
    read instead (the test checks that both agree).
    """
    return _read(study, "_study_id")


def trial_id(trial: Trial | FrozenTrial) -> int:
    """The storage id of a trial (``Trial._trial_id``, ``FrozenTrial._trial_id``).

    Storage methods take this id, not the trial number, and ``FrozenTrial(...)`` takes it as an
    argument. Public alternative: ``storage.get_trial_id_from_study_id_trial_number(study_id,
    trial.number)``, a storage query per call (the test checks that both agree).
    """
    return _read(trial, "_trial_id")


def study_system_attrs(study: Study) -> dict[str, Any]:
    """The study's system attributes (sampler bookkeeping, the launcher's lease).

    Public storage method on the private :func:`storage` and :func:`study_id`; ``Study`` itself
    has had no ``system_attrs`` since Optuna 5.
    """
    return storage(study).get_study_system_attrs(study_id(study))


def set_study_system_attr(study: Study, key: str, value: Any) -> None:
    """Write one study system attribute (see :func:`study_system_attrs`)."""
    storage(study).set_study_system_attr(study_id(study), key, value)


def all_trials(study: Study) -> list[FrozenTrial]:
    """Every trial of the study, read from storage (not copied: do not mutate them).

    Public alternative: ``study.get_trials(deepcopy=False)``, but a sampler may be handed a
    pruner's view of the study (``HyperbandPruner`` passes a per-bracket study whose
    ``get_trials`` filters trials out), and a TFG sampler must see all trials, as Optuna's own
    ``GridSampler`` does by reading the storage.
    """
    return storage(study).get_all_trials(study_id(study), deepcopy=False)


def new_trial(study: Study) -> Trial:
    """A new RUNNING trial of the study, as ``study.ask()`` makes one, without first looking for
    enqueued (WAITING) trials to run instead.

    ``Study.ask`` first reads the study's WAITING trials (``_pop_waiting_trial_id``: a storage read
    that also re-reads every running trial) and runs the first one it can take; only then does it
    create a trial. A caller that never enqueues trials in a study (tfg-search enqueues none: a
    search study holds the search's own trials, the final re-runs are made RUNNING in the answer
    study) can skip that read: this
    creates the trial in storage and builds the :class:`optuna.Trial` the way ``ask`` does (its
    constructor reads the trial and runs the sampler's ``before_trial``). Public API only
    (``BaseStorage.create_new_trial``, the ``optuna.Trial`` constructor), on the private
    :func:`storage` and :func:`study_id`; tests/test_optuna_internals.py checks it against ``ask``.
    """
    return optuna.Trial(study, storage(study).create_new_trial(study_id(study)))


def contains(distribution: BaseDistribution, value: Any) -> bool:
    """Whether ``distribution`` contains the (external) ``value`` (``BaseDistribution._contains``).

    Optuna's own test of a suggested value: bounds, and the ``step`` grid with its tolerance.
    No public alternative (re-implementing it would drift from Optuna's tolerance);
    ``to_internal_repr`` is public.
    """
    return bool(_read(distribution, "_contains")(distribution.to_internal_repr(value)))

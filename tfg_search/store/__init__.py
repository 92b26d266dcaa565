"""Everything tfg-search stores: the study database, the stored layout, the two studies of a search.

* :mod:`~tfg_search.store.database`: storage URLs (shown without their password) and a checked
  connection; no Optuna.
* :mod:`~tfg_search.store.layout`: the stored layout: study and attribute names, how a trial's
  attributes decode, which studies of a search hold which trials (every layout); no Optuna.
* :mod:`~tfg_search.store.record`: the trial record on Optuna's trials (:class:`TrialRecord`).
* :mod:`~tfg_search.store.studies`: the two Optuna studies of a search (:class:`SearchStudies`).
* :mod:`~tfg_search.store.lease`: one live launcher per study.
* :mod:`~tfg_search.store.query`: the read path of the query commands and the Python API.

Nothing here imports torch or :mod:`tfg_search.run`.
"""

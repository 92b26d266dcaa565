"""Running a search: settings, the coordinator, trials and their evaluation, executors, Ray Tune.

* :mod:`~tfg_search.run.settings`: what defines a search (and so a study);
* :mod:`~tfg_search.run.coordinator`: one process runs a search (ask a round, evaluate, tell);
* :mod:`~tfg_search.run.strategy`: the searches (planning, trial sizes, finals, the ranking);
* :mod:`~tfg_search.run.loop`: the one loop of a search: its trials handed out and told;
* :mod:`~tfg_search.run.evaluation`, :mod:`~tfg_search.run.worker`: a trial's evaluation;
* :mod:`~tfg_search.run.executors`: in this process or on Ray actors;
* :mod:`~tfg_search.run.warm_start`, :mod:`~tfg_search.run.objective`,
  :mod:`~tfg_search.run.threads`, :mod:`~tfg_search.run.tune` (the Ray Tune entry point).
"""

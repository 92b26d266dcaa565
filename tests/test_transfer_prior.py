"""Transfer in the rung search (searchers/transfer.py): the start, the prior, the guard."""

from __future__ import annotations

import math

import numpy as np
import optuna

from searchers import Lattice, RungSchedule, TFGRungSampler
from searchers.surrogate import GaussianProcess
from searchers.transfer import TransferPrior, concordance

SPACE = {"rho": Lattice(0.25, 2.0, 16.0, zero=True), "mu": Lattice(0.25, 2.0, 16.0, zero=True)}
POINTS = [(r, m) for r in range(-1, 7) for m in range(-1, 7)]


def bowl(best: tuple[int, int]):
    return lambda k: -((k[0] - best[0]) ** 2) - 0.5 * (k[1] - best[1]) ** 2


def source(f, keys=POINTS):
    return [(k, float(f(k)), 1.0) for k in keys]


def prior(sources):
    return TransferPrior(sources, points=POINTS, lows=(-1, -1), highs=(6, 6))


def test_the_start_holds_the_sources_answers_best_first():
    p = prior([source(bowl((2, 3))), source(bowl((3, 3)))])
    start = p.start(4)
    assert start[:2] == [(2, 3), (3, 3)] or start[:2] == [(3, 3), (2, 3)]
    assert len(start) == 4 and len(set(start)) == 4


def test_sources_that_rank_like_the_target_shape_the_model():
    f = bowl((2, 3))
    p = prior([source(bowl((2, 4))), source(bowl((3, 3)))])
    seen = [(-1, -1), (0, 5), (4, 0), (6, 6), (1, 2)]
    model = p.model(seen, [f(k) for k in seen], [1.0] * len(seen), lows=(-1, -1), highs=(6, 6))
    mean, _ = model.predict(POINTS)
    assert POINTS[int(np.argmax(mean))] in {(2, 3), (2, 4), (3, 3)}
    cold = GaussianProcess.fit(seen, [f(k) for k in seen], [1.0] * len(seen), lows=(-1, -1), highs=(6, 6))
    assert POINTS[int(np.argmax(cold.predict(POINTS)[0]))] not in {(2, 3), (2, 4), (3, 3)}


def test_misleading_sources_get_no_weight_and_the_model_is_cold():
    f = bowl((2, 3))
    misleading = prior([source(lambda k: -f(k)), source(lambda k: -f(k) + 0.1 * k[0])])
    seen = [(-1, -1), (0, 5), (4, 0), (6, 6), (2, 3), (1, 2)]
    y = [f(k) for k in seen]
    assert not misleading.weights(seen, y).any()
    model = misleading.model(seen, y, [1.0] * len(seen), lows=(-1, -1), highs=(6, 6))
    cold = GaussianProcess.fit(seen, y, [1.0] * len(seen), lows=(-1, -1), highs=(6, 6))
    assert np.allclose(model.predict(POINTS)[0], cold.predict(POINTS)[0])


def test_concordance():
    assert concordance([1, 2, 3, 4], [1, 2, 4, 3]) == 4 / 6
    assert concordance([1], [2]) == 0.0


def _search(transfer, seed=0):
    f = bowl((2, 3))
    sampler = TFGRungSampler(space=SPACE, schedule=RungSchedule(wave=4), seed=seed, transfer=transfer)
    study = optuna.create_study(direction="maximize", sampler=sampler)

    def objective(trial):
        key = (
            SPACE["rho"].nearest(trial.suggest_float("rho", 0, 16)),
            SPACE["mu"].nearest(trial.suggest_float("mu", 0, 16)),
        )
        return sampler.rungs(trial, lambda units, rung: f(key))

    study.optimize(objective)
    return sampler, study


def test_a_sampler_with_history_starts_at_the_answers_and_reports_what_it_used():
    history = [
        {
            "name": "other",
            "points": [
                {"params": {"rho": 1.0, "mu": 2.0}, "score": 0.9, "units": 2.0},
                {"params": {"rho": 0.0, "mu": 0.0}, "score": 0.1, "units": 1.0},
                {"params": {"rho": 1.1, "mu": 0.25}, "score": 0.3, "units": 1.0},  # snapped to 1.0
                {"params": {"rho": 99.0, "mu": 2.0}, "score": 0.5, "units": 1.0},  # outside: dropped
                {"params": {"rho": 0.5}, "score": 0.5, "units": 1.0},  # without mu: dropped
            ],
        }
    ]
    sampler, study = _search(history)
    assert sampler.transfer_report == [{"name": "other", "points": 3, "snapped": 1, "dropped": 2}]
    first = min(study.trials, key=lambda t: t.number)
    assert first.params == {"rho": 1.0, "mu": 2.0}
    assert study.best_params == {"rho": 1.0, "mu": 2.0}  # the optimum, key (2, 3)
    cold_sampler, cold = _search(None)
    assert sampler._fingerprint != cold_sampler._fingerprint  # claims of one never pass for the other
    assert math.isfinite(cold.best_value)

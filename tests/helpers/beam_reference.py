"""An independent, straightforward implementation of the reference beam search, for tests.

Written from docs/algorithm.md, section 5, without using the ``searchers`` package: a loop over
rounds with integer exponent keys. The searcher tests (test_searchers.py, test_searchers_parallel.py)
import it and the objectives below; tests/test_searchers_reference.py checks the reference itself.
"""

from __future__ import annotations

import math
from collections.abc import Callable

# name -> (init, factor, cap)
Space = dict[str, tuple[float, float, float]]
DEFAULT: Space = {"rho": (0.25, 2.0, 8.0), "mu": (0.25, 2.0, 8.0), "gamma": (0.001, 10.0, 1.0)}
STRUCTURES = ["increase", "decrease", "constant"]
START_STRUCTURE = {"rho": "increase", "mu": "increase", "gamma": "decrease"}


def top_exponent(init: float, factor: float, cap: float) -> int:
    """The largest k with init * factor**k <= cap (with a little float slack)."""
    return math.floor(math.log(cap / init) / math.log(factor) + 1e-9)


def reference_search(
    space: Space,
    top_k: int,
    max_rounds: int,
    evaluate: Callable[[dict], float],
    direction: str = "maximize",
    schedules: bool = False,
) -> list[dict]:
    """Return the configurations in the order the reference procedure evaluates them."""
    names = list(space)

    def to_params(key: tuple) -> dict:
        exps, structs = key
        params = {}
        for name, k in zip(names, exps, strict=True):
            init, factor, _ = space[name]
            params[name] = init * factor**k
        if schedules:
            for name, s in zip(names, structs, strict=True):
                params[name + "_schedule"] = s
        return params

    def neighbours(key: tuple) -> list[tuple]:
        exps, structs = key
        out = []
        for i, name in enumerate(names):
            if exps[i] + 1 <= top_exponent(*space[name]):
                new = list(exps)
                new[i] += 1
                out.append((tuple(new), structs))
            if schedules:
                for other in STRUCTURES:
                    if other != structs[i]:
                        new_s = list(structs)
                        new_s[i] = other
                        out.append((exps, tuple(new_s)))
        return out

    structs0 = tuple(START_STRUCTURE.get(n, "constant") for n in names) if schedules else ()
    start = (tuple(0 for _ in names), structs0)
    history: list[tuple[tuple, float | None]] = []  # (key, score or None when failed)
    sign = 1.0 if direction == "maximize" else -1.0
    todo = [start] + [k for k in neighbours(start) if k != start]
    for round_index in range(max_rounds):
        if round_index > 0:
            order = sorted(
                range(len(history)),
                key=lambda i: (
                    history[i][1] is None,
                    -sign * history[i][1] if history[i][1] is not None else 0.0,
                    i,
                ),
            )
            seen = {key for key, _ in history}
            todo = []
            for i in order[:top_k]:
                for candidate in neighbours(history[i][0]):
                    if candidate not in seen and candidate not in todo:
                        todo.append(candidate)
            if not todo:
                break
        for key in todo:
            try:
                score = float(evaluate(to_params(key)))
            except ArithmeticError:
                score = None
            if score is not None and math.isnan(score):
                score = None
            history.append((key, score))
    return [to_params(key) for key, _ in history]


# Objectives over a params dict (deterministic).


def unimodal(p: dict) -> float:
    value = -((math.log2(p["rho"]) - 2.0) ** 2)
    if "mu" in p:
        value -= (math.log2(p["mu"]) - 1.0) ** 2
    if "gamma" in p:
        value -= (math.log10(p["gamma"]) + 2.0) ** 2
    return value


def plateau(p: dict) -> float:
    # Coarse steps: many exact ties.
    return float(min(p["rho"], 1.0) + min(p.get("mu", 0.0), 2.0) + (p.get("gamma", 0.0) > 0.05))


def spread(p: dict) -> float:
    # Rewards moving the parameters apart: beam members rarely share neighbours (worst case: 34).
    value = math.log2(p["rho"]) * 3.0 + math.log10(p.get("gamma", 1.0)) * 0.1
    return value - abs(math.log2(p.get("mu", 1.0)) - 0.5 * math.log2(p["rho"]))


def failing(p: dict) -> float:
    # NaN for some configurations, an exception for others.
    if p["rho"] >= 2.0 and p.get("mu", 1.0) >= 1.0:
        return float("nan")
    if p.get("gamma", 0.0) >= 0.1:
        raise ZeroDivisionError("synthetic failure")
    return p["rho"] * 2.0 + p.get("mu", 0.0)


def with_schedules(p: dict) -> float:
    bonus = {"increase": 0.0, "decrease": 0.3, "constant": 0.6}
    value = unimodal(p)
    for name in ("rho", "mu", "gamma"):
        if name + "_schedule" in p:
            value += bonus[p[name + "_schedule"]]
    return value


def objective_for(score: Callable[[dict], float], names: list[str], schedules: bool = False):
    """An Optuna objective that suggests the usual bounds and returns ``score``."""
    bounds = {"rho": (0.25, 8.0), "mu": (0.25, 8.0), "gamma": (0.001, 1.0), "strength": (0.25, 8)}

    def objective(trial) -> float:
        params = {}
        for name in names:
            low, high = bounds[name]
            params[name] = trial.suggest_float(name, low, high, log=True)
            if schedules:
                params[name + "_schedule"] = trial.suggest_categorical(name + "_schedule", STRUCTURES)
        return score(params)

    return objective


def rugged(p: dict) -> float:
    # An integer hash of the exponents plus a drift: 33 evaluations with the default space, the
    # most possible (see test_worst_case_bound).
    k = (
        round(math.log2(p["rho"] / 0.25)),
        round(math.log2(p["mu"] / 0.25)),
        round(math.log10(p["gamma"] / 0.001)),
    )
    h = ((k[0] * 73856093) ^ (k[1] * 19349663) ^ (k[2] * 83492791) ^ (414 * 2654435761)) % 1009
    return h / 1009 + 0.3 * sum(k)


def same_configs(a: list[dict], b: list[dict]) -> bool:
    """Equal lists of configurations (floats compared with a relative tolerance)."""
    if len(a) != len(b):
        return False
    return all(_same(x, y) for x, y in zip(a, b, strict=True))


def _same(x: dict, y: dict) -> bool:
    if set(x) != set(y):
        return False
    for name, value in x.items():
        if isinstance(value, str) or isinstance(y[name], str):
            if value != y[name]:
                return False
        elif not math.isclose(value, y[name], rel_tol=1e-9):
            return False
    return True


def canonical(configs: list[dict]) -> list[tuple]:
    """Configurations as sorted hashable tuples (floats rounded), for set comparisons."""
    return sorted(
        tuple(sorted((k, v if isinstance(v, str) else round(v, 9)) for k, v in c.items())) for c in configs
    )

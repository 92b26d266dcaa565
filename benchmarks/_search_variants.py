"""Search variants compared by the benchmarks, all on the evaluation cache of ``_cache.py``.

* :func:`grid_search`: every lattice point (the true best of the space at search fidelity).
* :func:`beam_search`: the real ``searchers.TFGBeamSampler`` driven ask-and-tell, with

  - ``mode="crn"``: every candidate on the same chunk seeds (common random numbers, paired
    comparisons; what ``tfg_search.search`` does),
  - ``mode="independent"``: every candidate on its own seeds,
  - ``stages=(1, 2, 4)``: cheaper fidelity (CRN): a round's candidates are first judged on one
    chunk; only those that may still enter the beam (score at that fidelity >= the k-th best score
    at the same fidelity, paired on the same chunks, minus a tolerance ``tol * sqrt(full / m)``)
    get more chunks; the rest are told to the sampler with a score below every fully evaluated
    candidate, so they are never in the beam and never re-run (successive halving inside a round).

* :func:`optuna_search`: Optuna's ``TPESampler`` / ``RandomSampler`` on the same lattice: each
  parameter is ``trial.suggest_int("k_<name>", 0, size - 1)``, its lattice exponent (equivalent to
  ``suggest_float(log=True)`` snapped to the lattice, keeping the order TPE models); repeats of an
  evaluated point cost nothing and do not count, the budget is the number of distinct points.
* :func:`final_reruns`: the top configurations re-run on a fresh seed at the final sample count.

This is benchmark code; the cheaper-fidelity beam is a candidate for the library (see
docs/benchmarks-search.md).
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
from _cache import ChunkEvaluator, Evaluated, Spend, config_key
from optuna.trial import TrialState

from searchers import Lattice, TFGBeamSampler
from tfg_search.guidance.config import TFGConfig
from tfg_search.settings import ResolvedSettings

optuna.logging.set_verbosity(optuna.logging.WARNING)

PENALTY = 100.0
"""Subtracted from the score of a candidate stopped at a lower fidelity (ranks it below the rest)."""
FINAL_SEED = 999
"""Search seed of every final re-run: fresh noise, shared by all variants (paired finals)."""


@dataclass
class SearchRun:
    """One search: what it evaluated, what it spent, what it chose."""

    name: str
    target: str
    seed: int
    evaluations: int
    samples: int
    ranked: list[tuple[dict[str, float], float]]
    """(params, search score) of fully evaluated candidates, best first."""
    wall_s: float = 0.0
    stopped_early: int = 0
    """Candidates stopped at a lower fidelity (cheaper-fidelity variant)."""
    finals: list[tuple[dict[str, float], float, dict[str, float] | None]] = field(default_factory=list)
    """(params, final score, final metrics) of the re-run top configurations."""

    @property
    def chosen(self) -> tuple[dict[str, float], float, dict[str, float] | None]:
        """The best final re-run (the search's answer)."""
        return max(self.finals, key=lambda f: f[1])


def exponents(params: Mapping[str, float], lattices: Mapping[str, Lattice]) -> tuple[int, ...]:
    """The integer lattice exponents of ``params`` (the candidate's key)."""
    return tuple(round(math.log(params[n] / lat.init) / math.log(lat.factor)) for n, lat in lattices.items())


def lattice_points(lattices: Mapping[str, Lattice]) -> list[dict[str, float]]:
    """Every point of the product lattice."""
    names = list(lattices)
    return [
        dict(zip(names, vals, strict=True))
        for vals in itertools.product(*(lattices[n].values() for n in names))
    ]


def grid_search(
    ev: ChunkEvaluator, target: str, resolved: ResolvedSettings, seed: int, chunks: int
) -> SearchRun:
    """Evaluate every lattice point on ``chunks`` chunks of search seed ``seed``."""
    t0 = time.perf_counter()
    points = lattice_points(resolved.lattices())
    spend = Spend(ev.chunk)
    results = ev.evaluate(target, [(resolved.config(p), seed, chunks) for p in points], spend)
    ranked = sorted(zip(points, (r.score for r in results), strict=True), key=lambda x: -x[1])
    return SearchRun("grid", target, seed, len(points), spend.samples, ranked, time.perf_counter() - t0)


def independent_seed(seed: int, number: int) -> int:
    """The search seed of trial ``number`` of run ``seed`` without common random numbers."""
    return 1000 + 1000 * seed + number


def beam_search(
    ev: ChunkEvaluator,
    target: str,
    resolved: ResolvedSettings,
    seed: int,
    chunks: int,
    *,
    mode: str = "crn",
    stages: Sequence[int] | None = None,
    tol: float = 0.02,
    name: str | None = None,
) -> SearchRun:
    """The beam search (``resolved.top_k``, ``resolved.rounds``) with the real sampler.

    Args:
        mode: ``"crn"`` (all candidates on search seed ``seed``) or ``"independent"``.
        stages: increasing chunk counts ending at ``chunks`` (cheaper fidelity; CRN only).
        tol: tolerance of the promotion test at full fidelity (scaled by sqrt(chunks / m)).
    """
    if stages is not None and (mode != "crn" or stages[-1] != chunks or list(stages) != sorted(stages)):
        raise ValueError("stages must increase to `chunks` and need mode='crn'")
    t0 = time.perf_counter()
    lattices = resolved.lattices()
    sampler = TFGBeamSampler(space=lattices, top_k=resolved.top_k, max_rounds=resolved.rounds, seed=seed)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    spend = Spend(ev.chunk)
    full: list[tuple[dict[str, float], TFGConfig, float]] = []
    stopped = 0
    levels = list(stages) if stages is not None else [chunks]
    while not sampler.is_exhausted(study):
        plan = sampler.plan(study)
        if plan.pending == 0:
            break
        trials = [study.ask() for _ in range(plan.pending)]
        params = [
            {n: t.suggest_float(n, lat.init, lat.cap, log=True) for n, lat in lattices.items()}
            for t in trials
        ]
        configs = [resolved.config(p) for p in params]
        seeds = [seed if mode == "crn" else independent_seed(seed, t.number) for t in trials]
        values: dict[int, float] = {}
        active = list(range(len(trials)))
        for m in levels:
            res = ev.evaluate(target, [(configs[i], seeds[i], m) for i in active], spend)
            current = {i: r.score for i, r in zip(active, res, strict=True)}
            if m == levels[-1]:
                values.update(current)
                break
            # paired reference: the fully evaluated candidates on the same first m chunks (no new samples)
            ref = [r.score for r in ev.evaluate(target, [(c, seed, m) for _, c, _ in full])] if full else []
            pool = sorted([*ref, *current.values()], reverse=True)
            kth = pool[resolved.top_k - 1] if len(pool) >= resolved.top_k else -math.inf
            margin = tol * math.sqrt(levels[-1] / m)
            keep = [i for i in active if current[i] >= kth - margin]
            for i in active:
                if i not in keep:
                    values[i] = current[i] - PENALTY
                    stopped += 1
            active = keep
            if not active:
                break
        for i, trial in enumerate(trials):
            v = values[i]
            if not math.isfinite(v):
                study.tell(trial, state=TrialState.FAIL)
                continue
            study.tell(trial, v)
            if v > -PENALTY / 2:
                full.append((params[i], configs[i], v))
    ranked = [(p, v) for p, _, v in sorted(full, key=lambda x: -x[2])]
    evaluations = sum(1 for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.FAIL))
    label = name or ("beam-" + (mode if stages is None else "mf"))
    return SearchRun(
        label, target, seed, evaluations, spend.samples, ranked, time.perf_counter() - t0, stopped
    )


def optuna_search(
    ev: ChunkEvaluator,
    target: str,
    resolved: ResolvedSettings,
    seed: int,
    chunks: int,
    budget: int,
    kind: str,
) -> SearchRun:
    """TPE (sequential ask-and-tell) or random search over the lattice, ``budget`` distinct points.

    All candidates use search seed ``seed`` (common random numbers, like the beam).
    """
    t0 = time.perf_counter()
    lattices = resolved.lattices()
    if kind == "tpe":
        sampler: optuna.samplers.BaseSampler = optuna.samplers.TPESampler(seed=seed)
    elif kind == "random":
        sampler = optuna.samplers.RandomSampler(seed=seed)
    else:
        raise ValueError(f"unknown optuna sampler {kind!r}")
    study = optuna.create_study(direction="maximize", sampler=sampler)
    spend = Spend(ev.chunk)
    seen: dict[tuple[int, ...], float] = {}
    params_of: dict[tuple[int, ...], dict[str, float]] = {}
    size = math.prod(lat.size for lat in lattices.values())
    budget = min(budget, size)
    pending: list[tuple[optuna.Trial, tuple[int, ...]]] = []
    asked = 0
    while len(seen) + len({k for _, k in pending if k not in seen}) < budget and asked < 200 * budget:
        trial = study.ask()
        asked += 1
        ks = tuple(trial.suggest_int(f"k_{n}", 0, lat.size - 1) for n, lat in lattices.items())
        params = {n: lat.value(k) for (n, lat), k in zip(lattices.items(), ks, strict=True)}
        params_of[ks] = params
        if ks in seen:
            _tell(study, trial, seen[ks])
            continue
        if kind == "random":  # independent proposals: evaluate them together at the end
            pending.append((trial, ks))
            continue
        seen[ks] = ev.evaluate_one(target, resolved.config(params), seed, chunks, spend).score
        _tell(study, trial, seen[ks])
    if pending:
        todo = list(dict.fromkeys(k for _, k in pending))
        res = ev.evaluate(target, [(resolved.config(params_of[k]), seed, chunks) for k in todo], spend)
        seen.update({k: r.score for k, r in zip(todo, res, strict=True)})
        for trial, k in pending:
            _tell(study, trial, seen[k])
    ranked = sorted(((params_of[k], v) for k, v in seen.items() if math.isfinite(v)), key=lambda x: -x[1])
    return SearchRun(kind, target, seed, len(seen), spend.samples, ranked, time.perf_counter() - t0)


def _tell(study: optuna.Study, trial: optuna.Trial, value: float) -> None:
    if math.isfinite(value):
        study.tell(trial, value)
    else:
        study.tell(trial, state=TrialState.FAIL)


def final_reruns(
    ev: ChunkEvaluator,
    target: str,
    resolved: ResolvedSettings,
    runs: Sequence[SearchRun],
    top: int,
    final_chunks: int,
    grid_top: int | None = None,
) -> None:
    """Re-run each run's ``top`` best configurations (a grid: ``grid_top``) on the final seed.

    All re-runs of all runs are generated in one batch; results go to ``run.finals``.
    """
    wanted: list[tuple[SearchRun, list[dict[str, float]]]] = []
    for run in runs:
        n = grid_top if (run.name == "grid" and grid_top) else top
        wanted.append((run, [p for p, _ in run.ranked[:n]]))
    configs: dict[str, TFGConfig] = {}
    for _, plist in wanted:
        for p in plist:
            c = resolved.config(p)
            configs.setdefault(config_key(c), c)
    res = ev.evaluate(target, [(c, FINAL_SEED, final_chunks) for c in configs.values()])
    by_key: dict[str, Evaluated] = {config_key(r.config): r for r in res}
    for run, plist in wanted:
        run.finals = [
            (p, by_key[config_key(resolved.config(p))].score, by_key[config_key(resolved.config(p))].metrics)
            for p in plist
        ]


def describe(params: Mapping[str, Any]) -> str:
    """``rho=0.016 mu=0.064 gamma=0.01`` (compact)."""
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())

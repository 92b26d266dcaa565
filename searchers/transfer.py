"""Transfer from earlier searches of other targets: a prior for the rung search's surrogate.

Good guidance strengths are close across the targets of one model (the TFG paper tunes 40
targets over 16 tasks; on the shapes benchmark every pair's best point sits at rho 0 or 0.25 and
mu 1.92 or 3.84: docs/benchmarks-search.md). A *source* is a finished search of another target:
its evaluated points with their scores. The rung search (:mod:`searchers.rungs`) uses its sources
twice:

1. **The start.** Its first round holds the sources' answers (best first, without repeats), then
   the points the sources' models rank highest, up to a round; the earlier methods' points and
   the Sobol design follow in the next rounds of the spread, as in a cold search.
2. **The surrogate.** Each source gets its own Gaussian process (:class:`~searchers.surrogate.
   GaussianProcess`, fitted to the normal scores of its own points, so sources of different score
   scales are comparable). Once this search has :data:`MIN_OBSERVED` points, each source is
   weighted by how well it *ranks* them (the ranking-weighted ensemble of Feurer, Letham and
   Bakshy, 2018: the fraction of concordant pairs, here Kendall's tau, floored at 0): their
   weighted mean is a prior mean, scaled by the least-squares fit of this search's normal scores
   on it (again floored at 0), and this search's own GP models what the prior leaves
   (:class:`PriorModel`). A source whose ranking disagrees with what this search sees gets weight
   0; when every source does, the prior is 0 and the search proceeds exactly as a cold one from
   there (the guard against negative transfer).

Pure numpy: the same records give the same plan (restartable from storage).

Example:
    >>> import numpy as np
    >>> source = [((0,), 0.1, 1.0), ((1,), 0.9, 1.0), ((2,), 0.5, 1.0), ((3,), 0.2, 1.0)]
    >>> prior = TransferPrior([source], points=[(0,), (1,), (2,), (3,)], lows=(0,), highs=(3,))
    >>> prior.start(2)
    [(1,), (2,)]
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .surrogate import GaussianProcess, transformed

Key = tuple[int, ...]
SourcePoints = Sequence[tuple[Key, float, float]]
"""One source: ``(point key, score, units of samples)`` per evaluated point (larger is better)."""

MIN_OBSERVED = 4
"""Points this search must have seen before it weighs its sources (fewer rank nothing)."""

__all__ = ["MIN_OBSERVED", "PriorModel", "SourcePoints", "TransferPrior", "concordance"]


def concordance(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's tau-a of two sequences: (concordant - discordant pairs) / all pairs; 0 for fewer
    than two values.

    Example:
        >>> concordance([1, 2, 3], [10, 20, 30]), concordance([1, 2, 3], [3, 2, 1])
        (1.0, -1.0)
    """
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    n = len(x)
    if n < 2:
        return 0.0
    i, j = np.triu_indices(n, k=1)
    signs = np.sign(x[i] - x[j]) * np.sign(y[i] - y[j])
    return float(signs.sum() / len(i))


class TransferPrior:
    """The sources of a search as models over its lattice points.

    Args:
        sources: each source's points (:data:`SourcePoints`), already keys of this search's space.
        points: every point of the space (the candidates), in the search's lattice order.
        lows, highs, categorical: the key coordinates' ranges, as for :meth:`GaussianProcess.fit`.
    """

    def __init__(
        self,
        sources: Sequence[SourcePoints],
        *,
        points: Sequence[Key],
        lows: Sequence[int],
        highs: Sequence[int],
        categorical: Sequence[bool] | None = None,
    ) -> None:
        self.points = [tuple(p) for p in points]
        self._index = {p: i for i, p in enumerate(self.points)}
        self.sources = [
            [(tuple(k), float(s), float(u)) for k, s, u in src if tuple(k) in self._index] for src in sources
        ]
        self.sources = [src for src in self.sources if src]
        means = []
        for src in self.sources:
            if len(src) < 2:  # one point: it is all the source says (its own best)
                column = np.full(len(self.points), -1.0)
                column[self._index[src[0][0]]] = 1.0
            else:
                model = GaussianProcess.fit(
                    [k for k, _, _ in src],
                    [s for _, s, _ in src],
                    [u for _, _, u in src],
                    lows=lows,
                    highs=highs,
                    categorical=categorical,
                )
                column = model.predict(self.points)[0]
            means.append(column)
        self.means = np.array(means).reshape(len(self.sources), len(self.points))
        """Each source's posterior mean at every point, in its own normal-score units."""

    def __bool__(self) -> bool:
        return bool(self.sources)

    def answers(self) -> list[Key]:
        """Each source's best point (its highest finite score, on most samples among equals), best
        first by that score, without repeats."""
        best: dict[Key, float] = {}
        for src in self.sources:
            finite = [(s, u, k) for k, s, u in src if math.isfinite(s)]
            if finite:
                score, _, key = max(finite, key=lambda t: (t[1], t[0]))
                best[key] = max(best.get(key, -math.inf), score)
        return sorted(best, key=lambda k: -best[k])

    def start(self, count: int) -> list[Key]:
        """The transfer start: the sources' answers, then the points of highest mean over the
        sources' models, ``count`` points in all.

        Example:
            >>> s1 = [((0,), 0.0, 1.0), ((1,), 1.0, 1.0), ((2,), 0.5, 1.0)]
            >>> s2 = [((0,), 0.0, 1.0), ((1,), 0.5, 1.0), ((2,), 1.0, 1.0)]
            >>> TransferPrior([s1, s2], points=[(0,), (1,), (2,)], lows=(0,), highs=(2,)).start(3)
            [(1,), (2,), (0,)]
        """
        chosen = self.answers()[:count]
        if len(chosen) < count and len(self.sources):
            mean = self.means.mean(axis=0)
            for i in sorted(range(len(self.points)), key=lambda i: (-mean[i], i)):
                if len(chosen) >= count:
                    break
                if self.points[i] not in chosen:
                    chosen.append(self.points[i])
        return chosen

    def weights(self, keys: Sequence[Key], y: Sequence[float]) -> np.ndarray:
        """Each source's weight on this search's observations (``y`` in normal scores at
        ``keys``): Kendall's tau between the source's mean and ``y``, floored at 0; all 0 below
        :data:`MIN_OBSERVED` points."""
        if len(keys) < MIN_OBSERVED:
            return np.zeros(len(self.sources))
        index = [self._index[tuple(k)] for k in keys]
        return np.array([max(0.0, concordance(self.means[s, index], y)) for s in range(len(self.sources))])

    def prior(self, keys: Sequence[Key], y: Sequence[float]) -> np.ndarray | None:
        """The prior mean at every point given this search's observations, or None when no
        source ranks them better than chance (the search is then cold)."""
        w = self.weights(keys, y)
        if not w.sum() > 0:
            return None
        mixed = (w[:, None] * self.means).sum(axis=0) / w.sum()
        at = mixed[[self._index[tuple(k)] for k in keys]]
        denominator = float(at @ at)
        scale = max(0.0, float(np.asarray(y, dtype=float) @ at) / denominator) if denominator > 0 else 0.0
        if scale == 0.0:
            return None
        return scale * mixed

    def model(
        self,
        keys: Sequence[Key],
        scores: Sequence[float],
        weights: Sequence[float],
        *,
        lows: Sequence[int],
        highs: Sequence[int],
        categorical: Sequence[bool] | None = None,
    ) -> GaussianProcess | PriorModel:
        """This search's surrogate: a GP of what the sources' prior leaves, or the cold GP (the
        same as :meth:`GaussianProcess.fit`) when the prior is None."""
        y = transformed(scores)
        prior = self.prior(keys, y) if keys else None
        if prior is None:
            return GaussianProcess.fit_transformed(
                keys, y, weights, lows=lows, highs=highs, categorical=categorical
            )
        at = prior[[self._index[tuple(k)] for k in keys]]
        residual = GaussianProcess.fit_transformed(
            keys, y - at, weights, lows=lows, highs=highs, categorical=categorical
        )
        return PriorModel(residual, {p: float(prior[i]) for i, p in enumerate(self.points)})


class PriorModel:
    """A prior mean over the points plus a GP of the residuals (the interface of
    :class:`GaussianProcess` that the rung search uses: :meth:`predict`, :meth:`with_believed`)."""

    def __init__(self, residual: GaussianProcess, prior: dict[Key, float]) -> None:
        self.residual = residual
        self.prior = prior

    def predict(self, keys: Sequence[Key]) -> tuple[np.ndarray, np.ndarray]:
        mean, sd = self.residual.predict(keys)
        return mean + np.array([self.prior[tuple(k)] for k in keys]), sd

    def with_believed(self, keys: Sequence[Key]) -> PriorModel:
        return PriorModel(self.residual.with_believed(keys), self.prior)

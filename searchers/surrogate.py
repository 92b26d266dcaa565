"""A small Gaussian-process surrogate over lattice keys (numpy only, deterministic).

The rung search (:mod:`searchers.rungs`) smooths its noisy small-sample scores with it: a
candidate's score is a few dozen samples' worth of evidence, but its lattice neighbours carry
evidence about it too (guidance strengths one doubling apart give similar samples). The model is
plain GP regression (Rasmussen and Williams, *Gaussian Processes for Machine Learning*, 2006,
algorithm 2.1) with a Matern-5/2 kernel over the key's coordinates:

* an exponent coordinate is scaled to [0, 1] over its lattice (``-1``, the value 0, is one step
  below the lowest positive value), so a length scale of 1 spans the whole lattice;
* a structure coordinate (a schedule) is categorical: distance 0 when equal, else 1;
* every observation carries its own noise variance (a score on ``n`` samples has noise
  ``noise / n`` in units of the transformed scores), so re-evaluations on more samples weigh more;
* the scores enter as the normal scores of their ranks (``Phi^-1((rank - 0.5) / n)``, ties
  averaged; a failure below the worst), not as they are: the model, and so every proposal and
  promotion, is the same for any increasing transform of the objective, and one extreme or
  unbounded score cannot flatten the others (HEBO likewise transforms its scores before fitting
  its GP: Cowen-Rivers et al., 2022).

Length scales and the noise level are chosen by the log marginal likelihood over a fixed grid
(coordinate-wise, two sweeps): no randomness, so a plan recomputed from storage is the same plan.

Example:
    >>> import numpy as np
    >>> gp = GaussianProcess.fit([(0,), (1,), (2,), (3,)], [0.1, 0.5, 0.9, 0.5], [1, 1, 1, 1],
    ...                          lows=(0,), highs=(3,))
    >>> int(np.argmax(gp.predict([(0,), (1,), (2,), (3,)])[0]))
    2
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

import numpy as np

Key = tuple[int, ...]

LENGTH_SCALES = (0.2, 0.35, 0.6, 1.0, 2.0, 5.0)
"""Length scales tried for each coordinate (in units of its whole lattice). None shorter than
0.2 (about two steps of a ten-value lattice): a shorter one lets one lucky small-sample score
pull the whole refinement to itself (measured: docs/benchmarks-search.md)."""
NOISE_LEVELS = (0.1, 0.2, 0.4, 0.8, 1.6)
"""Noise variances tried, per unit of samples, relative to the variance of the scores (at least
0.1: a small-sample score is never taken as exact)."""
FAILED_MARGIN = 1.0
"""A failed evaluation is modelled this far (in normal scores) below the worst finite score."""


class GaussianProcess:
    """GP regression on lattice keys (use :meth:`fit`).

    Args:
        x: keys as coordinates, ``[n, d]`` (see :meth:`coordinates`).
        y: transformed scores, ``[n]`` (:func:`normal_scores`).
        weights: samples behind each score, in units (the noise of a score is ``noise / weight``).
        length: one length scale per coordinate.
        noise: noise variance of one unit of samples, in transformed units.
        categorical: which coordinates are categorical.
        shift, scale: predictions are ``y * scale + shift`` (0 and 1: in transformed units).
    """

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        weights: np.ndarray,
        length: np.ndarray,
        noise: float,
        categorical: np.ndarray,
        shift: float,
        scale: float,
        lows: np.ndarray,
        spans: np.ndarray,
    ) -> None:
        self.x, self.y, self.weights = x, y, weights
        self.length, self.noise = length, noise
        self.categorical = categorical
        self.shift, self.scale = shift, scale
        self.lows, self.spans = lows, spans
        gram = self._kernel(x, x) + np.diag(noise / weights)
        self._chol = np.linalg.cholesky(gram + 1e-9 * np.eye(len(y)))
        self._alpha = _solve(self._chol, y)

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def fit(
        cls,
        keys: Sequence[Key],
        scores: Sequence[float],
        weights: Sequence[float],
        *,
        lows: Sequence[int],
        highs: Sequence[int],
        categorical: Sequence[bool] | None = None,
    ) -> GaussianProcess:
        """Fit to ``scores`` (higher is better; non-finite: failed) of ``keys``.

        Args:
            keys: evaluated keys (a key may repeat: each evaluation is an observation).
            scores: their scores.
            weights: samples behind each score, in units (e.g. 1 for the smallest evaluation).
            lows, highs: the lowest and highest value of each key coordinate.
            categorical: which coordinates are categorical (default: none).
        """
        return cls.fit_transformed(
            keys, transformed(scores), weights, lows=lows, highs=highs, categorical=categorical
        )

    @classmethod
    def fit_transformed(
        cls,
        keys: Sequence[Key],
        y: Sequence[float],
        weights: Sequence[float],
        *,
        lows: Sequence[int],
        highs: Sequence[int],
        categorical: Sequence[bool] | None = None,
    ) -> GaussianProcess:
        """Fit to values already in transformed units (e.g. what a prior mean leaves of the
        normal scores: :mod:`searchers.transfer`), with :meth:`fit`'s grids."""
        d = len(lows)
        cat = np.array(categorical if categorical is not None else [False] * d, dtype=bool)
        lo = np.array(lows, dtype=float)
        spans = np.maximum(np.array(highs, dtype=float) - lo, 1.0)
        x = cls._coordinates(keys, lo, spans, cat)
        return cls._fit(x, np.array(y, dtype=float), np.array(weights, dtype=float), cat, lo, spans)

    @classmethod
    def _fit(
        cls, x: np.ndarray, y: np.ndarray, w: np.ndarray, cat: np.ndarray, lo: np.ndarray, spans: np.ndarray
    ) -> GaussianProcess:
        """Length scales and noise by the log marginal likelihood over the grids."""
        d = x.shape[1]
        length = np.full(d, 0.35)
        noise = 0.2
        best = _log_likelihood(x, y, w, length, noise, cat)
        for _ in range(2):  # coordinate-wise sweeps over the grids
            for i in range(d):
                for value in LENGTH_SCALES:
                    trial = length.copy()
                    trial[i] = value
                    ll = _log_likelihood(x, y, w, trial, noise, cat)
                    if ll > best + 1e-12:
                        best, length = ll, trial
            for value in NOISE_LEVELS:
                ll = _log_likelihood(x, y, w, length, value, cat)
                if ll > best + 1e-12:
                    best, noise = ll, value
        return cls(x, y, w, length, noise, cat, 0.0, 1.0, lo, spans)

    @staticmethod
    def _coordinates(keys: Sequence[Key], lows: np.ndarray, spans: np.ndarray, cat: np.ndarray) -> np.ndarray:
        x = np.array(keys, dtype=float).reshape(len(keys), len(lows))
        return np.where(cat, x, (x - lows) / spans)

    def coordinates(self, keys: Sequence[Key]) -> np.ndarray:
        """Keys as the model's coordinates (exponents scaled to [0, 1], structures as they are)."""
        return self._coordinates(keys, self.lows, self.spans, self.categorical)

    # -- prediction -----------------------------------------------------------------------------
    def _kernel(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return _matern(a, b, self.length, self.categorical)

    def predict(self, keys: Sequence[Key]) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and standard deviation at ``keys``, in the transformed units of the
        scores (order-preserving: a larger mean is a better expected score)."""
        xs = self.coordinates(keys)
        cross = self._kernel(xs, self.x)
        mean = cross @ self._alpha
        v = np.linalg.solve(self._chol, cross.T)
        var = np.clip(1.0 - (v * v).sum(axis=0), 1e-12, None)
        return mean * self.scale + self.shift, np.sqrt(var) * self.scale

    def with_believed(self, keys: Sequence[Key]) -> GaussianProcess:
        """The same model told that ``keys`` scored their posterior mean (one unit of samples
        each): the "kriging believer" of batch Bayesian optimisation (Ginsbourger et al., 2010),
        which lowers the uncertainty around points already chosen for a batch."""
        if not keys:
            return self
        mean, _ = self.predict(keys)
        xs = np.vstack([self.x, self.coordinates(keys)])
        ys = np.concatenate([self.y, (mean - self.shift) / self.scale])
        ws = np.concatenate([self.weights, np.ones(len(keys))])
        return GaussianProcess(
            xs,
            ys,
            ws,
            self.length,
            self.noise,
            self.categorical,
            self.shift,
            self.scale,
            self.lows,
            self.spans,
        )


def transformed(scores: Sequence[float]) -> np.ndarray:
    """Scores in the units the model fits: the normal scores of the finite ones' ranks
    (:func:`normal_scores`), a failure :data:`FAILED_MARGIN` below the worst of them.

    Example:
        >>> [round(float(v), 3) for v in transformed([0.2, float("nan"), 0.9])]
        [-0.674, -1.674, 0.674]
    """
    raw = np.array(scores, dtype=float)
    finite = np.isfinite(raw)
    y = np.zeros(len(raw))
    if finite.any():
        y[finite] = normal_scores(raw[finite])
    worst = float(y[finite].min()) if finite.any() else 0.0
    y[~finite] = worst - FAILED_MARGIN
    return y


def normal_scores(values: np.ndarray) -> np.ndarray:
    """The normal scores of ``values``' ranks: ``Phi^-1((rank - 0.5) / n)``, ties sharing their
    average rank (Blom-like plotting positions; one value scores 0).

    Example:
        >>> [round(float(v), 3) for v in normal_scores(np.array([3.0, -1e9, 7.0, 3.0]))]
        [0.0, -1.15, 1.15, 0.0]
    """
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(1, len(values) + 1, dtype=float)
    for value in np.unique(values):  # ties: the mean of their ranks
        tied = values == value
        ranks[tied] = ranks[tied].mean()
    normal = NormalDist()
    return np.array([normal.inv_cdf((r - 0.5) / len(values)) for r in ranks])


def _matern(a: np.ndarray, b: np.ndarray, length: np.ndarray, cat: np.ndarray) -> np.ndarray:
    diff = a[:, None, :] - b[None, :, :]
    diff = np.where(cat, (np.abs(diff) > 0.5).astype(float), diff) / length
    r = math.sqrt(5.0) * np.sqrt((diff * diff).sum(axis=-1))
    return (1.0 + r + r * r / 3.0) * np.exp(-r)


def _solve(chol: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.linalg.solve(chol.T, np.linalg.solve(chol, y))


def _log_likelihood(
    x: np.ndarray, y: np.ndarray, w: np.ndarray, length: np.ndarray, noise: float, cat: np.ndarray
) -> float:
    gram = _matern(x, x, length, cat) + np.diag(noise / w) + 1e-9 * np.eye(len(y))
    try:
        chol = np.linalg.cholesky(gram)
    except np.linalg.LinAlgError:
        return -math.inf
    alpha = _solve(chol, y)
    return float(-0.5 * y @ alpha - np.log(np.diag(chol)).sum())

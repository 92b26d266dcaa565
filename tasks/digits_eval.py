"""The held-out digits evaluator: PCA features + an RBF SVC with probabilities (scikit-learn).

A different model family from the guiding CNN and trained on a different split (``eval``), so that
adversarial gradients of the guide are not rewarded. It is fitted at load time (about a second,
deterministic: fixed ``random_state``), so no pickle is ever loaded. Its PCA projection is also the
feature extractor of the Frechet distance (:class:`PCAFeatures`, an ``nn.Module`` for torchmetrics).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from torch import nn

from tasks.digits_data import split

N_SVC_COMPONENTS = 30
N_COMPONENTS = 16
"""Dimension of the Frechet-distance features (the leading whitened PCA components)."""


class PCAFeatures(nn.Module):
    """Whitened PCA projection of 8x8 images in [-1, 1] -> ``[B, N_COMPONENTS]`` (float64)."""

    def __init__(self, mean: np.ndarray, components: np.ndarray, scale: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float64))
        w = components / scale[:, None]
        self.register_buffer("weight", torch.as_tensor(w, dtype=torch.float64))
        self.num_features = int(components.shape[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Features of images ``[B, 1, 8, 8]`` (clamped to [-1, 1])."""
        flat = x.detach().clamp(-1, 1).flatten(1).to(torch.float64).cpu()
        return (flat - self.mean) @ self.weight.T


@dataclass(frozen=True)
class DigitsEvaluator:
    """PCA + SVC held-out classifier; ``features`` feeds the Frechet distance."""

    svc: object
    svc_features: PCAFeatures
    features: PCAFeatures

    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities ``[B, 10]`` (float64, CPU)."""
        feats = self.svc_features(x).numpy()
        return torch.from_numpy(self.svc.predict_proba(feats))


@lru_cache(maxsize=1)
def digits_evaluator() -> DigitsEvaluator:
    """The held-out evaluator, fitted once per process on the ``eval`` split."""
    from sklearn.decomposition import PCA
    from sklearn.svm import SVC

    x, y = split("eval")
    flat = x.flatten(1).double().numpy()
    pca = PCA(n_components=N_SVC_COMPONENTS, random_state=0).fit(flat)
    svc_feats = PCAFeatures(pca.mean_, pca.components_, np.ones(N_SVC_COMPONENTS))
    fd_feats = PCAFeatures(
        pca.mean_, pca.components_[:N_COMPONENTS], np.sqrt(pca.explained_variance_[:N_COMPONENTS])
    )
    svc = SVC(C=10.0, gamma="scale", probability=True, random_state=0)
    with warnings.catch_warnings():  # scikit-learn 1.9 deprecates probability=True (still works)
        warnings.simplefilter("ignore", FutureWarning)
        svc.fit(svc_feats(x).numpy(), y.numpy())
    return DigitsEvaluator(svc=svc, svc_features=svc_feats, features=fd_feats)

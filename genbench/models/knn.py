"""k-nearest-neighbour classifier on raw pixels (scikit-learn's KNeighborsClassifier, Minkowski distance).

`predict_proba` is the (optionally distance-weighted) vote share of the k neighbours, so it takes
only a few distinct values: coarse probabilities whose log-loss and ECE the report shows as they
are (nothing is smoothed or clipped here; the pipeline's log-loss clips as scikit-learn does).
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.neighbors import KNeighborsClassifier

from genbench.data import Split
from genbench.models import register
from genbench.models.base import Model, check_fitted, flat


@register("knn")
class KNN(Model):
    """Hyperparameters: n_neighbors (k), weights ("uniform" votes or "distance": 1/distance), p (the
    Minkowski power: 2 Euclidean, 1 Manhattan, which Xiao et al. 2017's Fashion-MNIST baseline uses)."""

    kind = "discriminative"
    constraints = {"n_neighbors": {"low": 1}, "weights": {"choices": ("uniform", "distance")}, "p": {"low": 1}}
    fast_params = {"n_neighbors": 3}

    def __init__(self, n_neighbors: int = 5, weights: str = "distance", p: int = 2):
        self.n_neighbors = n_neighbors
        self.weights = weights
        self.p = p

    def fit(self, train: Split, *, seed: int) -> "KNN":
        # Deterministic: no random draw, `seed` is unused.
        self.num_classes_ = train.num_classes
        self.classifier_ = KNeighborsClassifier(n_neighbors=min(self.n_neighbors, len(train)),
                                                weights=self.weights, p=self.p)
        self.classifier_.fit(flat(train.x), train.y.numpy())
        return self

    def predict_proba(self, x: torch.Tensor) -> np.ndarray:
        check_fitted(self, "classifier_")
        proba = self.classifier_.predict_proba(flat(x))
        out = np.zeros((len(proba), self.num_classes_))  # columns for classes absent from training
        out[:, self.classifier_.classes_] = proba
        return out

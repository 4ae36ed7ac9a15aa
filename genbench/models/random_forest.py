"""Random forest (Breiman 2001) on raw pixels: scikit-learn's RandomForestClassifier.

`predict_proba` is the mean over trees of each leaf's class frequencies. Trees are grown from seeds
drawn from `seed`, so a fit is reproducible for any n_jobs; n_jobs defaults to 1 so that training
time is comparable with the other single-process models.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.ensemble import RandomForestClassifier

from genbench.data import Split
from genbench.models import register
from genbench.models.base import Model, check_fitted, flat


@register("random_forest")
class RandomForest(Model):
    """Hyperparameters: n_estimators (trees), max_depth (null = grow until leaves are pure),
    max_features (features tried per split: "sqrt", "log2" or "all"), n_jobs (worker processes)."""

    kind = "discriminative"
    constraints = {"n_estimators": {"low": 1}, "max_depth": {"low": 1},
                   "max_features": {"choices": ("sqrt", "log2", "all")}, "n_jobs": {"low": -1}}
    fast_params = {"n_estimators": 20}

    def __init__(self, n_estimators: int = 200, max_depth: int | None = None, max_features: str = "sqrt",
                 n_jobs: int = 1):
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.max_features = max_features
        self.n_jobs = n_jobs

    def fit(self, train: Split, *, seed: int) -> "RandomForest":
        self.num_classes_ = train.num_classes
        self.classifier_ = RandomForestClassifier(
            n_estimators=self.n_estimators, max_depth=self.max_depth,
            max_features=None if self.max_features == "all" else self.max_features,
            n_jobs=self.n_jobs, random_state=seed)
        self.classifier_.fit(flat(train.x), train.y.numpy())
        return self

    def predict_proba(self, x: torch.Tensor) -> np.ndarray:
        check_fitted(self, "classifier_")
        proba = self.classifier_.predict_proba(flat(x))
        out = np.zeros((len(proba), self.num_classes_))
        out[:, self.classifier_.classes_] = proba
        return out

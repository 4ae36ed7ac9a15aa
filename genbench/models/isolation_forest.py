"""Isolation forest (Liu, Ting & Zhou 2008, "Isolation forest"): scikit-learn's IsolationForest, an
anomaly baseline for the one-class protocol (Ruff et al. 2018).

`fit` uses the images alone (labels are ignored: the pipeline hands it one class).
`anomaly_score(x) = -score_samples(x)` = 2^(-E[h(x)] / c(n)), the paper's anomaly score in (0, 1]
(short average path length = easy to isolate = anomalous). scikit-learn's `contamination` only sets
the threshold of `predict`, not the scores, so it is not a hyperparameter here.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.ensemble import IsolationForest as SkIsolationForest

from genbench.data import Split
from genbench.models import register
from genbench.models.base import Model, check_fitted, flat


@register("isolation_forest")
class IsolationForest(Model):
    """Hyperparameters: n_estimators (trees), max_samples (sub-sample per tree, at most the training
    size; the paper's psi = 256), max_features (fraction of pixels each tree sees), n_jobs."""

    kind = "anomaly"
    constraints = {"n_estimators": {"low": 1}, "max_samples": {"low": 2},
                   "max_features": {"low": 1e-12, "high": 1.0}, "n_jobs": {"low": -1}}
    fast_params = {"n_estimators": 50}

    def __init__(self, n_estimators: int = 200, max_samples: int = 256, max_features: float = 1.0,
                 n_jobs: int = 1):
        self.n_estimators = n_estimators
        self.max_samples = max_samples
        self.max_features = max_features
        self.n_jobs = n_jobs

    def fit(self, train: Split, *, seed: int) -> "IsolationForest":
        self.detector_ = SkIsolationForest(
            n_estimators=self.n_estimators, max_samples=min(self.max_samples, len(train)),
            max_features=self.max_features, n_jobs=self.n_jobs, random_state=seed)
        self.detector_.fit(flat(train.x))
        return self

    def anomaly_score(self, x: torch.Tensor) -> np.ndarray:
        check_fitted(self, "detector_")
        return -self.detector_.score_samples(flat(x))

"""One-class SVM (Schölkopf et al. 2001, "Estimating the support of a high-dimensional
distribution") with an RBF kernel: scikit-learn's OneClassSVM, an anomaly baseline for the
one-class protocol (Ruff et al. 2018).

`fit` uses the images alone (labels are ignored: the pipeline hands it one class).
`anomaly_score(x) = -decision_function(x)`: positive outside the estimated support.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.svm import OneClassSVM

from genbench.data import Split
from genbench.models import register
from genbench.models.base import Model, check_fitted, flat


@register("ocsvm")
class OCSVM(Model):
    """Hyperparameters: nu (upper bound on the fraction of training outliers, lower bound on the
    fraction of support vectors), gamma_scale (RBF width relative to the data: k(a, b) =
    exp(-gamma |a - b|^2) with gamma = gamma_scale / (D * Var(x)), Var over all training pixel values,
    so one value carries over between image sizes; 1.0 is scikit-learn's gamma="scale"; the absolute
    gamma is stored as `gamma_`)."""

    kind = "anomaly"
    constraints = {"nu": {"low": 1e-12, "high": 1.0}, "gamma_scale": {"low": 1e-12}}
    fast_params = {"nu": 0.1}

    def __init__(self, nu: float = 0.1, gamma_scale: float = 10.0):
        self.nu = nu
        self.gamma_scale = gamma_scale

    def fit(self, train: Split, *, seed: int) -> "OCSVM":
        # Deterministic (libsvm's solver draws nothing): `seed` is unused.
        data = flat(train.x)
        self.gamma_ = self.gamma_scale / (data.shape[1] * max(float(data.var()), 1e-12))
        self.detector_ = OneClassSVM(kernel="rbf", nu=self.nu, gamma=self.gamma_)
        self.detector_.fit(data)
        return self

    def anomaly_score(self, x: torch.Tensor) -> np.ndarray:
        check_fitted(self, "detector_")
        return -self.detector_.decision_function(flat(x))

"""Support vector machine with an RBF kernel (scikit-learn's SVC, i.e. libsvm) and calibrated
class probabilities.

Probabilities: scikit-learn's `CalibratedClassifierCV(SVC(), ensemble=False)` (what scikit-learn
1.9 recommends in place of the deprecated `SVC(probability=True)`). The SVM's one-vs-rest decision
values on a stratified 5-fold cross-validation of the training split (folds shuffled with `seed`)
fit the calibration map; the SVM used for prediction is then refitted on the whole training split.
`calibration` chooses the map:
  - "sigmoid": Platt scaling (Platt 1999, "Probabilistic outputs for support vector machines"), one
    sigmoid per class one-vs-rest, the probabilities renormalised to sum to 1;
  - "temperature": softmax(decision values / T), one temperature fitted by log-loss (Guo et al.
    2017, "On calibration of modern neural networks");
  - "isotonic": isotonic regression per class (Zadrozny & Elkan 2002), renormalised.
`predict_proba` is what the report scores (accuracy is its argmax, which can differ slightly from
the SVM's own one-vs-one vote `predict`).
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.calibration import CalibratedClassifierCV
from sklearn.model_selection import StratifiedKFold
from sklearn.svm import SVC

from genbench.data import Split
from genbench.models import register
from genbench.models.base import Model, check_fitted, flat


@register("svm")
class SVM(Model):
    """Hyperparameters: C (soft-margin penalty), gamma_scale (RBF width relative to the data:
    k(a, b) = exp(-gamma |a - b|^2) with gamma = gamma_scale / (D * Var(x)), Var over all training
    pixel values, so one value carries over between 8x8 and 32x32x3 images; 1.0 is scikit-learn's
    gamma="scale"; the absolute gamma is stored as `gamma_`), calibration
    ("sigmoid", "temperature" or "isotonic": the map from decision values to probabilities)."""

    kind = "discriminative"
    constraints = {"C": {"low": 1e-12}, "gamma_scale": {"low": 1e-12}, "calibration": {"choices": ("sigmoid", "temperature", "isotonic")}}
    folds = 5  # cross-validation folds of the calibration
    fast_params = {"C": 10.0}

    def __init__(self, C: float = 10.0, gamma_scale: float = 1.0, calibration: str = "temperature"):
        self.C = C
        self.gamma_scale = gamma_scale
        self.calibration = calibration

    def fit(self, train: Split, *, seed: int) -> "SVM":
        self.num_classes_ = train.num_classes
        data = flat(train.x)
        self.gamma_ = self.gamma_scale / (data.shape[1] * max(float(data.var()), 1e-12))
        svm = SVC(C=self.C, kernel="rbf", gamma=self.gamma_)
        folds = StratifiedKFold(self.folds, shuffle=True, random_state=seed)
        self.classifier_ = CalibratedClassifierCV(svm, method=self.calibration, cv=folds, ensemble=False)
        self.classifier_.fit(data, train.y.numpy())
        return self

    def predict_proba(self, x: torch.Tensor) -> np.ndarray:
        check_fitted(self, "classifier_")
        proba = self.classifier_.predict_proba(flat(x))
        out = np.zeros((len(proba), self.num_classes_))
        out[:, self.classifier_.classes_] = proba
        return out


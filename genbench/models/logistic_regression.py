"""Multinomial logistic regression on raw pixels (scikit-learn's LogisticRegression)."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression as SkLogisticRegression

from genbench.data import Split
from genbench.models import register
from genbench.models.base import Model, check_fitted, flat


@register("logistic_regression")
class LogisticRegression(Model):
    kind = "discriminative"
    constraints = {"C": {"low": 1e-12}, "max_iter": {"low": 1}}

    def __init__(self, C: float = 1.0, max_iter: int = 2000):
        self.C = C
        self.max_iter = max_iter

    def fit(self, train: Split, *, seed: int) -> "LogisticRegression":
        self.classifier_ = SkLogisticRegression(C=self.C, max_iter=self.max_iter, random_state=seed)
        self.classifier_.fit(flat(train.x), train.y.numpy())
        return self

    def predict_proba(self, x: torch.Tensor) -> np.ndarray:
        check_fitted(self, "classifier_")
        return self.classifier_.predict_proba(flat(x))

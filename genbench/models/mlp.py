"""Multilayer perceptron on raw pixels: scikit-learn's MLPClassifier (ReLU hidden layers, softmax
output, cross-entropy with an L2 penalty `alpha`, Adam).

With early_stopping, scikit-learn holds out 10 % of the training split (drawn from `seed`) and stops
when its accuracy has not improved for 10 epochs; the weights kept are the best ones on that
held-out part. `history_` is the per-epoch training loss (and held-out accuracy when early
stopping), as scikit-learn records it.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier

from genbench.config import ConfigError
from genbench.data import Split
from genbench.models import register
from genbench.models.base import Model, check_fitted, flat


@register("mlp")
class MLP(Model):
    """Hyperparameters: hidden_layer_sizes (list of widths), alpha (L2 penalty), learning_rate_init
    (Adam), batch_size, max_iter (epochs at most), early_stopping (hold out 10 % of train)."""

    kind = "discriminative"
    constraints = {"alpha": {"low": 0.0}, "learning_rate_init": {"low": 1e-12}, "batch_size": {"low": 1},
                   "max_iter": {"low": 1}}
    fast_params = {"hidden_layer_sizes": [64], "max_iter": 30}

    def __init__(self, hidden_layer_sizes: list = [256], alpha: float = 1e-2,  # noqa: B006 (never mutated)
                 learning_rate_init: float = 3e-3, batch_size: int = 128, max_iter: int = 100,
                 early_stopping: bool = False):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.alpha = alpha
        self.learning_rate_init = learning_rate_init
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.early_stopping = early_stopping

    def fit(self, train: Split, *, seed: int) -> "MLP":
        sizes = self.hidden_layer_sizes
        if not sizes or not all(isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in sizes):
            raise ConfigError("params.yaml: 'models.mlp.hidden_layer_sizes' must be a non-empty list of "
                              f"positive integers, got {sizes!r}")
        self.num_classes_ = train.num_classes
        self.classifier_ = MLPClassifier(
            hidden_layer_sizes=tuple(sizes), alpha=self.alpha, learning_rate_init=self.learning_rate_init,
            batch_size=self.batch_size, max_iter=self.max_iter, early_stopping=self.early_stopping,
            random_state=seed)
        with warnings.catch_warnings():  # stopping at max_iter is a choice made in params.yaml
            warnings.simplefilter("ignore", ConvergenceWarning)
            self.classifier_.fit(flat(train.x), train.y.numpy())
        scores = self.classifier_.validation_scores_ if self.early_stopping else None
        self.history_ = [{"epoch": i + 1, "loss": float(loss),
                          **({"heldout_accuracy": float(scores[i])} if scores is not None else {})}
                         for i, loss in enumerate(self.classifier_.loss_curve_)]
        return self

    def predict_proba(self, x: torch.Tensor) -> np.ndarray:
        check_fitted(self, "classifier_")
        proba = self.classifier_.predict_proba(flat(x))
        out = np.zeros((len(proba), self.num_classes_))  # columns for classes absent from training
        out[:, self.classifier_.classes_] = proba
        return out

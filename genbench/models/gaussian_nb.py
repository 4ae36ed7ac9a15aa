"""Gaussian naive Bayes (scikit-learn's GaussianNB) as a generative classifier.

Each class c has an axis-aligned Gaussian p(y | c) = prod_d N(y_d; theta_cd, var_cd) (variances
smoothed by `var_smoothing` times the largest pixel variance, as scikit-learn does) and a prior
p(c) = class frequency. `log_prob` is the exact mixture density log sum_c p(c) p(y | c), the
logsumexp of scikit-learn's `predict_joint_log_proba`; `predict_proba` is Bayes' rule.

Density space: "discrete". Fitted on uniformly dequantised images y = (k + u) / K; the pipeline
turns the density into a bound on the discrete log-likelihood (Theis et al. 2016). Classification
reads the centre of each pixel's dequantisation bin, where the density was fitted. Samples are
drawn from the class-conditionals (given labels, or with labels from the prior) and mapped back to
the image lattice.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.special import logsumexp
from sklearn.naive_bayes import GaussianNB as SkGaussianNB

from genbench.data import Split, dequantize
from genbench.models import register
from genbench.models.base import Model, check_fitted, flat


@register("gaussian_nb")
class GaussianNB(Model):
    kind = "generative"
    likelihood_space = "discrete"
    conditional = True
    constraints = {"var_smoothing": {"low": 0.0}}
    fast_params = {"var_smoothing": 1e-3}  # already fast: one pass over the data

    def __init__(self, var_smoothing: float = 1e-3):
        self.var_smoothing = var_smoothing

    @property
    def likelihood_info(self) -> dict:
        return {"estimator": "exact",
                "method": "exact class-mixture density of Gaussian naive Bayes, log sum_c p(c) prod_d N(y_d; theta_cd, var_cd)",
                "samples": None}

    def fit(self, train: Split, *, seed: int) -> "GaussianNB":
        self.levels_ = train.levels
        self.image_shape_ = train.image_shape
        self.num_classes_ = train.num_classes
        data = flat(dequantize(train.x, train.levels, torch.Generator().manual_seed(seed)))
        self.classifier_ = SkGaussianNB(var_smoothing=self.var_smoothing).fit(data, train.y.numpy())
        self.history_ = []
        return self

    def _joint(self, x: torch.Tensor) -> np.ndarray:
        """log p(c) + log p(y | c), shape (N, num_classes_); -inf for classes absent from training."""
        joint = np.full((len(x), self.num_classes_), -np.inf)
        joint[:, self.classifier_.classes_] = self.classifier_.predict_joint_log_proba(flat(x))
        return joint

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        check_fitted(self, "classifier_")
        return torch.from_numpy(logsumexp(self._joint(x), axis=1))

    def predict_proba(self, x: torch.Tensor) -> np.ndarray:
        check_fitted(self, "classifier_")
        centred = (torch.round(x * (self.levels_ - 1)) + 0.5) / self.levels_
        joint = self._joint(centred)
        return np.exp(joint - logsumexp(joint, axis=1, keepdims=True))

    def sample(self, n: int, *, y: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        check_fitted(self, "classifier_")
        nb = self.classifier_
        if y is None:
            index = torch.multinomial(torch.from_numpy(nb.class_prior_), n, replacement=True, generator=generator)
        else:
            y = np.asarray(torch.as_tensor(y).cpu())
            found = np.searchsorted(nb.classes_, y)
            if len(y) != n or not np.all(nb.classes_[np.clip(found, 0, len(nb.classes_) - 1)] == y):
                raise ValueError(f"gaussian_nb was fitted on classes {nb.classes_.tolist()}; "
                                 f"cannot sample y={np.unique(y).tolist()} (n={n})")
            index = torch.from_numpy(found)
        mean = torch.from_numpy(nb.theta_)[index]
        std = torch.from_numpy(np.sqrt(nb.var_))[index]
        out = mean + std * torch.randn(mean.shape, generator=generator, dtype=torch.float64)
        # Back from the dequantised density space to the image lattice k / (K - 1).
        lattice = torch.clamp(torch.floor(out * self.levels_), 0, self.levels_ - 1) / (self.levels_ - 1)
        return lattice.float().reshape(n, *self.image_shape_)

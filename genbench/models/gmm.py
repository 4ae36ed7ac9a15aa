"""Gaussian mixture (scikit-learn's GaussianMixture, fitted by EM), class-conditional by default:
one mixture per class plus class priors, so it also classifies by Bayes' rule.

Density space: "discrete". It is fitted on uniformly dequantised images y = (k + u) / K and its
`log_prob` is the exact mixture density of y; the pipeline turns that into a bound on the
discrete log-likelihood (Theis et al. 2016).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.special import logsumexp
from sklearn.mixture import GaussianMixture

from genbench.data import Split, dequantize
from genbench.models import register
from genbench.models.base import Model, check_fitted, flat


@register("gmm")
class GMM(Model):
    kind = "generative"
    fast_params = {"n_components": 1, "max_iter": 20}
    likelihood_space = "discrete"
    constraints = {
        "n_components": {"low": 1},
        "covariance_type": {"choices": ("full", "tied", "diag", "spherical")},
        "reg_covar": {"low": 0.0},
        "max_iter": {"low": 1},
    }

    def __init__(self, n_components: int = 2, covariance_type: str = "full", reg_covar: float = 3e-3,
                 max_iter: int = 200, class_conditional: bool = True):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.class_conditional = class_conditional

    @property
    def conditional(self) -> bool:
        """Samples a chosen class (the sample grid gets one row per class)."""
        return len(getattr(self, "classes_", [])) > 1

    @property
    def likelihood_info(self) -> dict:
        what = "class-conditional mixture, log sum_c p(c) p(y|c)" if len(self.classes_) > 1 else "mixture density"
        return {"estimator": "exact", "method": f"exact Gaussian {what}", "samples": None}

    def fit(self, train: Split, *, seed: int) -> "GMM":
        self.levels_ = train.levels
        self.image_shape_ = train.image_shape
        y_dense = flat(dequantize(train.x, train.levels, torch.Generator().manual_seed(seed)))
        labels = train.y.numpy() if self.class_conditional else np.zeros(len(train), dtype=np.int64)
        self.classes_ = np.unique(labels)
        self.log_prior_ = np.log(np.array([np.mean(labels == c) for c in self.classes_]))
        self.mixtures_ = []
        for c in self.classes_:
            members = y_dense[labels == c]
            mixture = GaussianMixture(
                n_components=min(self.n_components, len(members)), covariance_type=self.covariance_type,
                reg_covar=self.reg_covar, max_iter=self.max_iter, random_state=seed,
            )
            self.mixtures_.append(mixture.fit(members))
        self.history_ = [{"epoch": int(m.n_iter_), "neg_lower_bound": float(-m.lower_bound_)} for m in self.mixtures_[:1]]
        return self

    def _class_log_joint(self, x: torch.Tensor) -> np.ndarray:
        """log p(c) + log p(x | c), shape (N, classes)."""
        data = flat(x)
        return np.stack([m.score_samples(data) for m in self.mixtures_], axis=1) + self.log_prior_

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        check_fitted(self, "mixtures_")
        return torch.from_numpy(logsumexp(self._class_log_joint(x), axis=1))

    def predict_proba(self, x: torch.Tensor) -> np.ndarray:
        check_fitted(self, "mixtures_")
        if not self.class_conditional:
            raise AttributeError("predict_proba needs class_conditional: true")
        # Classify the centre of each pixel's dequantisation bin: the density was fitted there.
        centred = (torch.round(x * (self.levels_ - 1)) + 0.5) / self.levels_
        joint = self._class_log_joint(centred)
        return np.exp(joint - logsumexp(joint, axis=1, keepdims=True))

    def sample(self, n: int, *, y: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        check_fitted(self, "mixtures_")
        rng = np.random.default_rng(int(torch.randint(2**31 - 1, (1,), generator=generator)))
        if y is None:
            y_index = rng.choice(len(self.classes_), size=n, p=np.exp(self.log_prior_))
        else:
            y_index = np.searchsorted(self.classes_, np.asarray(y))
            if not np.all(self.classes_[np.clip(y_index, 0, len(self.classes_) - 1)] == np.asarray(y)):
                raise ValueError(f"gmm was fitted on classes {self.classes_.tolist()}; cannot sample y={np.unique(y).tolist()}")
        out = np.empty((n, int(np.prod(self.image_shape_))))
        for index, mixture in enumerate(self.mixtures_):
            rows = np.flatnonzero(y_index == index)
            if len(rows):
                comp = rng.choice(mixture.n_components, size=len(rows), p=mixture.weights_)
                for k in np.unique(comp):
                    which = rows[comp == k]
                    cov = _full_covariance(mixture, k)
                    out[which] = rng.multivariate_normal(mixture.means_[k], cov, size=len(which), method="cholesky")
        # Back from the dequantised density space to the image lattice k / (K - 1).
        levels = np.clip(np.floor(out * self.levels_), 0, self.levels_ - 1) / (self.levels_ - 1)
        return torch.from_numpy(levels).float().reshape(n, *self.image_shape_)


def _full_covariance(mixture: GaussianMixture, k: int) -> np.ndarray:
    cov, kind = mixture.covariances_, mixture.covariance_type
    d = mixture.means_.shape[1]
    if kind == "full":
        return cov[k]
    if kind == "tied":
        return cov
    if kind == "diag":
        return np.diag(cov[k])
    return np.eye(d) * cov[k]

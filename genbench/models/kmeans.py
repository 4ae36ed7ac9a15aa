"""k-means (scikit-learn's KMeans) read as a generative model, class-conditional by default.

k-means is the hard-assignment, zero-variance limit of EM for a spherical Gaussian mixture. To
give it a density we take the mixture that k-means implies: one isotropic Gaussian per centroid,
ONE variance shared by every cluster and every dimension, set to its maximum-likelihood value
given the hard assignments, sigma^2 = inertia / (N * D), and mixing weights equal to the cluster
proportions. `log_prob` is the exact log density of THAT mixture, log sum_k w_k N(y; mu_k,
sigma^2 I) (a logsumexp over clusters; with classes, a further logsumexp over log p(c) + log
p(y | c)). It is exact for the spherical mixture k-means implies, not a likelihood of k-means
itself (which has none). With `class_conditional` (the default) there is one k-means, and one
shared variance, per class, plus the class priors; it classifies by Bayes' rule.

Density space: "discrete". Fitted on uniformly dequantised images y = (k + u) / K; the pipeline
turns the density into a bound on the discrete log-likelihood (Theis et al. 2016). Samples are
drawn from the mixture and mapped back to the image lattice.

The mixture density and sampling (a few lines of numpy/torch) are written here by hand: no
library reads a fitted KMeans as a density.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.special import logsumexp
from sklearn.cluster import KMeans as SkKMeans

from genbench.data import Split, dequantize
from genbench.models import register
from genbench.models.base import Model, check_fitted, flat


@register("kmeans")
class KMeans(Model):
    kind = "generative"
    likelihood_space = "discrete"
    constraints = {
        "n_clusters": {"low": 1},
        "n_init": {"low": 1},
        "max_iter": {"low": 1},
        "min_variance": {"low": 0.0},
    }
    fast_params = {"n_clusters": 3, "n_init": 1, "max_iter": 50}

    def __init__(self, n_clusters: int = 8, n_init: int = 3, max_iter: int = 300, min_variance: float = 1e-6,
                 class_conditional: bool = True):
        self.n_clusters = n_clusters
        self.n_init = n_init
        self.max_iter = max_iter
        self.min_variance = min_variance
        self.class_conditional = class_conditional

    @property
    def conditional(self) -> bool:
        return bool(self.class_conditional)

    @property
    def likelihood_info(self) -> dict:
        what = "class-conditional, log sum_c p(c) p(y|c), " if self.class_conditional else ""
        return {
            "estimator": "exact",
            "method": f"exact density of the spherical Gaussian mixture implied by k-means ({what}one shared "
                      "variance sigma^2 = inertia/(N D) per mixture, weights = cluster proportions)",
            "samples": None,
        }

    def fit(self, train: Split, *, seed: int) -> "KMeans":
        self.levels_ = train.levels
        self.image_shape_ = train.image_shape
        self.num_classes_ = train.num_classes if self.class_conditional else 1
        data = flat(dequantize(train.x, train.levels, torch.Generator().manual_seed(seed)))
        labels = train.y.numpy() if self.class_conditional else np.zeros(len(train), dtype=np.int64)
        self.classes_ = np.unique(labels)
        self.log_prior_ = np.log(np.array([np.mean(labels == c) for c in self.classes_]))
        n_dim = data.shape[1]
        self.centroids_, self.variance_, self.log_weights_ = [], [], []
        for c in self.classes_:
            members = data[labels == c]
            km = SkKMeans(n_clusters=min(self.n_clusters, len(members)), n_init=self.n_init,
                          max_iter=self.max_iter, random_state=seed).fit(members)
            counts = np.bincount(km.labels_, minlength=km.n_clusters).astype(np.float64)
            # Recompute the inertia from the final assignment (the MLE of the shared variance).
            inertia = float(((members - km.cluster_centers_[km.labels_]) ** 2).sum())
            self.centroids_.append(km.cluster_centers_.copy())
            self.variance_.append(max(inertia / (len(members) * n_dim), self.min_variance))
            with np.errstate(divide="ignore"):
                self.log_weights_.append(np.log(counts / counts.sum()))
        self.history_ = []
        return self

    def _class_log_likelihood(self, data: np.ndarray) -> np.ndarray:
        """log p(y | c) for each fitted class, shape (N, len(classes_))."""
        n_dim = data.shape[1]
        out = []
        sq_data = (data ** 2).sum(1, keepdims=True)
        for mu, var, logw in zip(self.centroids_, self.variance_, self.log_weights_):
            sq_dist = np.maximum(sq_data - 2 * data @ mu.T + (mu ** 2).sum(1)[None], 0.0)
            comp = logw[None] - 0.5 * n_dim * math.log(2 * math.pi * var) - sq_dist / (2 * var)
            out.append(logsumexp(comp, axis=1))
        return np.stack(out, axis=1)

    def _joint(self, x: torch.Tensor) -> np.ndarray:
        """log p(c) + log p(y | c), shape (N, num_classes_); -inf for classes absent from training."""
        joint = np.full((len(x), self.num_classes_), -np.inf)
        joint[:, self.classes_] = self._class_log_likelihood(flat(x)) + self.log_prior_
        return joint

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        check_fitted(self, "centroids_")
        return torch.from_numpy(logsumexp(self._joint(x), axis=1))

    def predict_proba(self, x: torch.Tensor) -> np.ndarray:
        check_fitted(self, "centroids_")
        if not self.class_conditional:
            raise AttributeError("predict_proba needs class_conditional: true")
        # Classify the centre of each pixel's dequantisation bin: the density was fitted there.
        centred = (torch.round(x * (self.levels_ - 1)) + 0.5) / self.levels_
        joint = self._joint(centred)
        return np.exp(joint - logsumexp(joint, axis=1, keepdims=True))

    def sample(self, n: int, *, y: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        check_fitted(self, "centroids_")
        class_index = _class_index(self.classes_, self.log_prior_, n, y, generator, "kmeans")
        out = torch.empty(n, int(np.prod(self.image_shape_)), dtype=torch.float64)
        for index in range(len(self.classes_)):
            rows = torch.nonzero(class_index == index).flatten()
            if len(rows):
                weights = torch.from_numpy(np.exp(self.log_weights_[index]))
                comp = torch.multinomial(weights, len(rows), replacement=True, generator=generator)
                mu = torch.from_numpy(self.centroids_[index])[comp]
                noise = torch.randn(mu.shape, generator=generator, dtype=torch.float64)
                out[rows] = mu + math.sqrt(self.variance_[index]) * noise
        # Back from the dequantised density space to the image lattice k / (K - 1).
        lattice = torch.clamp(torch.floor(out * self.levels_), 0, self.levels_ - 1) / (self.levels_ - 1)
        return lattice.float().reshape(n, *self.image_shape_)


def _class_index(classes: np.ndarray, log_prior: np.ndarray, n: int, y: torch.Tensor | None,
                 generator: torch.Generator | None, name: str) -> torch.Tensor:
    """Index into `classes` of each sample: drawn from the prior, or looked up from the labels `y`."""
    if y is None:
        return torch.multinomial(torch.from_numpy(np.exp(log_prior)), n, replacement=True, generator=generator)
    y = np.asarray(torch.as_tensor(y).cpu())
    index = np.searchsorted(classes, y)
    if len(y) != n or not np.all(classes[np.clip(index, 0, len(classes) - 1)] == y):
        raise ValueError(f"{name} was fitted on classes {classes.tolist()}; cannot sample y={np.unique(y).tolist()} "
                         f"(n={n})")
    return torch.from_numpy(index)

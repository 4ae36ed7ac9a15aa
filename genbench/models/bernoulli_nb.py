"""Bernoulli naive Bayes (scikit-learn's BernoulliNB) on binarised images, a generative classifier.

Each class c has independent pixels p(x | c) = prod_d p_cd^x_d (1 - p_cd)^(1 - x_d) with
Laplace/Lidstone smoothing `alpha`, and a prior p(c) = class frequency.

Density space: "binary". The fit reads `binarized_copies` seeded stochastic binarisations of the
training images (each pixel ~ Bernoulli(intensity), Salakhutdinov & Murray 2008), each copy
weighted 1 / binarized_copies so that `alpha` keeps its meaning of pseudo-counts per image; this
approximates dynamic binarisation for a closed-form fit. `binarized_copies: 0` uses the expected
counts instead (the limit of infinitely many copies: the per-class sums of the intensities).
`log_prob` of binary x is exact: log sum_c p(c) p(x | c), the logsumexp of scikit-learn's
`predict_joint_log_proba`.

Classification (`predict_proba`, Bayes' rule) reads the images as they are, in one of two ways
(`predict_input`):
  "expected": the expected class log-joint under the same stochastic binarisation,
    E_{x ~ Bernoulli(image)}[log p(c) + log p(x | c)]; it is linear in x, so it equals the
    naive-Bayes log-joint evaluated at the grey-level intensities (no sampling noise);
  "threshold": the log-joint of the image binarised at 0.5.
Samples are binary images drawn from the class-conditionals (given labels, or from the prior).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.special import logsumexp
from sklearn.naive_bayes import BernoulliNB as SkBernoulliNB

from genbench.data import Split, binarize
from genbench.models import register
from genbench.models.base import Model, check_fitted, flat


@register("bernoulli_nb")
class BernoulliNB(Model):
    kind = "generative"
    likelihood_space = "binary"
    conditional = True
    constraints = {
        "alpha": {"low": 1e-10},
        "binarized_copies": {"low": 0},
        "predict_input": {"choices": ("expected", "threshold")},
    }
    fast_params = {"binarized_copies": 1}

    def __init__(self, alpha: float = 0.3, binarized_copies: int = 5, predict_input: str = "expected"):
        self.alpha = alpha
        self.binarized_copies = binarized_copies
        self.predict_input = predict_input

    @property
    def likelihood_info(self) -> dict:
        return {"estimator": "exact",
                "method": "exact class-mixture probability of Bernoulli naive Bayes, "
                          "log sum_c p(c) prod_d p_cd^x_d (1 - p_cd)^(1 - x_d)",
                "samples": None}

    def fit(self, train: Split, *, seed: int) -> "BernoulliNB":
        self.image_shape_ = train.image_shape
        self.num_classes_ = train.num_classes
        labels = train.y.numpy()
        classifier = SkBernoulliNB(alpha=self.alpha, binarize=None)
        if self.binarized_copies == 0:
            # Expected counts under the stochastic binarisation: BernoulliNB's statistics are the
            # per-class sums of x, whose expectation over x ~ Bernoulli(image) is the sum of the
            # intensities (the limit of infinitely many binarised copies).
            classifier.fit(flat(train.x), labels)
        else:
            gen = torch.Generator().manual_seed(seed)
            weight = np.full(len(labels), 1.0 / self.binarized_copies)
            for _ in range(self.binarized_copies):  # partial_fit accumulates the counts, copy by copy
                classifier.partial_fit(flat(binarize(train.x, gen)), labels, classes=np.unique(labels),
                                       sample_weight=weight)
        self.classifier_ = classifier
        self.history_ = []
        return self

    def _joint(self, data: np.ndarray) -> np.ndarray:
        """log p(c) + log p(x | c), shape (N, num_classes_); -inf for classes absent from training."""
        joint = np.full((len(data), self.num_classes_), -np.inf)
        joint[:, self.classifier_.classes_] = self.classifier_.predict_joint_log_proba(data)
        return joint

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        check_fitted(self, "classifier_")
        return torch.from_numpy(logsumexp(self._joint(flat(x)), axis=1))

    def predict_proba(self, x: torch.Tensor) -> np.ndarray:
        check_fitted(self, "classifier_")
        data = flat(x)
        if self.predict_input == "threshold":
            data = (data >= 0.5).astype(np.float64)
        joint = self._joint(data)
        return np.exp(joint - logsumexp(joint, axis=1, keepdims=True))

    def sample(self, n: int, *, y: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        check_fitted(self, "classifier_")
        nb = self.classifier_
        if y is None:
            index = torch.multinomial(torch.from_numpy(np.exp(nb.class_log_prior_)), n, replacement=True,
                                      generator=generator)
        else:
            y = np.asarray(torch.as_tensor(y).cpu())
            found = np.searchsorted(nb.classes_, y)
            if len(y) != n or not np.all(nb.classes_[np.clip(found, 0, len(nb.classes_) - 1)] == y):
                raise ValueError(f"bernoulli_nb was fitted on classes {nb.classes_.tolist()}; "
                                 f"cannot sample y={np.unique(y).tolist()} (n={n})")
            index = torch.from_numpy(found)
        p = torch.from_numpy(np.exp(nb.feature_log_prob_))[index]
        return torch.bernoulli(p, generator=generator).float().reshape(n, *self.image_shape_)

"""Hidden Markov model over an image's rows (hmmlearn's GaussianHMM), class-conditional by default.

An image (C, H, W) is read top to bottom as a sequence of H observations, each a row of C * W
values; hidden states follow a Markov chain and each emits a Gaussian row (diagonal covariance by
default). With `class_conditional` (the default) there is one HMM per class, fitted by Baum-Welch
on that class's images, plus the class priors; it classifies by Bayes' rule. The chain is ergodic
(any transition); its state means start from a uniform top-to-bottom segmentation of the rows, so
that states begin tied to positions in the image. Baum-Welch runs hmmlearn's scaled
forward-backward (falling back on the log-space one if it underflows); the variances keep
hmmlearn's defaults for their prior (covars_prior 1e-2) and floor `min_covar`.

`log_prob` is exact: log sum_c p(c) p(y | c), where p(y | c) sums over every hidden state path
with the forward algorithm (hmmlearn's `score`, one call per sequence).

Density space: "discrete". Fitted on uniformly dequantised images y = (k + u) / K; the pipeline
turns the density into a bound on the discrete log-likelihood (Theis et al. 2016). Classification
reads the centre of each pixel's dequantisation bin. Samples are drawn row by row from the chain
(hmmlearn's `sample`, per class or with classes from the prior) and mapped back to the lattice.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from hmmlearn.hmm import GaussianHMM
from scipy.special import logsumexp

from genbench.data import Split, dequantize
from genbench.models import register
from genbench.models.base import Model, check_fitted

logging.getLogger("hmmlearn").setLevel(logging.ERROR)  # "not converging" chatter for short fits


@register("hmm")
class HMM(Model):
    kind = "generative"
    likelihood_space = "discrete"
    constraints = {
        "n_states": {"low": 1},
        "n_iter": {"low": 1},
        "covariance_type": {"choices": ("diag", "spherical", "full", "tied")},
        "min_covar": {"low": 0.0},
        "tol": {"low": 0.0},
    }
    fast_params = {"n_states": 2, "n_iter": 3}

    def __init__(self, n_states: int = 16, n_iter: int = 20, covariance_type: str = "diag", min_covar: float = 3e-2,
                 tol: float = 1e-2, class_conditional: bool = True):
        self.n_states = n_states
        self.n_iter = n_iter
        self.covariance_type = covariance_type
        self.min_covar = min_covar
        self.tol = tol
        self.class_conditional = class_conditional

    @property
    def conditional(self) -> bool:
        return bool(self.class_conditional)

    @property
    def likelihood_info(self) -> dict:
        what = "log sum_c p(c) p(y|c), " if self.class_conditional else ""
        return {"estimator": "exact",
                "method": f"exact Gaussian-HMM density over image rows ({what}forward algorithm, Rabiner 1989)",
                "samples": None}

    # --- rows <-> images -------------------------------------------------------------------------
    @staticmethod
    def _rows(x: torch.Tensor) -> np.ndarray:
        """(N, C, H, W) -> (N, H, C * W) float64: one observation per image row."""
        n, c, h, w = x.shape
        return x.permute(0, 2, 1, 3).reshape(n, h, c * w).double().cpu().numpy()

    def fit(self, train: Split, *, seed: int) -> "HMM":
        self.levels_ = train.levels
        self.image_shape_ = train.image_shape
        self.num_classes_ = train.num_classes if self.class_conditional else 1
        rows = self._rows(dequantize(train.x, train.levels, torch.Generator().manual_seed(seed)))
        labels = train.y.numpy() if self.class_conditional else np.zeros(len(train), dtype=np.int64)
        self.classes_ = np.unique(labels)
        self.log_prior_ = np.log(np.array([np.mean(labels == c) for c in self.classes_]))
        height = rows.shape[1]
        self.models_, self.convergence_ = [], []
        for c in self.classes_:
            members = rows[labels == c]
            observations, lengths = members.reshape(-1, members.shape[2]), [height] * len(members)
            try:  # the scaled forward-backward is ~3x faster, but underflows on very unlikely rows
                hmm = self._new_hmm(seed, members, "scaling").fit(observations, lengths)
            except ValueError:
                hmm = self._new_hmm(seed, members, "log").fit(observations, lengths)
            hmm.implementation = "log"  # score (test rows may be far less likely) in log space
            self.models_.append(hmm)
            self.convergence_.append({"class": int(c), "iterations": int(hmm.monitor_.iter),
                                      "converged": bool(hmm.monitor_.converged),
                                      "log_likelihood": float(hmm.monitor_.history[-1])})
        self.history_ = []  # hmmlearn keeps no per-iteration curve; see convergence_
        return self

    def _new_hmm(self, seed: int, members: np.ndarray, implementation: str) -> GaussianHMM:
        """An unfitted HMM whose means start from a uniform segmentation of the rows: state s starts
        as the mean of the rows in the s-th of `n_states` equal bands of the image (deterministic,
        and it tells the states apart by position, which k-means on rows cannot). Tiny pseudo-counts
        (1e-6 of an observation) keep a state that EM leaves empty defined (its mean falls back on
        the mean row, its transition row on uniform)."""
        k, height = self.n_states, members.shape[1]
        rows = members.reshape(-1, members.shape[2])
        band = np.minimum(np.arange(height) * k // height, k - 1)
        means = np.stack([members[:, band == s].reshape(-1, members.shape[2]).mean(0) if np.any(band == s)
                          else rows.mean(0) for s in range(k)])
        hmm = GaussianHMM(n_components=k, covariance_type=self.covariance_type, min_covar=self.min_covar,
                          n_iter=self.n_iter, tol=self.tol, random_state=seed, implementation=implementation,
                          init_params="stc", transmat_prior=1.0 + 1e-6, means_prior=rows.mean(0),
                          means_weight=1e-6)
        hmm.means_ = means
        return hmm

    def _class_log_likelihood(self, x: torch.Tensor) -> np.ndarray:
        """log p(y | c) by the forward algorithm, shape (N, len(classes_))."""
        rows = self._rows(x)
        return np.array([[hmm.score(seq) for hmm in self.models_] for seq in rows]).reshape(len(rows), -1)

    def _joint(self, x: torch.Tensor) -> np.ndarray:
        joint = np.full((len(x), self.num_classes_), -np.inf)
        joint[:, self.classes_] = self._class_log_likelihood(x) + self.log_prior_
        return joint

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        check_fitted(self, "models_")
        return torch.from_numpy(logsumexp(self._joint(x), axis=1))

    def predict_proba(self, x: torch.Tensor) -> np.ndarray:
        check_fitted(self, "models_")
        if not self.class_conditional:
            raise AttributeError("predict_proba needs class_conditional: true")
        centred = (torch.round(x * (self.levels_ - 1)) + 0.5) / self.levels_
        joint = self._joint(centred)
        return np.exp(joint - logsumexp(joint, axis=1, keepdims=True))

    def sample(self, n: int, *, y: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        check_fitted(self, "models_")
        if y is None:
            index = torch.multinomial(torch.from_numpy(np.exp(self.log_prior_)), n, replacement=True,
                                      generator=generator).numpy()
        else:
            y = np.asarray(torch.as_tensor(y).cpu())
            index = np.searchsorted(self.classes_, y)
            if len(y) != n or not np.all(self.classes_[np.clip(index, 0, len(self.classes_) - 1)] == y):
                raise ValueError(f"hmm was fitted on classes {self.classes_.tolist()}; "
                                 f"cannot sample y={np.unique(y).tolist()} (n={n})")
        c, h, w = self.image_shape_
        seeds = torch.randint(2**31 - 1, (n,), generator=generator).tolist()
        rows = np.stack([self.models_[k].sample(h, random_state=s)[0] for k, s in zip(index, seeds)]) if n else \
            np.empty((0, h, c * w))
        # Back from the dequantised density space to the image lattice k / (K - 1).
        lattice = np.clip(np.floor(rows * self.levels_), 0, self.levels_ - 1) / (self.levels_ - 1)
        return torch.from_numpy(lattice).float().reshape(n, h, c, w).permute(0, 2, 1, 3).contiguous()

"""Parzen-window (Gaussian kernel density) log-likelihood estimate from samples (not a registered model).

For models that can sample but not evaluate a density (GANs), Breuleux et al. 2011 ("Quickly
generating representative samples from an RBM-derived process") and Goodfellow et al. 2014
("Generative adversarial nets", Table 1) fit an isotropic Gaussian kernel density to n samples s_i,

    log p(x) = logsumexp_i log N(x; s_i, sigma^2 I) - log n,
    log N(x; s, sigma^2 I) = -||x - s||^2 / (2 sigma^2) - D/2 log(2 pi sigma^2),

with the bandwidth sigma chosen by maximising the mean log-likelihood of held-out (validation)
images. It is a density on R^D (GAN models use it in the "discrete" likelihood space, on dequantised
images), and it is known to be a poor estimate of the log-likelihood in high dimensions (Theis et
al. 2016, "A note on the evaluation of generative models"): every record says so.

Written by hand: scipy's and scikit-learn's KDEs hold full distance matrices in numpy and do not
batch on a GPU; this is a few lines of batched torch, tested against scipy.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

DEFAULT_SIGMAS = tuple(float(s) for s in torch.logspace(-2, 0, 21, dtype=torch.float64))  # 0.01 .. 1


class ParzenWindow:
    """Gaussian KDE on flattened images; `fit` picks the bandwidth on validation images."""

    def __init__(self, batch_size: int = 256):
        self.batch_size = batch_size  # images scored at once: batch_size x n_samples distances in memory

    def fit(self, samples: torch.Tensor, validation: torch.Tensor,
            sigmas: Sequence[float] = DEFAULT_SIGMAS) -> "ParzenWindow":
        """Keep the samples and choose sigma = argmax over `sigmas` of the mean validation log-likelihood."""
        if len(sigmas) == 0 or min(sigmas) <= 0:
            raise ValueError(f"sigmas must be a non-empty sequence of positive bandwidths, got {list(sigmas)}")
        self.samples_ = torch.as_tensor(samples).detach().flatten(1).double().cpu()
        self.sigmas_ = torch.as_tensor(list(sigmas), dtype=torch.float64)
        self.validation_scores_ = self._log_prob_grid(validation, self.sigmas_).mean(0)  # (S,)
        best = int(self.validation_scores_.argmax())
        self.sigma_ = float(self.sigmas_[best])
        return self

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """(N,) log-density in nats of each image under the fitted kernel density (float64, CPU)."""
        return self._log_prob_grid(x, torch.tensor([self.sigma_], dtype=torch.float64))[:, 0]

    def info(self, n_samples: int | None = None) -> dict:
        """The `likelihood_info` record of this estimate."""
        n = len(self.samples_) if n_samples is None else n_samples
        return {
            "estimator": "estimate",
            "method": f"Parzen-window (Gaussian KDE) estimate on {n} samples, bandwidth {self.sigma_:.3g} "
                      f"chosen on held-out training images (Breuleux et al. 2011); known to be unreliable "
                      f"in high dimensions (Theis et al. 2016)",
            "samples": n,
        }

    def _log_prob_grid(self, x: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
        """(N, S) log-density of each image for each bandwidth: the squared distances of a batch of
        images to all samples are computed once and reused for every sigma."""
        samples = self.samples_
        x = torch.as_tensor(x).detach().flatten(1).double().cpu()
        if x.shape[1] != samples.shape[1]:
            raise ValueError(f"images have {x.shape[1]} dimensions, the samples {samples.shape[1]}")
        dim, n = samples.shape[1], len(samples)
        samples_sq = (samples ** 2).sum(1)
        out = torch.empty(len(x), len(sigmas), dtype=torch.float64)
        for start in range(0, len(x), self.batch_size):
            block = x[start:start + self.batch_size]
            # ||x - s||^2 = ||x||^2 + ||s||^2 - 2 x.s, in float64, clamped against rounding below 0
            sq = ((block ** 2).sum(1, keepdim=True) + samples_sq[None, :] - 2 * block @ samples.T).clamp_min(0)
            for j, sigma in enumerate(sigmas.tolist()):
                log_kernel = -sq / (2 * sigma ** 2) - 0.5 * dim * math.log(2 * math.pi * sigma ** 2)
                out[start:start + len(block), j] = torch.logsumexp(log_kernel, dim=1) - math.log(n)
        return out

"""The Parzen-window estimate against a direct scipy computation, its bandwidth choice and normalisation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from genbench.models.parzen import ParzenWindow


def _scipy_log_prob(samples: np.ndarray, x: np.ndarray, sigma: float) -> np.ndarray:
    """log (1/n) sum_i N(x; s_i, sigma^2 I), one Gaussian per sample."""
    dim = samples.shape[1]
    log_kernels = np.stack([multivariate_normal(mean=s, cov=sigma ** 2 * np.eye(dim)).logpdf(x) for s in samples])
    return logsumexp(log_kernels, axis=0) - math.log(len(samples))


def _tiny(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    samples = torch.rand(40, 1, 2, 3, generator=g)
    validation = torch.rand(25, 1, 2, 3, generator=g)
    test = torch.rand(30, 1, 2, 3, generator=g)
    return samples, validation, test


def test_log_prob_matches_scipy():
    samples, validation, test = _tiny()
    parzen = ParzenWindow(batch_size=7).fit(samples, validation)  # several batches
    expected = _scipy_log_prob(samples.flatten(1).double().numpy(), test.flatten(1).double().numpy(), parzen.sigma_)
    got = parzen.log_prob(test)
    assert got.shape == (30,) and got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10)
    # far from every sample: no underflow to -inf (log-sum-exp)
    far = parzen.log_prob(torch.full((2, 1, 2, 3), 10.0))
    assert torch.isfinite(far).all()
    np.testing.assert_allclose(far.numpy(), _scipy_log_prob(samples.flatten(1).double().numpy(), np.full((2, 6), 10.0),
                                                            parzen.sigma_), rtol=1e-10)


def test_sigma_is_the_argmax_of_validation_log_likelihood():
    samples, validation, _ = _tiny(1)
    sigmas = [0.03, 0.06, 0.1, 0.2, 0.4, 1.0]
    parzen = ParzenWindow().fit(samples, validation, sigmas=sigmas)
    flat_samples, flat_val = samples.flatten(1).double().numpy(), validation.flatten(1).double().numpy()
    scores = [_scipy_log_prob(flat_samples, flat_val, s).mean() for s in sigmas]
    np.testing.assert_allclose(parzen.validation_scores_.numpy(), scores, rtol=1e-10)
    assert parzen.sigma_ == sigmas[int(np.argmax(scores))]
    assert sigmas[0] < parzen.sigma_ < sigmas[-1]  # an interior optimum: the grid brackets it
    info = parzen.info()
    assert info["estimator"] == "estimate" and info["samples"] == 40
    assert "Parzen" in info["method"] and "Theis" in info["method"] and f"{parzen.sigma_:.3g}" in info["method"]
    assert parzen.info(1000)["samples"] == 1000
    with pytest.raises(ValueError, match="sigmas"):
        ParzenWindow().fit(samples, validation, sigmas=[])


def test_one_dimensional_density_integrates_to_one():
    g = torch.Generator().manual_seed(2)
    samples = torch.randn(50, 1, 1, 1, generator=g)
    parzen = ParzenWindow(batch_size=4096).fit(samples, torch.randn(50, 1, 1, 1, generator=g), sigmas=[0.1, 0.3, 1.0])
    grid = torch.linspace(-8, 8, 4001, dtype=torch.float64)
    density = parzen.log_prob(grid.reshape(-1, 1, 1, 1)).exp()
    assert float(torch.trapezoid(density, grid)) == pytest.approx(1.0, abs=1e-6)

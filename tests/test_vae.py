"""VAE likelihoods: the IWAE estimate is never below the ELBO, and on a tiny model both are checked
against log p(x) computed by numerical integration over a 1-D latent."""

from __future__ import annotations

import itertools
import math

import torch

from genbench.data import Split, binarize
from genbench.models import create_model


def _fit(train: Split, **hyper):
    return create_model("vae", {"epochs": 3, "hidden_dim": 64, **hyper}, device="cpu").fit(train, seed=0)


def test_iwae_is_never_below_the_elbo(tiny_digits):
    train, test = tiny_digits
    vae = _fit(train, iwae_samples=200)
    x = binarize(test.x[:40], torch.Generator().manual_seed(0))
    iwae, elbo = vae.log_prob(x), vae.elbo(x)
    assert torch.isfinite(iwae).all() and torch.isfinite(elbo).all()
    # IWAE with k samples bounds log p(x) more tightly than the ELBO (Burda et al. 2016, theorem 1).
    # The ELBO record is a 1-sample estimate per image, so the bound holds for its expectation: compare
    # the IWAE with the ELBO averaged over 50 draws per image.
    elbo_mean = vae.elbo(x.repeat(50, 1, 1, 1)).reshape(50, -1).mean(0)
    assert iwae.mean() >= elbo.mean()
    assert (iwae >= elbo_mean - 0.05).all()
    torch.testing.assert_close(vae.log_prob(x), iwae)  # a fixed generator: repeatable


def test_trained_vae_beats_untrained(digits_splits):
    train, test = digits_splits["train"], digits_splits["test"]
    x = binarize(test.x[:100], torch.Generator().manual_seed(0))
    untrained = _fit(train, epochs=1, lr=1e-9, iwae_samples=50)
    trained = _fit(train, epochs=10, iwae_samples=50)
    assert trained.log_prob(x).mean() > untrained.log_prob(x).mean() + 5


def test_iwae_matches_integration_over_a_1d_latent():
    """2x2 binary images, 1-D latent: log p(x) = log ∫ p(x|z) N(z; 0, 1) dz on a fine grid."""
    images = torch.tensor(list(itertools.product([0.0, 1.0], repeat=4))).reshape(16, 1, 2, 2)
    train = Split(images.repeat(20, 1, 1, 1), torch.zeros(320, dtype=torch.long), 2, 1)
    vae = _fit(train, latent_dim=1, hidden_dim=16, epochs=20, iwae_samples=20000)
    z = torch.linspace(-8, 8, 4001).reshape(-1, 1)
    with torch.no_grad():
        logits = vae.decoder_(z)  # (grid, 4) Bernoulli logits
        log_prior = -0.5 * z.squeeze(1) ** 2 - 0.5 * math.log(2 * math.pi)
        flat = images.flatten(1)
        log_lik = -(torch.nn.functional.binary_cross_entropy_with_logits(
            logits[None].expand(16, -1, -1), flat[:, None].expand(-1, len(z), -1), reduction="none").sum(-1))
        exact = torch.logsumexp(log_lik + log_prior, dim=1) + math.log(float(z[1] - z[0]))
    estimate = vae.log_prob(images).double()
    torch.testing.assert_close(estimate, exact.double(), atol=0.02, rtol=0)
    assert abs(torch.logsumexp(exact, 0).item()) < 1e-3  # the 16 images' probabilities sum to 1
    elbo_mean = vae.elbo(images.repeat(400, 1, 1, 1)).reshape(400, 16).mean(0)  # expectation of the 1-sample ELBO
    assert (elbo_mean <= exact + 0.01).all()

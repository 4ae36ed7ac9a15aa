"""VAE (IWAE log-likelihood checked against numerical integration) and DCGAN (shapes, training,
determinism). Small models on sklearn digits or tiny synthetic images, so the file runs in seconds."""

from __future__ import annotations

import math

import pytest
import torch

from genbench.config import ConfigError
from genbench.data import Split, binarize, dequantize
from genbench.data import digits
from genbench.models import create_model
from genbench.models.dcgan import DCGAN
from genbench.models.nets import DCGANDiscriminator, DCGANGenerator, upsampling_stages
from genbench.models.vae import VAE


@pytest.fixture(scope="module")
def digit_splits() -> tuple[Split, Split]:
    raw = digits.load()
    x = torch.tensor(raw.train_images).float() / 16
    y = torch.tensor(raw.train_labels)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    train, test = perm[:600], perm[1500:1700]
    return Split(x[train], y[train], 17, 10, "train"), Split(x[test], y[test], 17, 10, "test")


@pytest.fixture(scope="module")
def binary_test(digit_splits) -> torch.Tensor:
    return binarize(digit_splits[1].x, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def trained_vae(digit_splits) -> VAE:
    return VAE(latent_dim=8, hidden_dim=128, epochs=50, batch_size=32, iwae_samples=50,
               device="cpu").fit(digit_splits[0], seed=0)


# --- VAE -----------------------------------------------------------------------------------------


def test_vae_iwae_is_above_elbo_and_deterministic(trained_vae, binary_test):
    log_prob = trained_vae.log_prob(binary_test)
    elbo = trained_vae.elbo(binary_test)
    assert log_prob.shape == elbo.shape == (len(binary_test),)
    assert log_prob.mean() >= elbo.mean()
    assert torch.equal(log_prob, trained_vae.log_prob(binary_test))
    assert torch.equal(elbo, trained_vae.elbo(binary_test))
    assert trained_vae.likelihood_space == "binary"
    info = trained_vae.likelihood_info
    assert info["estimator"] == "estimate" and info["samples"] == 50 and "k=50" in info["method"]
    assert trained_vae.elbo_info["estimator"] == "lower_bound"
    assert len(trained_vae.history_) == 50 and {"loss", "kl", "reconstruction"} <= set(trained_vae.history_[-1])


def test_vae_training_raises_the_likelihood(trained_vae, digit_splits, binary_test):
    untrained = VAE(latent_dim=8, hidden_dim=128, epochs=0, iwae_samples=50, device="cpu").fit(digit_splits[0], seed=0)
    trained_nll = -trained_vae.log_prob(binary_test).mean()
    untrained_nll = -untrained.log_prob(binary_test).mean()
    assert untrained_nll > 40  # ~ 64 log 2 = 44.4 nats for near-uniform pixels
    assert trained_nll < untrained_nll - 10  # ~ 25 nats


def test_vae_sample_encode_and_roundtrip(trained_vae, binary_test, tmp_path):
    samples = trained_vae.sample(7, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (7, 1, 8, 8) and samples.min() >= 0 and samples.max() <= 1
    assert torch.equal(samples, trained_vae.sample(7, generator=torch.Generator().manual_seed(0)))
    assert trained_vae.encode(binary_test).shape == (len(binary_test), 8)
    trained_vae.save(tmp_path)
    loaded = VAE.load(tmp_path)
    assert torch.equal(loaded.log_prob(binary_test[:20]), trained_vae.log_prob(binary_test[:20]))


def test_vae_interpolation_figure_runs_between_two_reconstructions(trained_vae, digit_splits):
    test = digit_splits[1]
    pair = Split(test.x[:2], test.y[:2], 17, 10, "test")
    images, per_row, _labels = trained_vae.figures(pair, generator=torch.Generator().manual_seed(0))["interpolation"]
    assert per_row == 10 and images.shape == (10, 1, 8, 8)
    codes = trained_vae.encode(pair.x)
    ends = trained_vae.decode(codes)
    a = 0 if torch.allclose(images[0], ends[0], atol=1e-5) else 1
    torch.testing.assert_close(images[0], ends[a], atol=1e-5, rtol=0)
    torch.testing.assert_close(images[-1], ends[1 - a], atol=1e-5, rtol=0)
    t = 3 / 9
    middle = trained_vae.decode(((1 - t) * codes[a] + t * codes[1 - a])[None])
    torch.testing.assert_close(images[3:4], middle, atol=1e-5, rtol=0)
    # the samples are decoded codes too: sample() == decode(z ~ N(0, I)) with the same noise
    z = torch.randn((4, 8), generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(trained_vae.sample(4, generator=torch.Generator().manual_seed(3)), trained_vae.decode(z))


def test_vae_gaussian_decoder_gives_a_finite_density(digit_splits):
    train, test = digit_splits
    model = VAE(latent_dim=4, hidden_dim=32, decoder="gaussian", epochs=3, iwae_samples=20, device="cpu")
    model.fit(train, seed=0)
    assert model.likelihood_space == "discrete"
    y = dequantize(test.x, test.levels, generator=torch.Generator().manual_seed(0))
    log_density = model.log_prob(y)
    assert log_density.shape == (len(y),) and torch.isfinite(log_density).all()
    assert log_density.mean() >= model.elbo(y).mean()
    samples = model.sample(5)
    assert samples.min() >= 0 and samples.max() <= 1


def test_vae_hyperparameters_are_checked():
    with pytest.raises(ConfigError):
        create_model("vae", {"decoder": "poisson"})
    with pytest.raises(ConfigError):
        create_model("vae", {"latent_dim": 0})
    assert create_model("vae", {"latent_dim": 3}, device="cpu").get_params()["latent_dim"] == 3


def test_vae_iwae_matches_numerical_integration_on_2x2_images():
    """1-D latent: log p(x) = log int p(x|z) N(z; 0, 1) dz by a Riemann sum on a fine grid is the
    independent reference; IWAE with k = 20000 must agree, and p must sum to 1 over all 16 images."""
    gen = torch.Generator().manual_seed(0)
    prototypes = torch.tensor([[0.9, 0.9, 0.1, 0.1], [0.1, 0.2, 0.8, 0.9], [0.9, 0.1, 0.9, 0.1]])
    x = prototypes[torch.randint(0, 3, (256,), generator=gen)].reshape(-1, 1, 2, 2)
    model = VAE(latent_dim=1, hidden_dim=16, epochs=60, batch_size=32, iwae_samples=20000, device="cpu")
    model.fit(Split(x, torch.zeros(len(x), dtype=torch.long), 2, 1), seed=0)

    images = torch.tensor([[(i >> b) & 1 for b in range(4)] for i in range(16)], dtype=torch.float32)
    z = torch.linspace(-12.0, 12.0, 48001)
    with torch.no_grad():
        log_lik = model.decoder_.log_likelihood(images, z[:, None, None].expand(-1, 16, 1)).double()  # (grid, 16)
    log_prior = -0.5 * (math.log(2 * math.pi) + z.double() ** 2)
    reference = torch.logsumexp(log_lik + log_prior[:, None], dim=0) + math.log(24.0 / 48000)  # exact spacing

    estimate = model.log_prob(images.reshape(16, 1, 2, 2)).double()
    assert torch.allclose(reference.exp().sum(), torch.tensor(1.0, dtype=torch.float64), atol=1e-4)
    assert torch.allclose(estimate, reference, atol=0.01), (estimate - reference)
    assert abs(estimate.exp().sum().item() - 1.0) < 0.02


# --- DCGAN ---------------------------------------------------------------------------------------


def test_upsampling_stages():
    assert [upsampling_stages(s) for s in (8, 28, 32, 64)] == [2, 2, 3, 4]


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32), (1, 9, 9)])
def test_dcgan_networks_are_sized_from_the_image(shape):
    torch.manual_seed(0)
    g, d = DCGANGenerator(shape, latent_dim=10, width=8), DCGANDiscriminator(shape, width=8)
    images = g(torch.randn(5, 10))
    assert images.shape == (5, *shape)
    assert images.min() >= 0 and images.max() <= 1
    assert d(images).shape == (5,)


@pytest.fixture(scope="module")
def small_digits(digit_splits) -> Split:
    train = digit_splits[0]
    return Split(train.x[:256], train.y[:256], train.levels, train.num_classes)


def test_dcgan_trains_and_scores(small_digits, digit_splits):
    model = DCGAN(latent_dim=8, base_channels=8, epochs=3, batch_size=32, parzen_samples=100, device="cpu").fit(small_digits, seed=0)
    assert [h["epoch"] for h in model.history_] == [1, 2, 3]
    for record in model.history_:
        assert {"d_loss", "g_loss", "d_real", "d_fake"} <= set(record)
        assert all(math.isfinite(v) for v in record.values())
    samples = model.sample(6, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (6, 1, 8, 8) and torch.isfinite(samples).all()
    scores = model.anomaly_score(digit_splits[1].x)
    assert scores.shape == (len(digit_splits[1]),) and torch.isfinite(scores).all()
    with pytest.raises(ValueError):
        model.sample(2, y=torch.zeros(2, dtype=torch.long))


def test_dcgan_same_seed_same_samples(small_digits):
    def run(seed):
        model = DCGAN(latent_dim=8, base_channels=8, epochs=1, batch_size=32, parzen_samples=100,
                      device="cpu").fit(small_digits, seed=seed)
        return model.sample(4, generator=torch.Generator().manual_seed(0))

    first = run(0)
    assert torch.equal(first, run(0))
    assert not torch.equal(first, run(1))


def test_vae_with_one_hidden_layer_is_the_pytorch_examples_architecture():
    """784-400-20 with hidden_layers=1: the same parameter count as pytorch/examples' vae/main.py
    (fc1 784->400, fc21/fc22 400->20, fc3 20->400, fc4 400->784)."""
    from genbench.data import Split
    from genbench.models import create_model

    train = Split(torch.rand(8, 1, 28, 28), torch.zeros(8, dtype=torch.long), 256, 10, "train")
    model = create_model("vae", {"latent_dim": 20, "hidden_dim": 400, "hidden_layers": 1, "epochs": 1,
                                 "batch_size": 8, "iwae_samples": 2}, device="cpu").fit(train, seed=0)
    count = sum(p.numel() for net in (model.encoder_, model.decoder_) for p in net.parameters())
    reference = (784 * 400 + 400) + 2 * (400 * 20 + 20) + (20 * 400 + 400) + (400 * 784 + 784)
    assert count == reference

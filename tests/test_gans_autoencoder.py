"""Model-specific checks of the autoencoder, the GANs (gan, dcgan, cgan) and their Parzen estimates."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from genbench.data import Split, dequantize
from genbench.models import create_model, get_model_class
from genbench.models.adversarial import discriminator_loss, generator_loss
from genbench.models.nets import holdout_indices

GENERATORS = ["autoencoder", "gan", "dcgan", "cgan"]


def fast(name, **overrides):
    params = {**get_model_class(name).fast_params, **overrides}
    return create_model(name, params, device="cpu")


def random_split(shape, n=24, levels=256, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(0, levels, (n, *shape), generator=gen).float() / (levels - 1)
    y = torch.arange(n) % 3
    return Split(x, y, levels, 3)


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32)], ids=["8x8", "28x28", "3x32x32"])
@pytest.mark.parametrize("name", GENERATORS)
def test_generators_shape_and_range(name, shape):
    train = random_split(shape)
    model = fast(name, epochs=1, parzen_samples=50) if name != "autoencoder" else fast(name, epochs=1)
    model.fit(train, seed=0)
    gen = torch.Generator().manual_seed(0)
    if name == "cgan":
        images = model.sample(6, y=torch.tensor([0, 1, 2, 0, 1, 2]), generator=gen)
    else:
        images = model.sample(6, generator=gen)
    assert images.shape == (6, *shape) and images.dtype == torch.float32
    assert torch.isfinite(images).all() and images.min() >= 0 and images.max() <= 1
    score = model.anomaly_score(train.x[:5])
    assert score.shape == (5,) and torch.isfinite(score).all()
    if name == "autoencoder":
        assert model.encode(train.x[:5]).shape == (5, model.latent_dim)
        figures = model.figures(train, generator=torch.Generator().manual_seed(0))
        images, nrow, _labels = figures["interpolation"]
        assert images.shape == (8 * 10, *shape) and nrow == 10
        assert images.min() >= 0 and images.max() <= 1
        images, nrow, _labels = figures["reconstructions"]
        assert images.shape[1:] == shape and len(images) % nrow == 0
    else:
        lp = model.log_prob(dequantize(train.x[:5], train.levels, torch.Generator().manual_seed(0)))
        assert lp.shape == (5,) and torch.isfinite(lp).all()
        info = model.likelihood_info
        assert info["estimator"] == "estimate" and info["samples"] == 50 and "Parzen" in info["method"]
        assert model.likelihood_space == "discrete"


def test_generator_losses_follow_their_formulas():
    logits = torch.tensor([-8.0, -2.0, 0.0, 1.5, 6.0])
    d = torch.sigmoid(logits)
    minimax = generator_loss(logits, "minimax")
    non_saturating = generator_loss(logits, "non_saturating")
    torch.testing.assert_close(minimax, torch.log(1 - d).mean())  # Goodfellow et al. eq. 1
    torch.testing.assert_close(non_saturating, -torch.log(d).mean())  # section 3
    assert not torch.allclose(minimax, non_saturating)
    # D's loss: -[log D(x) + log(1 - D(G(z)))]
    real = torch.tensor([2.0, -1.0])
    torch.testing.assert_close(discriminator_loss(real, logits),
                               -torch.log(torch.sigmoid(real)).mean() - torch.log(1 - d).mean())
    # where D confidently rejects a sample the minimax gradient vanishes, the non-saturating one does not
    rejected = torch.tensor([-10.0], requires_grad=True)
    (g_minimax,) = torch.autograd.grad(generator_loss(rejected, "minimax"), rejected)
    (g_ns,) = torch.autograd.grad(generator_loss(rejected, "non_saturating"), rejected)
    assert abs(g_minimax.item()) < 1e-4 and abs(g_ns.item()) > 0.99
    with pytest.raises(ValueError):
        generator_loss(logits, "wasserstein")


def test_gan_minimax_and_d_steps_train(digits_splits):
    train = digits_splits["train"]
    small = Split(train.x[:256], train.y[:256], 17, 10)
    model = fast("gan", generator_loss="minimax", d_steps=2, epochs=2).fit(small, seed=0)
    assert {"d_loss", "g_loss"} <= set(model.history_[0])
    assert len(model.history_) == 2


def test_holdout_indices_partition():
    kept, held = holdout_indices(100, 0.1, seed=3)
    assert len(held) == 10 and len(kept) == 90
    assert sorted(torch.cat([kept, held]).tolist()) == list(range(100))
    assert torch.equal(held, holdout_indices(100, 0.1, seed=3)[1])


def test_gan_parzen_prefers_digits_to_noise(digits_splits):
    train, test = digits_splits["train"], digits_splits["test"]
    model = create_model("gan", {"epochs": 30, "hidden_dim": 128, "parzen_samples": 2000}, device="cpu")
    model.fit(train, seed=0)
    x = dequantize(test.x[:100], test.levels, torch.Generator().manual_seed(0))
    noise = torch.rand(x.shape, generator=torch.Generator().manual_seed(1))
    lp_real, lp_noise = model.log_prob(x), model.log_prob(noise)
    assert torch.isfinite(lp_real).all() and torch.isfinite(lp_noise).all()
    assert lp_real.mean() > lp_noise.mean() + 50
    assert (lp_real.min() > lp_noise.max())
    assert 0 < model.parzen_.sigma_ < 1
    assert model.likelihood_info["samples"] == 2000


def test_cgan_generates_the_requested_class(digits_splits):
    from sklearn.linear_model import LogisticRegression

    train = digits_splits["train"]
    classifier = LogisticRegression(max_iter=1000).fit(train.x.flatten(1).numpy(), train.y.numpy())
    model = create_model("cgan", {"epochs": 40, "hidden_dim": 128, "parzen_samples": 100}, device="cpu")
    model.fit(train, seed=0)
    assert model.conditional and not hasattr(model, "predict_proba")
    y = torch.arange(10).repeat_interleave(30)
    images = model.sample(len(y), y=y, generator=torch.Generator().manual_seed(0))
    predicted = classifier.predict(images.flatten(1).numpy())
    per_class = np.array([(predicted[y.numpy() == c] == c).mean() for c in range(10)])
    assert per_class.mean() > 0.8, per_class
    # with no labels the classes follow the training prior
    unlabelled = model.sample(500, generator=torch.Generator().manual_seed(1))
    counts = np.bincount(classifier.predict(unlabelled.flatten(1).numpy()), minlength=10)
    assert (counts > 0).sum() >= 9
    with pytest.raises(ValueError):
        model.sample(2, y=torch.tensor([0, 10]))


def test_cgan_anomaly_score_is_max_over_seen_classes(digits_splits):
    train = digits_splits["train"]
    ones = train.subset(train.y == 1)
    model = fast("cgan", epochs=1, parzen_samples=20).fit(ones, seed=0)
    assert model.class_prior_[1] == 1
    x = train.x[:7]
    expected = -model.discriminator_(x, torch.ones(7, dtype=torch.long)).detach()
    torch.testing.assert_close(model.anomaly_score(x), expected)
    assert model.sample(10, generator=torch.Generator().manual_seed(0)).shape == (10, 1, 8, 8)


@pytest.fixture(scope="module")
def one_class_autoencoder(digits_splits):
    train = digits_splits["train"]
    zeros = train.subset(train.y == 0)
    model = create_model("autoencoder", {"epochs": 40, "batch_size": 16, "base_channels": 16,
                                         "n_mixture_components": 3},
                         device="cpu")
    return model.fit(zeros, seed=0)


def test_autoencoder_reconstructs_its_class_best(one_class_autoencoder, digits_splits):
    test = digits_splits["test"]
    score = one_class_autoencoder.anomaly_score(test.x)
    normal = test.y == 0
    assert score[normal].mean() < 0.5 * score[~normal].mean(), (score[normal].mean(), score[~normal].mean())
    # AUROC of the score for "not a zero"
    ranks = score.argsort().argsort().double()
    n_pos, n_neg = int((~normal).sum()), int(normal.sum())
    auroc = (ranks[~normal].sum() - n_pos * (n_pos - 1) / 2) / (n_pos * n_neg)
    assert auroc > 0.9, auroc


def test_autoencoder_bce_score_is_the_bernoulli_kl(one_class_autoencoder, digits_splits):
    model = one_class_autoencoder
    x = digits_splits["test"].x[:10]
    r = model.reconstruct(x).double().clamp(1e-6, 1 - 1e-6)
    xd = x.double()
    kl = (torch.xlogy(xd, xd) - xd * torch.log(r)
          + torch.xlogy(1 - xd, 1 - xd) - (1 - xd) * torch.log(1 - r)).flatten(1).sum(1)
    torch.testing.assert_close(model.anomaly_score(x).double(), kl, atol=1e-3, rtol=1e-4)
    assert torch.all(kl >= 0)


def test_interpolation_endpoints_are_the_decoded_codes(one_class_autoencoder, digits_splits):
    model = one_class_autoencoder
    test = digits_splits["test"]
    pair = Split(test.x[:2], test.y[:2], 17, 10, "test")
    images, nrow, _labels = model.figures(pair, generator=torch.Generator().manual_seed(0))["interpolation"]
    assert nrow == 10 and images.shape == (10, 1, 8, 8)
    decoded = model.decode(model.encode(pair.x))
    first, last = images[0], images[-1]
    ends = {0: decoded[0], 1: decoded[1]}
    a = 0 if torch.allclose(first, ends[0], atol=1e-5) else 1
    torch.testing.assert_close(first, ends[a], atol=1e-5, rtol=0)
    torch.testing.assert_close(last, ends[1 - a], atol=1e-5, rtol=0)
    # in between: the decoded linear interpolation of the two codes
    codes = model.encode(pair.x)
    t = 4 / 9
    middle = model.decode(((1 - t) * codes[a] + t * codes[1 - a])[None])
    torch.testing.assert_close(images[4:5], middle, atol=1e-5, rtol=0)


def test_autoencoder_samples_from_the_code_mixture(one_class_autoencoder):
    model = one_class_autoencoder
    a = model.sample(20, generator=torch.Generator().manual_seed(5))
    b = model.sample(20, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(a, b)
    assert model.mixture_means_.shape == (3, model.latent_dim)
    assert not math.isnan(float(model.anomaly_score(a).mean()))

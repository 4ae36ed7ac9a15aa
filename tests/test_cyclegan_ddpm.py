"""Model-specific checks for `ddpm` (the pieces of the variational bound against independent
references) and `cyclegan` (the domains, the transforms, that training learns the translation)."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from genbench.data import Split, dequantize
from genbench.models import create_model
from genbench.models.cyclegan import apply_transform, invert, split_domains, thicken
from genbench.models.ddpm import discretized_gaussian_log_likelihood, make_schedule, normal_kl, respaced

# --- ddpm --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["cosine", "linear"])
def test_q_closed_form_matches_iterating_the_forward_process(kind):
    schedule = make_schedule(kind, 50)
    x0 = torch.linspace(-1, 1, 7, dtype=torch.float64)
    mean, var = x0.clone(), torch.zeros_like(x0)
    for i in range(50):  # x_t = sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t) eps
        beta = schedule.betas[i]
        mean, var = (1 - beta).sqrt() * mean, (1 - beta) * var + beta
        closed_mean, closed_var = schedule.q_mean_variance(x0[:, None, None, None], torch.full((7,), i))
        torch.testing.assert_close(closed_mean.flatten(), mean)
        torch.testing.assert_close(closed_var.flatten(), var)
    assert schedule.alphas_cumprod[-1] < 1e-3  # the chain ends near N(0, I)


def test_posterior_is_the_bayes_posterior_of_the_forward_step():
    """q(x_{t-1} | x_t, x_0) from the schedule equals the Gaussian conditioning of the joint
    q(x_{t-1}, x_t | x_0), computed independently."""
    s = make_schedule("cosine", 30)
    x0, xt, i = torch.tensor([0.3], dtype=torch.float64), torch.tensor([-0.5], dtype=torch.float64), 12
    a_prev, beta = s.alphas_cumprod[i - 1], s.betas[i]
    prior_mean, prior_var = a_prev.sqrt() * x0, 1 - a_prev  # q(x_{t-1} | x_0)
    gain = prior_var * (1 - beta).sqrt() / ((1 - beta) * prior_var + beta)
    post_mean = prior_mean + gain * (xt - (1 - beta).sqrt() * prior_mean)
    post_var = prior_var - gain * (1 - beta).sqrt() * prior_var
    idx = torch.tensor([i])
    torch.testing.assert_close(s.posterior_mean(x0, xt, idx).flatten(), post_mean)
    torch.testing.assert_close(s.posterior_variance[i], post_var)


def test_respaced_chain_with_all_steps_is_the_chain():
    s = make_schedule("cosine", 40)
    assert respaced(s, 40, "posterior") is s
    r = respaced(s, 10, "posterior")
    assert len(r) == 10 and r.timesteps[0] == 0 and r.timesteps[-1] == 39
    torch.testing.assert_close(r.alphas_cumprod, s.alphas_cumprod[r.timesteps])
    torch.testing.assert_close(torch.cumprod(1 - r.betas, 0), r.alphas_cumprod)


@pytest.mark.parametrize("levels", [2, 17, 256])
def test_discretized_decoder_sums_to_one_over_the_levels(levels):
    gen = torch.Generator().manual_seed(0)
    mean = torch.rand(5, generator=gen, dtype=torch.float64) * 2.4 - 1.2
    std = torch.tensor([1e-3, 0.02, 0.1, 0.5, 3.0], dtype=torch.float64)
    k = torch.arange(levels)[:, None].expand(levels, 5)
    log_p = discretized_gaussian_log_likelihood(k, mean.expand(levels, 5), std.expand(levels, 5), levels)
    assert torch.isfinite(log_p).all()
    torch.testing.assert_close(log_p.exp().sum(0), torch.ones(5, dtype=torch.float64))
    # an inner bin equals the Normal cdf difference
    if levels > 2:
        kk, half = 1, 1.0 / (levels - 1)
        c = -1 + 2 * kk * half
        ref = Normal(mean, std).cdf(torch.tensor(c + half)) - Normal(mean, std).cdf(torch.tensor(c - half))
        torch.testing.assert_close(log_p[kk].exp(), ref.double(), atol=1e-12, rtol=1e-6)


def test_discretized_decoder_is_finite_far_in_the_tails():
    k = torch.tensor([0, 8, 16])
    mean = torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64)
    log_p = discretized_gaussian_log_likelihood(k, mean, torch.full((3,), 1e-3, dtype=torch.float64), 17)
    assert torch.isfinite(log_p).all() and (log_p < -1e4).all()


def test_normal_kl_matches_torch_distributions():
    gen = torch.Generator().manual_seed(1)
    m1, m2 = torch.randn(20, generator=gen, dtype=torch.float64), torch.randn(20, generator=gen, dtype=torch.float64)
    v1 = torch.rand(20, generator=gen, dtype=torch.float64) + 1e-3
    v2 = torch.rand(20, generator=gen, dtype=torch.float64) + 1e-3
    torch.testing.assert_close(normal_kl(m1, v1, m2, v2), kl_divergence(Normal(m1, v1.sqrt()), Normal(m2, v2.sqrt())))


def _small_digits(digits_splits, n_train=300, n_test=40):
    train, test = digits_splits["train"], digits_splits["test"]
    return (Split(train.x[:n_train], train.y[:n_train], 17, 10, "train"),
            Split(test.x[:n_test], test.y[:n_test], 17, 10, "test"))


DDPM_SMALL = {"timesteps": 30, "base_channels": 8, "sampling_steps": 30, "batch_size": 32, "lr": 2e-3}


def test_ddpm_bound_is_finite_and_improves_with_training(digits_splits):
    train, test = _small_digits(digits_splits)
    y = dequantize(test.x, 17, torch.Generator().manual_seed(0))
    untrained = create_model("ddpm", {**DDPM_SMALL, "epochs": 1, "lr": 0.0}, device="cpu").fit(train, seed=0)
    trained = create_model("ddpm", {**DDPM_SMALL, "epochs": 8}, device="cpu").fit(train, seed=0)
    before, after = untrained.log_prob(y), trained.log_prob(y)
    assert before.shape == after.shape == (len(test),)
    assert torch.isfinite(before).all() and torch.isfinite(after).all()
    assert after.mean() > before.mean() + 10.0, (before.mean(), after.mean())
    # a log-probability of the discrete image: at most 0 once D log K is taken off again
    log_p = after.double() - test.dim * math.log(17)
    assert (log_p < 0).all()
    assert trained.history_[-1]["loss"] < trained.history_[0]["loss"]
    # the bound reads the lattice level: dequantised and exact lattice images score the same
    torch.testing.assert_close(trained.log_prob(test.x), after)


def test_ddpm_sampling_shapes_range_and_seed(digits_splits):
    train, _ = _small_digits(digits_splits, n_train=64)
    model = create_model("ddpm", {**DDPM_SMALL, "epochs": 1, "sampling_steps": 7}, device="cpu").fit(train, seed=0)
    a = model.sample(5, generator=torch.Generator().manual_seed(3))
    b = model.sample(5, generator=torch.Generator().manual_seed(3))
    c = model.sample(5, generator=torch.Generator().manual_seed(4))
    assert a.shape == (5, 1, 8, 8) and a.dtype == torch.float32
    assert a.min() >= 0 and a.max() <= 1
    torch.testing.assert_close(a, b)
    assert not torch.equal(a, c)
    test = _small_digits(digits_splits)[1]
    images, nrow, _labels = model.figures(test, generator=torch.Generator().manual_seed(0))["denoising_trajectory"]
    assert nrow == 8 and images.shape == (8 * nrow, 1, 8, 8)  # 7 steps: x_T plus 7 states, 8 columns
    assert images.min() >= 0 and images.max() <= 1


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_ddpm_runs_on_larger_images(shape):
    x = torch.rand(8, *shape)
    x = torch.round(x * 255) / 255
    model = create_model("ddpm", {"timesteps": 4, "base_channels": 4, "epochs": 1, "batch_size": 4,
                                  "sampling_steps": 2}, device="cpu")
    model.fit(Split(x, torch.zeros(8, dtype=torch.long), 256, 10), seed=0)
    assert model.sample(2, generator=torch.Generator().manual_seed(0)).shape == (2, *shape)
    assert torch.isfinite(model.log_prob(dequantize(x[:2], 256))).all()


# --- cyclegan ----------------------------------------------------------------------------------------


def test_transforms():
    x = torch.rand(4, 1, 8, 8)
    torch.testing.assert_close(invert(invert(x)), x)
    for k in (2, 3):
        t = thicken(x, k)
        assert t.shape == x.shape and (t >= x).all()  # dilation only adds ink
        assert thicken(torch.zeros(1, 1, 8, 8), k).eq(0).all()
    dot = torch.zeros(1, 1, 8, 8)
    dot[..., 4, 4] = 1
    assert thicken(dot, 3).sum() == 9 and thicken(dot, 2).sum() == 4
    assert torch.equal(apply_transform(x, "thicken"), thicken(x, 2))  # 8x8: the 2x2 window
    big = torch.rand(1, 1, 28, 28)
    assert torch.equal(apply_transform(big, "thicken"), thicken(big, 3))  # 28x28: the centred 3x3 window


def test_thickening_keeps_labels_for_a_classifier(digits_splits):
    """Label-preserving in practice: a classifier trained on thickened digits reads thickened test
    digits about as well as one trained on the originals reads the originals."""
    from sklearn.linear_model import LogisticRegression

    train, test = digits_splits["train"], digits_splits["test"]

    def accuracy(f):
        clf = LogisticRegression(max_iter=3000).fit(f(train.x).flatten(1).numpy(), train.y.numpy())
        return clf.score(f(test.x).flatten(1).numpy(), test.y.numpy())

    plain, thick = accuracy(lambda x: x), accuracy(lambda x: apply_transform(x, "thicken"))
    assert thick > 0.85 and thick > plain - 0.08, (plain, thick)


def test_domains_are_disjoint_halves():
    a, b = split_domains(101, seed=3)
    assert len(a) == len(b) == 50
    assert not set(a.tolist()) & set(b.tolist())
    a2, _ = split_domains(101, seed=3)
    assert torch.equal(a, a2)
    assert not torch.equal(a, split_domains(101, seed=4)[0])


def test_cyclegan_learns_the_translation(digits_splits):
    train, test = _small_digits(digits_splits, n_train=400, n_test=100)
    model = create_model("cyclegan", {"epochs": 10, "base_channels": 8, "residual_blocks": 1, "batch_size": 16,
                                      "lr": 1e-3}, device="cpu").fit(train, seed=0)
    a, b = model.domain_indices_
    assert len(a) == len(b) == 200 and not set(a.tolist()) & set(b.tolist())

    def classify(images):  # a stand-in for the evaluator: nearest class mean of thickened training digits
        means = torch.stack([model.to_domain_b(train.x[train.y == c]).mean(0) for c in range(10)])
        return torch.cdist(images.flatten(1), means.flatten(1)).argmin(1)

    def fid(real, fake):  # a stand-in: squared distance of the pixel means
        return float(((real.flatten(1).mean(0) - fake.flatten(1).mean(0)) ** 2).sum())

    extra = model.extra_metrics(test, classify=classify, fid=fid)
    expected = {"translation_error", "translation_error_identity", "label_kept", "label_kept_target",
                "label_kept_source", "fid_to_target", "fid_to_target_identity", "cycle_error"}
    assert set(extra) == expected
    for record in extra.values():
        assert set(record) == {"value", "unit", "description"} and math.isfinite(record["value"])
    assert extra["translation_error"]["value"] < extra["translation_error_identity"]["value"]
    assert 0 <= extra["label_kept"]["value"] <= 1
    images, nrow, _labels = model.figures(test, generator=torch.Generator().manual_seed(0))["translation"]
    assert nrow == 10 and images.shape == (40, 1, 8, 8)
    samples = model.sample(7, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (7, 1, 8, 8) and samples.min() >= 0 and samples.max() <= 1
    assert model.translate(test.x[:3], "BA").shape == (3, 1, 8, 8)
    score = model.anomaly_score(test.x[:5])
    assert score.shape == (5,) and torch.isfinite(score).all()


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_cyclegan_runs_on_larger_images(shape):
    x = torch.rand(8, *shape)
    model = create_model("cyclegan", {"epochs": 1, "base_channels": 4, "residual_blocks": 1, "batch_size": 4,
                                      "transform": "invert"}, device="cpu")
    model.fit(Split(x, torch.zeros(8, dtype=torch.long), 256, 10), seed=0)
    assert model.translate(x[:2]).shape == (2, *shape)
    assert model.sample(3, generator=torch.Generator().manual_seed(0)).shape == (3, *shape)

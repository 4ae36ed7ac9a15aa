"""Every metric against an independent reference on the same inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch
from sklearn.metrics import accuracy_score, log_loss, roc_auc_score
from sklearn.mixture import GaussianMixture

from genbench.data import dequantize
from genbench.evaluator import EvaluatorNet
from genbench.metrics.anomaly import auroc
from genbench.metrics.classification import classification_record
from genbench.metrics.fid import frechet_distance
from genbench.metrics.likelihood import nll_record
from genbench.models import create_model


def test_auroc_matches_sklearn():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 500)
    scores = rng.normal(size=500) + labels  # informative, with ties-free floats
    assert auroc(torch.tensor(scores), torch.tensor(labels)) == pytest.approx(roc_auc_score(labels, scores), abs=1e-6)
    tied = np.round(scores)  # ties must be handled as sklearn does (average ranks)
    assert auroc(torch.tensor(tied), torch.tensor(labels)) == pytest.approx(roc_auc_score(labels, tied), abs=1e-6)
    # scores as large as a Fashion-MNIST NLL in nats: torchmetrics alone would squash them to 1.0 and return 0.5
    nll = 400.0 + 50.0 * scores
    assert auroc(torch.tensor(nll), torch.tensor(labels)) == pytest.approx(roc_auc_score(labels, nll), abs=1e-6)
    assert auroc(torch.tensor(-nll), torch.tensor(labels)) == pytest.approx(roc_auc_score(labels, -nll), abs=1e-6)


def test_classification_matches_sklearn_and_hand_ece():
    rng = np.random.default_rng(1)
    proba = rng.dirichlet(np.ones(4), size=300)
    y = rng.integers(0, 4, 300)
    record = classification_record(proba, torch.tensor(y), 4, split="test")
    assert record["accuracy"] == pytest.approx(accuracy_score(y, proba.argmax(1)))
    assert record["log_loss"] == pytest.approx(log_loss(y, proba, labels=range(4)))
    # ECE by hand: equal-width confidence bins, |accuracy - confidence| weighted by bin share
    conf, pred = proba.max(1), proba.argmax(1)
    bins = np.minimum((conf * 15).astype(int), 14)
    ece = sum(np.mean(bins == b) * abs(np.mean(pred[bins == b] == y[bins == b]) - np.mean(conf[bins == b]))
              for b in range(15) if np.any(bins == b))
    assert record["ece"] == pytest.approx(ece, abs=1e-5)


def _scipy_fid(f1, f2):
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def test_fid_matches_scipy_and_is_zero_on_itself():
    torch.manual_seed(0)
    net = EvaluatorNet((1, 8, 8), 10, feature_dim=16).eval()
    real = torch.rand(400, 1, 8, 8)
    fake = (torch.rand(300, 1, 8, 8) * 0.5 + 0.2)
    with torch.no_grad():
        reference = _scipy_fid(net.features(real).double().numpy(), net.features(fake).double().numpy())
    assert frechet_distance(net, 16, real, fake) == pytest.approx(reference, rel=1e-3)
    assert abs(frechet_distance(net, 16, real, real)) < 1e-4


def test_gmm_log_prob_equals_sklearn_score_samples(digits_splits):
    train, test = digits_splits["train"], digits_splits["test"]
    gmm = create_model("gmm", {"n_components": 2, "class_conditional": False}).fit(train, seed=3)
    y_test = dequantize(test.x, 17, torch.Generator().manual_seed(0))
    flat_train = dequantize(train.x, 17, torch.Generator().manual_seed(3)).reshape(len(train), -1).double().numpy()
    reference = GaussianMixture(2, covariance_type="full", reg_covar=3e-3, max_iter=200, random_state=3).fit(flat_train)
    np.testing.assert_allclose(gmm.log_prob(y_test).numpy(), reference.score_samples(y_test.reshape(len(test), -1).double().numpy()),
                               rtol=1e-10)


def test_class_conditional_gmm_is_bayes_rule(digits_splits):
    train, test = digits_splits["train"], digits_splits["test"]
    gmm = create_model("gmm", {"n_components": 1}).fit(train, seed=0)
    x = dequantize(test.x[:50], 17, torch.Generator().manual_seed(0))
    flat_train = dequantize(train.x, 17, torch.Generator().manual_seed(0)).reshape(len(train), -1).double().numpy()
    joint = []
    for c in range(10):
        members = flat_train[train.y.numpy() == c]
        ref = GaussianMixture(1, reg_covar=3e-3, random_state=0).fit(members)
        joint.append(ref.score_samples(x.reshape(50, -1).double().numpy()) + np.log(len(members) / len(train)))
    joint = np.stack(joint, 1)
    np.testing.assert_allclose(gmm.log_prob(x).numpy(), np.logaddexp.reduce(joint, axis=1), rtol=1e-9)


def test_uniform_density_is_log2_levels_bits_per_dim():
    """A uniform density on [0,1]^D puts mass K^-D on every discrete image: exactly log2(K) bits/dim."""
    record = nll_record(torch.zeros(10), space="discrete", dim=64, levels=17,
                        info={"estimator": "exact", "method": "uniform"}, split="test")
    assert record["bits_per_dim"] == pytest.approx(math.log2(17))
    assert record["nll_nats"] == pytest.approx(64 * math.log(17))
    assert record["estimator"] == "lower_bound"  # exact density + dequantisation = bound on the discrete likelihood
    binary = nll_record(torch.full((5,), -64 * math.log(2)), space="binary", dim=64, levels=17,
                        info={"estimator": "exact", "method": "coin flips"}, split="test")
    assert binary["bits_per_dim"] == pytest.approx(1.0) and binary["estimator"] == "exact"


def test_non_finite_log_prob_is_refused():
    with pytest.raises(ValueError, match="non-finite"):
        nll_record(torch.tensor([0.0, float("nan")]), space="binary", dim=4, levels=2,
                   info={"estimator": "exact", "method": "x"}, split="test")

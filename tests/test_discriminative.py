"""Model-specific checks of the discriminative and anomaly baselines: the hidden-state CRF against
an independent brute-force reference, accuracy floors on the digits test split, calibration of the
SVM's probabilities, and one-class AUROC of the anomaly baselines."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from sklearn.svm import SVC
from threadpoolctl import threadpool_limits

from genbench.data import Split
from genbench.metrics.anomaly import auroc
from genbench.metrics.classification import classification_record
from genbench.models import create_model, get_model_class
from genbench.models.base import flat
from genbench.models.crf import HCRF, row_observations


@pytest.fixture(autouse=True)
def one_thread():
    """These fits are small (8x8 images, small batches): one thread is as fast as two on an idle
    machine, and on a busy one two OpenMP/BLAS threads spin-wait on each other at every tiny op
    (measured on the 2-core CI machine under load: the crf fit 1.2 s with one thread, 56 s with two)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        yield
    torch.set_num_threads(threads)


# --- hidden-state CRF ---------------------------------------------------------------------------


def brute_force_log_p(x: np.ndarray, window: int, theta, state_bias, transition, class_bias) -> np.ndarray:
    """log p(y | x) by summing exp Psi(y, h, x) over ALL S^H hidden paths (itertools.product).

    The observation at row t is rows t - window .. t + window (zeros beyond the image), each row's
    channels and pixels flattened, built here independently of `row_observations`."""
    n, c, h, w = x.shape
    num_classes, n_states, _ = theta.shape
    out = np.empty((n, num_classes))
    for i in range(n):
        rows = [x[i, :, t, :].reshape(-1) for t in range(h)]
        zero = np.zeros(c * w)
        obs = [np.concatenate([rows[t + k] if 0 <= t + k < h else zero for k in range(-window, window + 1)])
               for t in range(h)]
        log_z = []
        for y in range(num_classes):
            psis = []
            for path in itertools.product(range(n_states), repeat=h):
                psi = class_bias[y]
                psi += sum(theta[y, s] @ obs[t] + state_bias[y, s] for t, s in enumerate(path))
                psi += sum(transition[y, a, b] for a, b in zip(path[:-1], path[1:]))
                psis.append(psi)
            top = max(psis)
            log_z.append(top + math.log(sum(math.exp(p - top) for p in psis)))
        top = max(log_z)
        total = top + math.log(sum(math.exp(v - top) for v in log_z))
        out[i] = np.array(log_z) - total
    return out


@pytest.mark.parametrize("num_classes,n_states,window", [(2, 2, 0), (3, 3, 1), (3, 2, 2)])
def test_hcrf_forward_algorithm_equals_brute_force(num_classes, n_states, window):
    gen = torch.Generator().manual_seed(0)
    x = torch.rand((5, 1, 3, 2), generator=gen, dtype=torch.float64)  # 3 rows of 2 pixels
    obs_dim = (2 * window + 1) * 2
    hcrf = HCRF(num_classes, n_states, obs_dim).double()
    with torch.no_grad():  # every potential non-trivial
        for p in hcrf.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64))
        log_p = hcrf(row_observations(x, window)).numpy()
    params = [p.detach().numpy() for p in (hcrf.theta, hcrf.state_bias, hcrf.transition, hcrf.class_bias)]
    reference = brute_force_log_p(x.numpy(), window, *params)
    np.testing.assert_allclose(log_p, reference, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(np.exp(log_p).sum(1), 1.0, atol=1e-12)


def test_hcrf_training_increases_conditional_likelihood():
    """A separable toy problem: class 0 has a bright top row, class 1 a bright bottom row."""
    gen = torch.Generator().manual_seed(0)
    n = 64
    y = torch.arange(n) % 2
    x = 0.3 * torch.rand((n, 1, 3, 2), generator=gen)
    x[y == 0, :, 0, :] += 0.7
    x[y == 1, :, 2, :] += 0.7
    train = Split(x, y, 17, 2)
    model = create_model("crf", {"n_states": 2, "window": 0, "epochs": 30, "batch_size": 16, "lr": 0.05},
                         device="cpu")

    def mean_log_likelihood(m) -> float:
        return float(np.log(m.predict_proba(x)[np.arange(n), y.numpy()]).mean())

    before = mean_log_likelihood(create_model("crf", {"n_states": 2, "window": 0, "epochs": 1, "lr": 0.0},
                                              device="cpu").fit(train, seed=0))  # the initial weights
    model.fit(train, seed=0)
    after = mean_log_likelihood(model)
    assert model.history_[-1]["nll"] < model.history_[0]["nll"]
    assert after > before + 0.5 and after > -0.15  # from log(1/2) to p(true class) > 0.86 on average
    assert (model.predict_proba(x).argmax(1) == y.numpy()).all()


# --- accuracy on the digits test split (default hyperparameters) --------------------------------

# Measured with the defaults, seed 0: svm 0.986, knn 0.981, mlp 0.981, cnn 0.981, crf 0.975,
# random_forest 0.969 (360 test images: one image is 0.28 points).
FLOORS = {"svm": 0.97, "knn": 0.965, "random_forest": 0.95, "mlp": 0.96, "cnn": 0.96, "crf": 0.95}


@pytest.mark.parametrize("name", sorted(FLOORS))
def test_digits_test_accuracy(name, digits_splits):
    train, test = digits_splits["train"], digits_splits["test"]
    model = create_model(name, {}, device="cpu").fit(train, seed=0)
    record = classification_record(model.predict_proba(test.x), test.y, 10, split="test")
    assert record["accuracy"] >= FLOORS[name], record


def test_svm_probabilities_are_calibrated(digits_splits):
    """The calibrated probabilities against a softmax of the SVM's raw one-vs-rest decision values."""
    train, test = digits_splits["train"], digits_splits["test"]
    model = create_model("svm", {}, device="cpu").fit(train, seed=0)
    calibrated = classification_record(model.predict_proba(test.x), test.y, 10, split="test")
    margins = SVC(C=model.C, gamma=model.gamma_).fit(flat(train.x), train.y.numpy()).decision_function(flat(test.x))
    softmax = np.exp(margins - margins.max(1, keepdims=True))
    raw = classification_record(softmax / softmax.sum(1, keepdims=True), test.y, 10, split="test")
    assert calibrated["ece"] < 0.04, calibrated  # measured 0.007 (15 bins, 360 images)
    assert calibrated["ece"] < raw["ece"] / 4, (calibrated, raw)  # raw margins: 0.32
    assert calibrated["log_loss"] < raw["log_loss"] / 2, (calibrated, raw)


# --- anomaly baselines: the one-class protocol on digits ----------------------------------------


@pytest.mark.parametrize("name,mean_floor,min_floor", [("ocsvm", 0.97, 0.93), ("isolation_forest", 0.93, 0.85)])
def test_one_class_auroc(name, mean_floor, min_floor, digits_splits):
    """Trained on one class, scored on the whole test split, the other classes as anomalies.
    Measured (seed 0): ocsvm mean 0.996, worst class 0.987; isolation_forest mean 0.972, worst 0.933."""
    train, test = digits_splits["train"], digits_splits["test"]
    scores = []
    for c in range(10):
        model = create_model(name, {}, device="cpu").fit(train.subset(train.y == c), seed=0)
        assert not hasattr(model, "predict_proba") and not hasattr(model, "log_prob")
        scores.append(auroc(torch.as_tensor(model.anomaly_score(test.x)), test.y != c))
    assert np.mean(scores) > mean_floor and min(scores) > min_floor, scores


@pytest.mark.parametrize("name", ["cnn", "crf"])
@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32)])
def test_torch_classifiers_size_themselves_from_the_image_shape(name, shape):
    gen = torch.Generator().manual_seed(0)
    train = Split(torch.rand((32, *shape), generator=gen), torch.arange(32) % 10, 256, 10)
    model = create_model(name, {**get_model_class(name).fast_params, "epochs": 1}, device="cpu").fit(train, seed=0)
    proba = model.predict_proba(train.x[:5])
    assert proba.shape == (5, 10) and np.allclose(proba.sum(1), 1)
    if name == "cnn":
        assert model.encode(train.x[:5]).shape == (5, model.hidden_dim)


def test_knn_manhattan_matches_brute_force_neighbours(digits_splits):
    """p=1 (Xiao et al. 2017's kNN): the neighbours are the k nearest training images in L1 distance
    (compared as distances: digits' 17 levels make ties, broken in any order), and the vote is theirs."""
    train, test = digits_splits["train"], digits_splits["test"]
    model = create_model("knn", {"n_neighbors": 5, "weights": "uniform", "p": 1}).fit(train, seed=0)
    brute = torch.cdist(torch.as_tensor(flat(test.x)).double(), torch.as_tensor(flat(train.x)).double(), p=1)
    distances, indices = model.classifier_.kneighbors(flat(test.x))
    np.testing.assert_allclose(distances, brute.topk(5, largest=False).values.numpy(), atol=1e-9)
    votes = torch.nn.functional.one_hot(train.y[torch.as_tensor(indices)], 10).double().mean(1).numpy()
    np.testing.assert_allclose(model.predict_proba(test.x), votes)
    euclidean = create_model("knn", {"n_neighbors": 5, "weights": "uniform", "p": 2}).fit(train, seed=0)
    assert not np.allclose(euclidean.classifier_.kneighbors(flat(test.x))[0], distances)

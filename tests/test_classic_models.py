"""Correctness of the classic generative models' likelihoods against independent references:
scipy.stats densities computed by hand from the fitted parameters, scikit-learn objects holding the
same parameters, brute-force sums over every hidden path or every binary image on tiny cases, and
exact marginals against ancestral samples. Plus accuracy floors on the digits test split (measured
with the defaults, then set a few points lower)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.special import logsumexp
from sklearn.cluster import KMeans as SkKMeans
from sklearn.mixture import GaussianMixture
from threadpoolctl import threadpool_limits

from genbench.data import Split, binarize, dequantize
from genbench.models import create_model

# Test accuracy with the defaults (seed 0) was: kmeans 0.967, gaussian_nb 0.875, bernoulli_nb 0.908,
# hmm 0.933, bayes_net 0.953.
ACCURACY_FLOOR = {"kmeans": 0.93, "gaussian_nb": 0.84, "bernoulli_nb": 0.87, "hmm": 0.89, "bayes_net": 0.92}


def _flat(x: torch.Tensor) -> np.ndarray:
    return x.reshape(len(x), -1).double().numpy()


def _all_binary_images(shape: tuple[int, int, int]) -> torch.Tensor:
    d = int(np.prod(shape))
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=d))).reshape(-1, *shape)


def _tiny_binary_split(shape=(1, 2, 2), n=300, classes=3, seed=0) -> Split:
    """Grey images whose intensities depend on the class, so the classes differ."""
    rng = np.random.default_rng(seed)
    y = rng.integers(classes, size=n)
    d = int(np.prod(shape))
    centres = rng.random((classes, d))
    x = np.clip(centres[y] + 0.2 * rng.standard_normal((n, d)), 0, 1)
    return Split(torch.tensor(x, dtype=torch.float32).reshape(n, *shape), torch.tensor(y), 2, classes)


@pytest.fixture(scope="module", autouse=True)
def one_blas_thread():
    """These tests do many tiny linear-algebra calls; on a busy 2-core machine OpenBLAS's thread
    hand-off makes each of them ~400x slower (a 2 x 2 triangular solve: 24 ms instead of 56 us)."""
    with threadpool_limits(limits=1, user_api="blas"):
        yield


@pytest.fixture(scope="module")
def fitted_defaults(digits_splits):
    """Each model with its defaults, fitted once on the digits training split."""
    train = digits_splits["train"]
    return {name: create_model(name).fit(train, seed=0) for name in ACCURACY_FLOOR}


@pytest.mark.parametrize("name", sorted(ACCURACY_FLOOR))
def test_digits_accuracy_floor(name, fitted_defaults, digits_splits):
    test = digits_splits["test"]
    model = fitted_defaults[name]
    proba = model.predict_proba(test.x)
    assert proba.shape == (len(test), 10)
    accuracy = float((proba.argmax(1) == test.y.numpy()).mean())
    assert accuracy > ACCURACY_FLOOR[name], f"{name}: test accuracy {accuracy:.3f}"


def _dequantised(split: Split, n: int, seed: int = 3) -> torch.Tensor:
    return dequantize(split.x[:n], split.levels, torch.Generator().manual_seed(seed))


# --- Gaussian naive Bayes ----------------------------------------------------------------------


def test_gaussian_nb_log_prob_matches_scipy_norm(fitted_defaults, digits_splits):
    model = fitted_defaults["gaussian_nb"]
    nb = model.classifier_
    y = _dequantised(digits_splits["test"], 40)
    data = _flat(y)
    per_class = np.stack([stats.norm.logpdf(data, nb.theta_[c], np.sqrt(nb.var_[c])).sum(1)
                          for c in range(len(nb.classes_))], axis=1)
    reference = logsumexp(per_class + np.log(nb.class_prior_), axis=1)
    got = model.log_prob(y).numpy()
    np.testing.assert_allclose(got, reference, rtol=1e-10, atol=1e-8)
    np.testing.assert_allclose(got, logsumexp(nb.predict_joint_log_proba(data), axis=1), rtol=1e-10, atol=1e-8)


def test_gaussian_nb_classifies_the_bin_centres_and_samples_by_class(fitted_defaults, digits_splits):
    model = fitted_defaults["gaussian_nb"]
    x = digits_splits["test"].x[:30]
    centres = (torch.round(x * 16) + 0.5) / 17
    joint = model.classifier_.predict_joint_log_proba(_flat(centres))
    np.testing.assert_allclose(model.predict_proba(x), np.exp(joint - logsumexp(joint, 1, keepdims=True)),
                               atol=1e-10)
    samples = model.sample(400, y=torch.full((400,), 3), generator=torch.Generator().manual_seed(0))
    # Class-3 samples sit near class 3's mean (on the lattice: floor(y * 17) / 16 has mean ~ theta).
    mean = samples.reshape(400, -1).double().mean(0).numpy()
    assert np.abs(mean - model.classifier_.theta_[3]).mean() < 0.05


# --- Bernoulli naive Bayes ---------------------------------------------------------------------


def test_bernoulli_nb_log_prob_matches_a_direct_computation(fitted_defaults, digits_splits):
    model = fitted_defaults["bernoulli_nb"]
    nb = model.classifier_
    xb = binarize(digits_splits["test"].x[:40], torch.Generator().manual_seed(5))
    data = _flat(xb)
    log_p = nb.feature_log_prob_
    log_q = np.log1p(-np.exp(log_p))
    per_class = data @ log_p.T + (1 - data) @ log_q.T + nb.class_log_prior_
    np.testing.assert_allclose(model.log_prob(xb).numpy(), logsumexp(per_class, axis=1), rtol=1e-10)


@pytest.mark.parametrize("copies", [5, 0])
def test_bernoulli_nb_sums_to_one_over_all_binary_images(copies):
    train = _tiny_binary_split()
    model = create_model("bernoulli_nb", {"binarized_copies": copies}).fit(train, seed=0)
    every = _all_binary_images((1, 2, 2))
    assert len(every) == 16
    assert math.isclose(float(torch.exp(model.log_prob(every)).sum()), 1.0, rel_tol=1e-10)


def test_bernoulli_nb_expected_input_is_the_expected_log_joint():
    """predict_input='expected' scores E_{x ~ Bernoulli(image)}[log p(c) + log p(x|c)]: enumerate x."""
    train = _tiny_binary_split()
    model = create_model("bernoulli_nb").fit(train, seed=0)
    every = _all_binary_images((1, 2, 2))
    joint_every = model.classifier_.predict_joint_log_proba(_flat(every))  # (16, classes)
    images = train.x[:5]
    q = _flat(images)
    weights = np.prod(np.where(_flat(every)[None] == 1, q[:, None], 1 - q[:, None]), axis=2)  # (5, 16)
    expected = weights @ joint_every
    reference = np.exp(expected - logsumexp(expected, axis=1, keepdims=True))
    np.testing.assert_allclose(model.predict_proba(images)[:, :3], reference, atol=1e-10)


def test_bernoulli_nb_samples_follow_the_class_pixel_probabilities(fitted_defaults):
    model = fitted_defaults["bernoulli_nb"]
    n = 4000
    samples = model.sample(n, y=torch.full((n,), 7), generator=torch.Generator().manual_seed(0))
    assert set(samples.unique().tolist()) <= {0.0, 1.0}
    p = np.exp(model.classifier_.feature_log_prob_[7])
    np.testing.assert_allclose(samples.reshape(n, -1).double().mean(0).numpy(), p, atol=4 * 0.5 / math.sqrt(n))


# --- k-means as a spherical mixture --------------------------------------------------------------


def test_kmeans_log_prob_matches_a_scipy_mixture_and_sklearn(fitted_defaults, digits_splits):
    model = fitted_defaults["kmeans"]
    y = _dequantised(digits_splits["test"], 25)
    data = _flat(y)
    d = data.shape[1]
    by_hand, by_sklearn = [], []
    for mu, var, log_w in zip(model.centroids_, model.variance_, model.log_weights_):
        comps = [stats.multivariate_normal(mean=m, cov=var * np.eye(d)).logpdf(data) for m in mu]
        by_hand.append(logsumexp(np.stack(comps, 1) + log_w, axis=1))
        gm = GaussianMixture(n_components=len(mu), covariance_type="spherical")
        gm.weights_, gm.means_ = np.exp(log_w), mu
        gm.covariances_ = np.full(len(mu), var)
        gm.precisions_cholesky_ = 1 / np.sqrt(gm.covariances_)
        by_sklearn.append(gm.score_samples(data))
    prior = model.log_prior_
    got = model.log_prob(y).numpy()
    np.testing.assert_allclose(got, logsumexp(np.stack(by_hand, 1) + prior, axis=1), rtol=1e-9)
    np.testing.assert_allclose(got, logsumexp(np.stack(by_sklearn, 1) + prior, axis=1), rtol=1e-9)


def test_kmeans_variance_is_the_mle_given_the_assignments(digits_splits):
    train = digits_splits["train"]
    params = {"n_clusters": 4, "n_init": 1}
    model = create_model("kmeans", params).fit(train, seed=0)
    data = _flat(dequantize(train.x, train.levels, torch.Generator().manual_seed(0)))
    members = data[train.y.numpy() == 2]
    km = SkKMeans(n_clusters=4, n_init=1, random_state=0).fit(members)
    np.testing.assert_allclose(model.centroids_[2], km.cluster_centers_)
    np.testing.assert_allclose(model.variance_[2], km.inertia_ / members.size, rtol=1e-6)
    np.testing.assert_allclose(np.exp(model.log_weights_[2]), np.bincount(km.labels_) / len(members))


def test_kmeans_density_integrates_to_one():
    """On 2-pixel images the density is a 2-D function: integrate it on a grid."""
    rng = np.random.default_rng(0)
    n = 400
    y = rng.integers(2, size=n)
    x = np.clip(np.where(y[:, None] == 0, [0.25, 0.7], [0.7, 0.3]) + 0.1 * rng.standard_normal((n, 2)), 0, 1)
    train = Split(torch.tensor(x, dtype=torch.float32).reshape(n, 1, 1, 2).mul(16).round().div(16),
                  torch.tensor(y), 17, 2)
    model = create_model("kmeans", {"n_clusters": 3}).fit(train, seed=0)
    grid = np.linspace(-1.0, 2.0, 301)
    step = grid[1] - grid[0]
    points = torch.tensor(np.stack(np.meshgrid(grid, grid), -1).reshape(-1, 1, 1, 2))
    mass = float(torch.exp(model.log_prob(points)).sum()) * step ** 2
    assert abs(mass - 1) < 1e-3


# --- HMM over rows ----------------------------------------------------------------------------


@pytest.mark.parametrize("covariance_type", ["diag", "full"])
def test_hmm_log_prob_matches_brute_force_over_every_state_path(covariance_type):
    """Images of 3 rows of 2 pixels: sum the joint over all K^3 hidden paths with scipy.stats."""
    rng = np.random.default_rng(1)
    n, k = 120, 3
    labels = rng.integers(2, size=n)
    base = np.where(labels[:, None, None] == 0, [[0.2, 0.8], [0.5, 0.5], [0.8, 0.2]], [[0.7, 0.7], [0.1, 0.4], [0.6, 0.9]])
    x = np.clip(base + 0.15 * rng.standard_normal((n, 3, 2)), 0, 1)
    train = Split(torch.tensor(x, dtype=torch.float32).reshape(n, 1, 3, 2).mul(16).round().div(16),
                  torch.tensor(labels), 17, 2)
    model = create_model("hmm", {"n_states": k, "n_iter": 10, "covariance_type": covariance_type}).fit(train, seed=0)
    test = _dequantised(train, 12, seed=7)
    rows = test.reshape(len(test), 3, 2).double().numpy()
    per_class = []
    for hmm in model.models_:
        emis = np.stack([stats.multivariate_normal(hmm.means_[s], hmm.covars_[s]).logpdf(rows.reshape(-1, 2))
                         .reshape(len(rows), 3) for s in range(k)], axis=2)  # (N, T, K)
        paths = []
        for path in itertools.product(range(k), repeat=3):
            lp = np.log(hmm.startprob_[path[0]]) + emis[:, 0, path[0]]
            for t in (1, 2):
                lp = lp + np.log(hmm.transmat_[path[t - 1], path[t]]) + emis[:, t, path[t]]
            paths.append(lp)
        per_class.append(logsumexp(np.stack(paths, 1), axis=1))
    reference = logsumexp(np.stack(per_class, 1) + model.log_prior_, axis=1)
    np.testing.assert_allclose(model.log_prob(test).numpy(), reference, rtol=1e-9)
    proba = model.predict_proba(train.x[:12])
    assert proba.shape == (12, 2)
    np.testing.assert_allclose(proba.sum(1), 1)


def test_hmm_samples_keep_the_row_layout(fitted_defaults):
    model = fitted_defaults["hmm"]
    samples = model.sample(6, y=torch.arange(6), generator=torch.Generator().manual_seed(0))
    assert samples.shape == (6, 1, 8, 8) and samples.min() >= 0 and samples.max() <= 1
    again = model.sample(6, y=torch.arange(6), generator=torch.Generator().manual_seed(0))
    np.testing.assert_array_equal(samples.numpy(), again.numpy())


# --- Chow-Liu Bayesian network ---------------------------------------------------------------------


def _tiny_net(structure="multinet", d=5, copies=5):
    train = _tiny_binary_split(shape=(1, 1, d), n=400, classes=2, seed=3)
    return train, create_model("bayes_net", {"structure": structure, "binarized_copies": copies}).fit(train, seed=0)


def _is_spanning_tree(order: np.ndarray, parent: np.ndarray) -> bool:
    d = len(parent)
    if sorted(order.tolist()) != list(range(d)):
        return False
    position = np.empty(d, int)
    position[order] = np.arange(d)
    roots = [i for i in range(d) if parent[i] == i]
    return roots == [order[0]] and all(position[parent[i]] < position[i] for i in range(d) if parent[i] != i)


@pytest.mark.parametrize("structure,copies", [("multinet", 5), ("tan", 5), ("multinet", 0)])
def test_bayes_net_sums_to_one_over_all_configurations(structure, copies):
    _, model = _tiny_net(structure, copies=copies)
    every = _all_binary_images((1, 1, 5))
    per_class = model._class_log_likelihood(_flat(every))
    np.testing.assert_allclose(np.exp(per_class).sum(0), 1.0, rtol=1e-10)
    assert math.isclose(float(torch.exp(model.log_prob(every)).sum()), 1.0, rel_tol=1e-10)
    for order, parent in zip(model.order_, model.parent_):
        assert _is_spanning_tree(order, parent)
    if structure == "tan":
        assert (model.parent_ == model.parent_[0]).all()


def test_bayes_net_log_prob_is_the_sum_of_tree_factors():
    """Against a direct product of conditional probabilities read off the smoothed counts."""
    train, model = _tiny_net(copies=0)
    alpha = model.alpha
    q = _flat(train.x)
    every = _flat(_all_binary_images((1, 1, 5)))
    for k, c in enumerate(model.classes_):
        qc = q[train.y.numpy() == c]
        n = len(qc)
        lp = np.zeros(len(every))
        for i in range(5):
            j = model.parent_[k, i]
            for row, x in enumerate(every):
                if i == j:
                    count = (qc[:, i] if x[i] else 1 - qc[:, i]).sum()
                    lp[row] += math.log((count + 2 * alpha) / (n + 4 * alpha))
                else:
                    qi = qc[:, i] if x[i] else 1 - qc[:, i]
                    qj = qc[:, j] if x[j] else 1 - qc[:, j]
                    pair = (qi * qj).sum()
                    lp[row] += math.log((pair + alpha) / (n + 4 * alpha)) - math.log((qj.sum() + 2 * alpha) / (n + 4 * alpha))
        np.testing.assert_allclose(model._class_log_likelihood(every)[:, k], lp, rtol=1e-10)


def test_bayes_net_recovers_a_chain():
    """Data from a known Markov chain over 6 pixels (in a shuffled order): Chow-Liu finds its edges."""
    rng = np.random.default_rng(0)
    chain = [0, 3, 1, 5, 2, 4]
    n = 4000
    x = np.zeros((n, 6))
    x[:, chain[0]] = rng.random(n) < 0.5
    for a, b in zip(chain, chain[1:]):
        flip = rng.random(n) < 0.15
        x[:, b] = np.where(flip, 1 - x[:, a], x[:, a])
    train = Split(torch.tensor(x, dtype=torch.float32).reshape(n, 1, 1, 6), torch.zeros(n, dtype=torch.int64), 2, 1)
    model = create_model("bayes_net", {"class_conditional": False, "binarized_copies": 1}).fit(train, seed=0)
    edges = {frozenset((i, int(p))) for i, p in enumerate(model.parent_[0]) if p != i}
    assert edges == {frozenset(e) for e in zip(chain, chain[1:])}


def test_bayes_net_ancestral_samples_match_the_exact_marginals():
    _, model = _tiny_net()
    every = _all_binary_images((1, 1, 5))
    data = _flat(every)
    prob = np.exp(model._class_log_likelihood(data))  # (32, classes)
    n = 20000
    for k, c in enumerate(model.classes_):
        exact = prob[:, k] @ data  # p(x_i = 1 | c) by enumeration
        samples = model.sample(n, y=torch.full((n,), int(c)), generator=torch.Generator().manual_seed(k))
        empirical = samples.reshape(n, -1).double().mean(0).numpy()
        np.testing.assert_allclose(empirical, exact, atol=4 * 0.5 / math.sqrt(n))
        # and the pairwise co-occurrence along each tree edge
        for i, j in enumerate(model.parent_[k]):
            if i != j:
                pair_exact = prob[:, k] @ (data[:, i] * data[:, j])
                pair_emp = float((samples.reshape(n, -1)[:, i] * samples.reshape(n, -1)[:, j]).double().mean())
                assert abs(pair_emp - pair_exact) < 4 * 0.5 / math.sqrt(n)


def test_bayes_net_expected_input_is_the_expected_log_joint():
    train, model = _tiny_net()
    every = _flat(_all_binary_images((1, 1, 5)))
    joint_every = model._class_log_likelihood(every) + model.log_prior_
    q = _flat(train.x[:6])
    weights = np.prod(np.where(every[None] == 1, q[:, None], 1 - q[:, None]), axis=2)  # (6, 32)
    expected = weights @ joint_every
    reference = np.exp(expected - logsumexp(expected, axis=1, keepdims=True))
    np.testing.assert_allclose(model.predict_proba(train.x[:6]), reference, atol=1e-10)

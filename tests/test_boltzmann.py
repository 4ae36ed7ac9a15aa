"""Correctness of the Boltzmann family (rbm, gb_rbm, boltzmann, dbn) and of AIS
(genbench.models.ais) against independent references: exact log partition functions by enumeration
of tiny models, brute-force sums over hidden states, numerical integration of a density, and the
DBN bound against the exact log-likelihood of a tiny DBN."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from genbench.data import Split, binarize
from genbench.models.ais import AISResult, _log_mean_exp_interval, beta_schedule
from genbench.models.boltzmann import BoltzmannMachine, FVBMNet, fvbm_ais, gibbs_sweep
from genbench.models.dbn import DBN, bernoulli_entropy, bernoulli_log_prob, unnormalised_bound
from genbench.models.gb_rbm import GaussianBernoulliRBM, GBRBMNet, gbrbm_ais
from genbench.models.rbm import RBM, RBMNet, rbm_ais

LOG_2PI = math.log(2.0 * math.pi)


@pytest.fixture(autouse=True)
def one_thread():
    """These tests run many tiny tensor operations: one intra-op thread avoids OpenMP spin-waiting
    on a busy two-core machine (which made them 10x slower), and changes no result."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def assert_close(actual: torch.Tensor, expected: torch.Tensor, atol: float) -> None:
    """Max absolute difference <= atol (plain torch: torch.testing's first call is slow to import)."""
    actual, expected = torch.as_tensor(actual).double(), torch.as_tensor(expected).double()
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    worst = float((actual - expected).abs().max())
    assert worst <= atol, f"max |difference| {worst:.3g} > {atol}"


def all_binary(n: int) -> torch.Tensor:
    """Every binary vector of length n, (2^n, n) float64."""
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=n)), dtype=torch.float64)


def random_rbm(n_visible: int, n_hidden: int, seed: int, scale: float = 1.0) -> RBMNet:
    g = torch.Generator().manual_seed(seed)
    net = RBMNet(n_visible, n_hidden).double()
    with torch.no_grad():
        net.W.copy_(torch.randn(n_visible, n_hidden, generator=g, dtype=torch.float64) * scale)
        net.b.copy_(torch.randn(n_visible, generator=g, dtype=torch.float64) * 0.5)
        net.c.copy_(torch.randn(n_hidden, generator=g, dtype=torch.float64) * 0.5)
    return net


def exact_rbm_log_z(net: RBMNet) -> float:
    """log sum_v exp(-F(v)) over all 2^V visible states (hidden units summed analytically)."""
    with torch.no_grad():
        return float(torch.logsumexp(-net.free_energy(all_binary(net.n_visible).to(net.W.dtype)), 0))


def tiny_split(dim: int, n: int = 300, seed: int = 0, shape: tuple[int, int, int] | None = None) -> Split:
    """n grey-level 'images' of `dim` pixels with correlated pixels, on 17 levels."""
    g = torch.Generator().manual_seed(seed)
    prototypes = torch.rand(3, dim, generator=g)
    which = torch.randint(0, 3, (n,), generator=g)
    x = (prototypes[which] + 0.15 * torch.randn(n, dim, generator=g)).clamp(0, 1)
    x = torch.round(x * 16) / 16
    return Split(x.reshape(n, *(shape or (1, 1, dim))).float(), which, 17, 3, "train")


# --- AIS machinery ---------------------------------------------------------------------------------

def test_beta_schedules():
    for kind in ("linear", "sm08"):
        for n in (2, 5, 100, 1000, 14500):
            betas = beta_schedule(n, kind)
            assert len(betas) == n and betas[0] == 0 and betas[-1] == 1
            assert (betas[1:] > betas[:-1]).all()
    sm = beta_schedule(14500, "sm08")  # the paper's 500 / 4000 / 10000 split
    assert int((sm < 0.5).sum()) == 500 and int(((sm >= 0.5) & (sm < 0.9)).sum()) == 4000


def test_log_mean_exp_interval():
    w = torch.tensor([1.0, 2.0, 3.0, 6.0], dtype=torch.float64)
    mean, low, high = _log_mean_exp_interval(torch.log(w) + 500.0)  # far outside float range
    sem = float(w.std() / 2.0)
    assert mean == pytest.approx(500.0 + math.log(3.0))
    assert high == pytest.approx(500.0 + math.log(3.0 + 3 * sem))
    assert low == -math.inf  # 3 - 3 * 1.04 < 0


# --- RBM ---------------------------------------------------------------------------------------------

def test_rbm_free_energy_equals_brute_force_sum_over_hidden_states():
    net = random_rbm(7, 8, seed=1)
    v = all_binary(7)[::5]
    h = all_binary(8)  # all 256 hidden states
    with torch.no_grad():
        energies = torch.stack([net.energy(v, hh.expand(len(v), -1)) for hh in h])  # (256, n)
        assert_close(net.free_energy(v), -torch.logsumexp(-energies, 0), atol=1e-9)


def test_rbm_ais_within_0_1_nats_of_exact_log_z_100_chains_1000_betas():
    """12 visible, 8 hidden units, weights ~ N(0, 1): AIS with 100 chains and 1000 temperatures
    (Salakhutdinov & Murray spacing) from the base-rate model lands within 0.1 nats of log Z
    computed by enumerating the 2^12 visible states."""
    net = random_rbm(12, 8, seed=2)
    exact = exact_rbm_log_z(net)
    base = torch.randn(12, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 0.5
    result = rbm_ais(net, base, chains=100, betas=1000, seed=0)
    assert abs(result.log_z - exact) < 0.1, (result.log_z, exact)
    assert result.log_z_low - 0.05 <= exact <= result.log_z_high + 0.05
    again = rbm_ais(net, base, chains=100, betas=1000, seed=0)
    assert again.log_z == result.log_z  # seeded: deterministic


def test_rbm_log_prob_sums_to_one_over_all_configurations():
    """A fitted 12-pixel RBM: sum_v exp(log_prob(v)) over all 2^12 binary images is 1 with the
    exact log Z, and within exp(+-0.1) with the model's own AIS log Z (200 chains, 2000 betas)."""
    train = tiny_split(12, shape=(1, 3, 4))
    model = RBM(n_hidden=8, epochs=30, batch_size=20, lr=0.05, ais_chains=200, ais_betas=2000,
                device="cpu").fit(train, seed=0)
    v = all_binary(12).float().reshape(-1, 1, 3, 4)
    total_ais = torch.logsumexp(model.log_prob(v).double(), 0)
    exact = exact_rbm_log_z(model.net_)
    assert abs(model.log_partition().log_z - exact) < 0.1
    assert abs(float(total_ais)) < 0.1
    model.ais_ = AISResult(exact, exact, exact, torch.zeros(1), 1, 2, "exact")
    assert float(torch.logsumexp(model.log_prob(v).double(), 0)) == pytest.approx(0.0, abs=1e-4)


@pytest.fixture(scope="module")
def binary_digits(digits_splits):
    gen = torch.Generator().manual_seed(0)
    return digits_splits["train"], binarize(digits_splits["test"].x, gen)


@pytest.mark.parametrize("training", ["cd", "pcd"])
def test_trained_rbm_beats_untrained_on_digits(binary_digits, training):
    """On binarised digits a trained RBM (CD-1 or PCD-1, 40 epochs) has a much higher test
    log-likelihood than the untrained one (lr = 0: small random weights and base-rate visible
    biases, i.e. nearly the independent-pixels model, itself ~17 nats better than uniform pixels);
    AIS with 100 chains, 500 temperatures."""
    train, test = binary_digits
    common = dict(n_hidden=50, epochs=40, batch_size=20, momentum=0.5, ais_chains=100, ais_betas=500,
                  device="cpu")
    trained = RBM(training=training, lr=0.05, **common).fit(train, seed=0)
    untrained = RBM(training=training, lr=0.0, epochs=1, **{k: v for k, v in common.items() if k != "epochs"})
    untrained.fit(train, seed=0)
    assert all(math.isfinite(v) for row in trained.history_ for v in row.values())
    lp_trained, lp_untrained = trained.log_prob(test), untrained.log_prob(test)
    assert torch.isfinite(lp_trained).all()
    assert lp_trained.mean() > lp_untrained.mean() + 2.5, (lp_trained.mean(), lp_untrained.mean())
    assert lp_untrained.mean() > -64 * math.log(2) + 10  # base-rate biases beat uniform pixels
    # the anomaly score is the free energy: -log p up to the constant log Z
    assert_close(trained.anomaly_score(test).double() + trained.log_partition().log_z, -lp_trained, atol=1e-3)


# --- fully visible Boltzmann machine ------------------------------------------------------------------

def random_fvbm(dim: int, seed: int, scale: float = 0.5) -> FVBMNet:
    g = torch.Generator().manual_seed(seed)
    net = FVBMNet(dim).double()
    w = torch.randn(dim, dim, generator=g, dtype=torch.float64) * scale
    w = (w + w.T) / math.sqrt(2.0)
    w.fill_diagonal_(0.0)
    with torch.no_grad():
        net.W.copy_(w)
        net.b.copy_(torch.randn(dim, generator=g, dtype=torch.float64) * 0.5 - 0.25 * w.sum(1))
    return net


@pytest.mark.parametrize("scan", ["systematic", "random"])
def test_fvbm_ais_within_0_1_nats_of_exact_log_z_100_chains_1000_betas(scan):
    """12 fully connected units, weights ~ N(0, 0.5^2): AIS with 100 chains, 1000 temperatures and
    one Gibbs sweep each is within 0.1 nats of log Z from enumerating the 2^12 states."""
    net = random_fvbm(12, seed=4)
    with torch.no_grad():
        exact = float(torch.logsumexp(net.log_unnorm(all_binary(12)), 0))
    base = torch.zeros(12, dtype=torch.float64)
    result = fvbm_ais(net, base, chains=100, betas=1000, seed=0, scan=scan)
    assert abs(result.log_z - exact) < 0.1, (result.log_z, exact)


def test_fvbm_gibbs_sweeps_reach_the_exact_marginals():
    """2000 chains after 30 sweeps: unit means within 0.04 of the exact E[v_i] (8 units)."""
    net = random_fvbm(8, seed=5)
    states = all_binary(8)
    with torch.no_grad():
        p = torch.softmax(net.log_unnorm(states), 0)
        exact = p @ states
        g = torch.Generator().manual_seed(0)
        v = torch.zeros(2000, 8, dtype=torch.float64)
        for _ in range(30):
            v = gibbs_sweep(v, net.W, net.b, g, "random")
    assert_close(v.mean(0), exact, atol=0.04)


def test_boltzmann_model_log_prob_normalises():
    """A fitted 12-pixel fully visible BM: sum_v exp(log_prob(v)) over the 2^12 images is within
    exp(+-0.1) of 1 with its AIS log Z (100 chains, 1000 temperatures)."""
    train = tiny_split(12, shape=(1, 3, 4))
    model = BoltzmannMachine(epochs=30, batch_size=20, n_chains=50, ais_chains=100, ais_betas=1000,
                             device="cpu").fit(train, seed=0)
    v = all_binary(12).float().reshape(-1, 1, 3, 4)
    assert abs(float(torch.logsumexp(model.log_prob(v).double(), 0))) < 0.1
    w = model.net_.W.detach()
    assert torch.equal(w, w.T) and torch.all(torch.diagonal(w) == 0)


# --- Gaussian-Bernoulli RBM --------------------------------------------------------------------------

def random_gbrbm(n_visible: int, n_hidden: int, seed: int) -> GBRBMNet:
    g = torch.Generator().manual_seed(seed)
    net = GBRBMNet(n_visible, n_hidden).double()
    with torch.no_grad():
        net.W.copy_(torch.randn(n_visible, n_hidden, generator=g, dtype=torch.float64) * 0.7)
        net.b.copy_(torch.randn(n_visible, generator=g, dtype=torch.float64))
        net.c.copy_(torch.randn(n_hidden, generator=g, dtype=torch.float64) * 0.5)
        net.log_var.copy_(torch.randn(n_visible, generator=g, dtype=torch.float64) * 0.3)
    return net


def exact_gbrbm_log_z(net: GBRBMNet) -> float:
    """Enumerate the 2^H hidden states; the Gaussian integral over v is analytic:
    int exp(-(v-b)^2/(2 s^2) + v t) dv = sqrt(2 pi s^2) exp(b t + s^2 t^2 / 2), t = (W h)_i / s_i."""
    with torch.no_grad():
        h = all_binary(net.n_hidden).to(net.W.dtype)
        sigma = net.sigma
        t = (h @ net.W.T) / sigma
        per_state = h @ net.c + (0.5 * (LOG_2PI + net.log_var) + net.b * t + 0.5 * sigma**2 * t**2).sum(-1)
        return float(torch.logsumexp(per_state, 0))


def test_gbrbm_ais_within_0_1_nats_of_exact_log_z_100_chains_1000_betas():
    """10 Gaussian visible units, 6 hidden units: AIS with 100 chains and 1000 temperatures from a
    factorised Gaussian base is within 0.1 nats of log Z from enumerating the 2^6 hidden states with
    the visible units integrated analytically."""
    net = random_gbrbm(10, 6, seed=6)
    exact = exact_gbrbm_log_z(net)
    g = torch.Generator().manual_seed(7)
    base_mean = torch.randn(10, generator=g, dtype=torch.float64)
    base_std = torch.exp(0.3 * torch.randn(10, generator=g, dtype=torch.float64))
    result = gbrbm_ais(net, base_mean, base_std, chains=100, betas=1000, seed=0)
    assert abs(result.log_z - exact) < 0.1, (result.log_z, exact)


def test_gbrbm_density_integrates_to_one():
    """A fitted 2-pixel GB-RBM: its log_prob (log Z by AIS, 100 chains, 1000 temperatures) is a
    density: exp(log_prob) integrates to 1 +- 10% on a grid covering its mass; and the exact log Z
    (enumeration) agrees with AIS within 0.1 nats, so the standardisation is accounted for."""
    train = tiny_split(2, shape=(1, 1, 2))
    model = GaussianBernoulliRBM(n_hidden=4, epochs=20, batch_size=20, lr=0.01, ais_chains=100,
                                 ais_betas=1000, device="cpu").fit(train, seed=0)
    assert abs(model.log_partition().log_z - exact_gbrbm_log_z(model.net_)) < 0.1
    grid = torch.linspace(-1.5, 2.5, 401)
    step = float(grid[1] - grid[0])
    y = torch.cartesian_prod(grid, grid).reshape(-1, 1, 1, 2)
    mass = float(torch.exp(model.log_prob(y).double()).sum() * step**2)
    assert mass == pytest.approx(1.0, abs=0.1)


# --- deep belief network -----------------------------------------------------------------------------

def exact_dbn(layers: list[RBMNet], v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
    """For a 2-layer DBN and binary v (N, D): exact log p(v), the exact variational bound (expectation
    over q(h1|v) by enumerating h1) and the exact log Z of the top RBM."""
    bottom, top = layers
    h1 = all_binary(bottom.n_hidden).to(v.dtype)
    with torch.no_grad():
        log_z = float(torch.logsumexp(-top.free_energy(h1), 0))
        log_prior = -top.free_energy(h1) - log_z  # (S,)
        log_lik = torch.stack([bernoulli_log_prob(v, bottom.visible_logits(h).expand(len(v), -1)) for h in h1], 1)
        exact = torch.logsumexp(log_lik + log_prior, 1)
        logits = bottom.hidden_logits(v)  # q(h1 | v)
        log_q = torch.stack([bernoulli_log_prob(h, logits) for h in h1], 1)  # (N, S)
        bound = (torch.exp(log_q) * (log_lik + log_prior)).sum(1) + bernoulli_entropy(logits)
    return exact, bound, log_z


def test_dbn_bound_is_below_the_exact_log_likelihood_and_close():
    """A 7-6-5 DBN: the enumerated variational bound is <= the exact log p(v) for all 128 v and
    within 2.5 nats on average; the model's Monte-Carlo bound (2000 posterior samples) matches the
    enumerated one within 0.05 nats on average over the 128 images and 0.3 nats for each."""
    layers = [random_rbm(7, 6, seed=8), random_rbm(6, 5, seed=9)]
    v = all_binary(7)
    exact, bound, log_z = exact_dbn(layers, v)
    assert torch.all(bound <= exact + 1e-9)
    assert float((exact - bound).mean()) < 2.5
    assert float(torch.logsumexp(exact, 0)) == pytest.approx(0.0, abs=1e-9)  # exact p normalises
    mc = unnormalised_bound(layers, v, 2000, torch.Generator().manual_seed(0)) - log_z
    assert abs(float((mc - bound).mean())) < 0.05
    assert_close(mc, bound, atol=0.3)


def test_dbn_model_bound_with_ais_is_below_exact():
    """A fitted 9-6-4 DBN on tiny data: log_prob (AIS for the top RBM, 100 chains, 1000 betas;
    500 posterior samples) is below the exact log p(v) of each binary image, up to 0.1 nats of
    Monte-Carlo and AIS error, and within 2 nats of it on average."""
    train = tiny_split(9, shape=(1, 3, 3))
    model = DBN(hidden_sizes=[6, 4], epochs=20, batch_size=20, lr=0.05, ais_chains=100, ais_betas=1000,
                n_posterior_samples=500, device="cpu").fit(train, seed=0)
    layers = [layer.double() for layer in model.layers_]
    v = binarize(train.x[:40].flatten(1), torch.Generator().manual_seed(1)).double()
    exact, bound, log_z = exact_dbn(layers, v)
    model.layers_.float()
    assert abs(model.log_partition().log_z - log_z) < 0.1
    lp = model.log_prob(v.float().reshape(-1, 1, 3, 3)).double()
    assert torch.all(lp <= exact + 0.1)
    assert float((exact - lp).mean()) < 2.0
    assert_close(lp, bound, atol=0.15)

"""Gaussian-Bernoulli restricted Boltzmann machine for continuous data (Hinton 2010, "A practical
guide to training restricted Boltzmann machines"; Cho, Ilin & Raiko 2011, "Improved
learning of Gaussian-Bernoulli restricted Boltzmann machines").

Gaussian visible units v in R^D with per-pixel standard deviations sigma, binary hidden units h:

    E(v, h) = sum_i (v_i - b_i)^2 / (2 sigma_i^2) - c.h - sum_ij (v_i / sigma_i) W_ij h_j,
    p(v | h) = N(b + sigma * (W h), diag sigma^2),     p(h_j = 1 | v) = sigmoid(c_j + sum_i W_ij v_i / sigma_i),
    F(v)     = sum_i (v_i - b_i)^2 / (2 sigma_i^2) - sum_j softplus(c_j + sum_i W_ij v_i / sigma_i),
    log p(v) = -F(v) - log Z.

Parameterisation: the RBM is fitted to the standardised pixels z = (y - m) / s, with m and s the
per-pixel mean and standard deviation of the dequantised training data (s floored at `min_sigma`),
as Hinton 2010 recommends; then log p(y) = log p(z) - sum_i log s_i, and the model is the same
Gaussian-Bernoulli RBM on y with sigma_y = s sigma, b_y = m + s b. sigma (in z units) starts at 1
(Hinton's fixed unit variances); with `learn_sigma` (the default) it is learned with the other
parameters through log sigma^2 (the parameterisation of Cho et al. 2011, which keeps it positive),
floored at `min_sigma` / s; without, it stays 1.

Training: CD-k on the mean free-energy difference F(v_data) - F(v_model) (gradients by autograd,
SGD with momentum and L2 weight decay on W, written out), on uniformly dequantised training images
(a fresh dequantisation per batch). Likelihood space "discrete": `log_prob` is the log density of
dequantised y in nats. The model's density lives on R^D; restricted to [0, 1]^D it is
sub-normalised, so the resulting bits per dimension are conservative.

log Z by AIS (`genbench.models.ais`, Salakhutdinov & Murray 2008) from a factorised Gaussian base
N(a, diag s^2) fitted to the data's per-pixel moments (in z units: N(0, I)): along the path the
quadratic terms of the base and of the model are mixed with weights (1 - beta) and beta and the
hidden-visible interaction is scaled by beta, so p_beta(v | h) stays Gaussian and the transitions are
the model's own block Gibbs steps at beta. AIS runs lazily the first time `log_prob` needs it
(seeded by the fit seed) and is stored; fit, sample, encode and anomaly_score never run it.

- `anomaly_score(x)` = F(x) + sum_i log s_i, -log p(x) up to the constant log Z (on the images as
  given).
- `encode(x)` = p(h = 1 | x).
- `sample`: `gibbs_steps` block Gibbs steps from z ~ N(0, I), returning the mean of p(y | h) of
  the last step clamped to [0, 1].

Written by hand: no maintained library trains Gaussian-Bernoulli RBMs or runs AIS on them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from genbench.data import Split, dequantize
from genbench.models import register
from genbench.models.ais import AISResult, ais, bernoulli, normal
from genbench.models.base import Model, check_fitted, resolve_device
from genbench.training import seed_everything, train_loop

EVAL_BATCH = 1024
AIS_SEED_OFFSET = 7919
LOG_2PI = math.log(2.0 * math.pi)


class GBRBMNet(nn.Module):
    """W (D, H), b (D), c (H), log_var (D) = log sigma^2."""

    def __init__(self, n_visible: int, n_hidden: int):
        super().__init__()
        self.W = nn.Parameter(torch.zeros(n_visible, n_hidden))
        self.b = nn.Parameter(torch.zeros(n_visible))
        self.c = nn.Parameter(torch.zeros(n_hidden))
        self.log_var = nn.Parameter(torch.zeros(n_visible))

    @property
    def n_visible(self) -> int:
        return self.W.shape[0]

    @property
    def n_hidden(self) -> int:
        return self.W.shape[1]

    @property
    def sigma(self) -> torch.Tensor:
        return torch.exp(0.5 * self.log_var)

    def hidden_logits(self, v: torch.Tensor) -> torch.Tensor:
        return self.c + (v / self.sigma) @ self.W

    def visible_mean(self, h: torch.Tensor) -> torch.Tensor:
        return self.b + self.sigma * (h @ self.W.T)

    def free_energy(self, v: torch.Tensor) -> torch.Tensor:
        quadratic = (0.5 * (v - self.b) ** 2 * torch.exp(-self.log_var)).sum(-1)
        return quadratic - F.softplus(self.hidden_logits(v)).sum(-1)

    def gibbs_vhv(self, v: torch.Tensor, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        """One block Gibbs step v -> h -> v'; returns (v' sample, E[v' | h])."""
        h = bernoulli(torch.sigmoid(self.hidden_logits(v)), generator)
        mean = self.visible_mean(h)
        return mean + self.sigma * normal(tuple(mean.shape), generator, mean.device, mean.dtype), mean


class GBRBMPath:
    """AIS path from the factorised Gaussian N(a, diag s^2) (with the same, ignored, hidden units):

        log f_beta(v) = -sum_i [(1 - beta)(v_i - a_i)^2 / (2 s_i^2) + beta (v_i - b_i)^2 / (2 sigma_i^2)]
                        + sum_j softplus(beta (c_j + sum_i W_ij v_i / sigma_i)),

    log Z_0 = sum_i 1/2 log(2 pi s_i^2) + H log 2. Given h, v is Gaussian with precision
    lambda = (1 - beta)/s^2 + beta/sigma^2 and mean ((1 - beta) a/s^2 + beta b/sigma^2 + beta (W h)/sigma) / lambda.
    """

    def __init__(self, net: GBRBMNet, base_mean: torch.Tensor, base_std: torch.Tensor):
        self.net = net
        self.a = base_mean.to(net.W.device, net.W.dtype)
        self.s2 = (base_std.to(net.W.device, net.W.dtype)) ** 2

    def log_unnorm(self, v: torch.Tensor, beta: float) -> torch.Tensor:
        net = self.net
        quadratic = ((1.0 - beta) * (v - self.a) ** 2 / self.s2
                     + beta * (v - net.b) ** 2 * torch.exp(-net.log_var)).sum(-1) * 0.5
        return -quadratic + F.softplus(beta * net.hidden_logits(v)).sum(-1)

    def transition(self, v: torch.Tensor, beta: float, generator: torch.Generator) -> torch.Tensor:
        net = self.net
        h = bernoulli(torch.sigmoid(beta * net.hidden_logits(v)), generator)
        inv_var = torch.exp(-net.log_var)
        precision = (1.0 - beta) / self.s2 + beta * inv_var
        mean = ((1.0 - beta) * self.a / self.s2 + beta * net.b * inv_var + beta * (h @ net.W.T) / net.sigma) / precision
        return mean + normal(tuple(mean.shape), generator, mean.device, mean.dtype) / torch.sqrt(precision)

    def sample_base(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return self.a + torch.sqrt(self.s2) * normal((n, len(self.a)), generator, self.a.device, self.a.dtype)

    def log_z_base(self) -> float:
        return float((0.5 * (LOG_2PI + torch.log(self.s2.double()))).sum() + self.net.n_hidden * math.log(2.0))


@torch.no_grad()
def gbrbm_ais(net: GBRBMNet, base_mean: torch.Tensor, base_std: torch.Tensor, *, chains: int, betas: int,
              seed: int) -> AISResult:
    generator = torch.Generator(device=net.W.device).manual_seed(seed)
    return ais(GBRBMPath(net, base_mean, base_std), n_chains=chains, n_betas=betas, generator=generator)


@register("gb_rbm")
class GaussianBernoulliRBM(Model):
    """Gaussian-Bernoulli RBM on dequantised images, CD-k; log density with log Z by AIS.

    Hyperparameters: n_hidden, cd_k, epochs, batch_size, lr, momentum, weight_decay, learn_sigma,
    min_sigma, gibbs_steps (of `sample`), ais_chains, ais_betas. `device` is a runtime setting.
    """

    kind = "generative"
    likelihood_space = "discrete"
    constraints = {
        "n_hidden": {"low": 1},
        "cd_k": {"low": 1},
        "epochs": {"low": 1},
        "batch_size": {"low": 1},
        "lr": {"low": 0.0},
        "momentum": {"low": 0.0, "high": 1.0},
        "weight_decay": {"low": 0.0},
        "min_sigma": {"low": 1e-6},
        "gibbs_steps": {"low": 1},
        "ais_chains": {"low": 2},
        "ais_betas": {"low": 2},
    }
    fast_params = {"n_hidden": 16, "epochs": 3, "batch_size": 50, "gibbs_steps": 20,
                   "ais_chains": 16, "ais_betas": 100}

    def __init__(self, n_hidden: int = 100, cd_k: int = 1, epochs: int = 30, batch_size: int = 20,
                 lr: float = 0.001, momentum: float = 0.9, weight_decay: float = 1e-4, learn_sigma: bool = True,
                 min_sigma: float = 0.01, gibbs_steps: int = 1000, ais_chains: int = 100, ais_betas: int = 5000,
                 device: str = "auto"):
        self.n_hidden = n_hidden
        self.cd_k = cd_k
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.learn_sigma = learn_sigma
        self.min_sigma = min_sigma
        self.gibbs_steps = gibbs_steps
        self.ais_chains = ais_chains
        self.ais_betas = ais_betas
        self.device = device

    @property
    def likelihood_info(self) -> dict:
        return {"estimator": "estimate",
                "method": f"AIS estimate of log Z (Salakhutdinov & Murray 2008), {self.ais_chains} chains, "
                          f"{self.ais_betas} temperatures, factorised Gaussian base; exact free energy; "
                          "Gaussian-Bernoulli RBM density on R^D, sub-normalised on [0, 1]^D",
                "samples": self.ais_chains}

    # --- training ---------------------------------------------------------------------------------
    def fit(self, train: Split, *, seed: int, val: Split | None = None) -> "GaussianBernoulliRBM":
        device = resolve_device(self.device)
        self.image_shape_ = train.image_shape
        self.levels_ = train.levels
        self.seed_ = seed
        x = train.x.float().flatten(1)
        y = dequantize(x, train.levels, torch.Generator().manual_seed(seed))
        self.shift_ = y.mean(0)
        self.scale_ = y.std(0).clamp_min(self.min_sigma)
        seed_everything(seed)
        net = GBRBMNet(x.shape[1], self.n_hidden)
        with torch.no_grad():
            net.W.copy_(torch.randn(net.W.shape, generator=torch.Generator().manual_seed(seed)) * 0.01)
        self.net_ = net = net.to(device)
        params = [net.W, net.b, net.c] + ([net.log_var] if self.learn_sigma else [])
        velocity = [torch.zeros_like(p) for p in params]
        min_log_var = (2.0 * torch.log(self.min_sigma / self.scale_)).to(device)
        shift, scale = self.shift_.to(device), self.scale_.to(device)
        levels = train.levels

        def reconstruction_sq_error(v0: torch.Tensor) -> torch.Tensor:
            return ((net.visible_mean(torch.sigmoid(net.hidden_logits(v0))) - v0) ** 2).sum(-1).mean()

        def held_out(batch: tuple[torch.Tensor, ...], generator: torch.Generator) -> dict[str, torch.Tensor]:
            v0 = (dequantize(batch[0], levels, generator=generator) - shift) / scale
            return {"reconstruction_sq_error": reconstruction_sq_error(v0)}

        def step(batch: tuple[torch.Tensor, ...], state) -> dict[str, torch.Tensor]:
            (xb,) = batch
            v0 = (dequantize(xb, levels, generator=state.generator) - shift) / scale
            with torch.no_grad():
                v = v0
                for _ in range(self.cd_k):
                    v, _mean = net.gibbs_vhv(v, state.generator)
            gap = net.free_energy(v0).mean() - net.free_energy(v).mean()
            for p in params:
                p.grad = None
            gap.backward()
            with torch.no_grad():
                for p, vel in zip(params, velocity):
                    g = p.grad + self.weight_decay * p if p is net.W else p.grad
                    vel.mul_(self.momentum).add_(g, alpha=-self.lr)
                    p.add_(vel)
                torch.maximum(net.log_var, min_log_var, out=net.log_var)
                recon = reconstruction_sq_error(v0)
            return {"free_energy_gap": gap.detach(), "reconstruction_sq_error": recon.detach()}

        self.history_ = train_loop("gb_rbm", step, (x,), epochs=self.epochs, batch_size=self.batch_size,
                                   seed=seed, device=device, modules={"gb_rbm": net},
                                   validation=(held_out, (val.x.float().flatten(1),)) if val is not None else None)
        net.eval()
        for p in net.parameters():
            p.grad = None
        self.ais_ = None  # computed on first use by log_partition()
        return self

    # --- inference --------------------------------------------------------------------------------
    def _device(self) -> torch.device:
        return self.net_.W.device

    def _batches(self, x: torch.Tensor):
        """Standardised batches z = (y - m) / s on the model's device."""
        check_fitted(self, "net_")
        shift, scale = self.shift_.to(self._device()), self.scale_.to(self._device())
        for i in range(0, len(x), EVAL_BATCH):
            yield (x[i:i + EVAL_BATCH].float().flatten(1).to(self._device()) - shift) / scale

    @property
    def _log_scale(self) -> float:
        """sum_i log s_i: log |dz/dy|^-1, the change of variables from z back to pixel units."""
        return float(torch.log(self.scale_.double()).sum())

    @torch.no_grad()
    def log_partition(self) -> AISResult:
        """AIS estimate of log Z (run once, on `device`, seeded by the fit seed; then stored)."""
        check_fitted(self, "net_")
        if getattr(self, "ais_", None) is None:
            self.net_.to(resolve_device(self.device))
            zeros = torch.zeros(self.net_.n_visible)  # the data moments in z units: N(0, I)
            self.ais_ = gbrbm_ais(self.net_, zeros, torch.ones_like(zeros), chains=self.ais_chains,
                                  betas=self.ais_betas, seed=self.seed_ + AIS_SEED_OFFSET)
        return self.ais_

    @torch.no_grad()
    def free_energy(self, x: torch.Tensor) -> torch.Tensor:
        """F(y) in pixel units: F_z(z) + sum_i log s_i, (N,) float64."""
        return torch.cat([self.net_.free_energy(b).double().cpu() for b in self._batches(x)]) + self._log_scale

    @torch.no_grad()
    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(y) = -F_z(z) - log Z_z - sum_i log s_i, the log density of dequantised images y on
        [0, 1]^D (N,) in nats; log Z by AIS."""
        log_z = self.log_partition().log_z
        return (-self.free_energy(x) - log_z).float()

    @torch.no_grad()
    def anomaly_score(self, x: torch.Tensor) -> torch.Tensor:
        """The free energy F(x): -log p(x) up to the constant log Z (no AIS)."""
        return self.free_energy(x).float()

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """p(h = 1 | x), (N, n_hidden)."""
        return torch.cat([torch.sigmoid(self.net_.hidden_logits(b)).cpu() for b in self._batches(x)])

    @torch.no_grad()
    def sample(self, n: int, *, y: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """`gibbs_steps` block Gibbs steps from the base Gaussian (noise drawn on the CPU with
        `generator`); returns E[v | h] of the last step clamped to [0, 1], (n, C, H, W)."""
        if y is not None:
            raise ValueError("gb_rbm is unconditional: sample() takes no labels y")
        check_fitted(self, "net_")
        net = self.net_
        device = self._device()
        v = normal((n, net.n_visible), generator, device)
        mean = v
        for _ in range(self.gibbs_steps):
            v, mean = net.gibbs_vhv(v, generator)
        images = self.shift_.to(device) + self.scale_.to(device) * mean
        return images.clamp(0.0, 1.0).cpu().reshape(n, *self.image_shape_)

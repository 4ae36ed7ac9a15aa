"""Bernoulli-Bernoulli restricted Boltzmann machine (Smolensky 1986; Hinton 2002, "Training products
of experts by minimizing contrastive divergence"; Tieleman 2008, "Training restricted Boltzmann
machines using approximations to the likelihood gradient").

    E(v, h) = -b.v - c.h - v^T W h,      p(v, h) = exp(-E(v, h)) / Z,
    F(v)    = -log sum_h exp(-E(v, h)) = -b.v - sum_j softplus(c_j + v.W_j)   (free energy),
    log p(v) = -F(v) - log Z.

Training: stochastic gradient on the average free energy difference F(v_data) - F(v_model), which
is the (Rao-Blackwellised over h) CD / PCD estimate of the negative log-likelihood gradient; the
negative samples v_model come from `cd_k` block-Gibbs steps started at the data (CD-k, Hinton 2002)
or from persistent chains carried across updates (PCD-k, Tieleman 2008). SGD with momentum and
weight decay as in Hinton 2010 ("A practical guide to training RBMs"); the visible biases start at
the log-odds of the data marginals, the weights at N(0, 0.01^2). The likelihood space is "binary":
every batch is binarised afresh (dynamic binarisation).

log Z comes from annealed importance sampling (`genbench.models.ais`, Salakhutdinov & Murray 2008)
from the base-rate model (zero weights, visible biases fitted to the training marginals), so
`log_prob` is an estimate (AIS is unbiased in Z, so on average it under-estimates log Z and
over-estimates log p a little; the interval is in `log_partition()`). AIS runs once, lazily, the
first time `log_prob` needs it (deterministic: seeded with the fit seed) and is then stored with the
model; `fit`, `sample`, `encode` and `anomaly_score` never run it, so the ten one-class fits of the
anomaly protocol do not pay for it.

`anomaly_score(x)` is the free energy F(x): for binary x it is -log p(x) - log Z, the same ranking as
-log p; the pipeline passes the grey-level test images, on which F is the usual continuous extension.
`encode(x)` = p(h = 1 | x), the hidden activation probabilities. `sample` runs `gibbs_steps` block
Gibbs steps from uniformly random visible states and returns the visible probabilities p(v = 1 | h)
of the last step.

Written by hand: no maintained library trains RBMs in torch with CD/PCD and AIS (scikit-learn's
BernoulliRBM is PCD-only on the CPU and has no partition function).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from genbench.data import Split, binarize
from genbench.models import register
from genbench.models.ais import AISResult, ais, base_rate_logits, bernoulli, uniform
from genbench.models.base import Model, check_fitted, resolve_device
from genbench.training import seed_everything, train_loop

EVAL_BATCH = 1024
AIS_SEED_OFFSET = 7919  # the AIS chains' generator: fit seed + this, so it differs from the training stream


class RBMNet(nn.Module):
    """The parameters of a Bernoulli-Bernoulli RBM and its conditionals. W (V, H), b (V), c (H)."""

    def __init__(self, n_visible: int, n_hidden: int):
        super().__init__()
        self.W = nn.Parameter(torch.zeros(n_visible, n_hidden))
        self.b = nn.Parameter(torch.zeros(n_visible))
        self.c = nn.Parameter(torch.zeros(n_hidden))

    @property
    def n_visible(self) -> int:
        return self.W.shape[0]

    @property
    def n_hidden(self) -> int:
        return self.W.shape[1]

    def hidden_logits(self, v: torch.Tensor) -> torch.Tensor:
        return self.c + v @ self.W

    def visible_logits(self, h: torch.Tensor) -> torch.Tensor:
        return self.b + h @ self.W.T

    def free_energy(self, v: torch.Tensor) -> torch.Tensor:
        """F(v) = -b.v - sum_j softplus(c_j + v.W_j), (N,)."""
        return -(v @ self.b) - F.softplus(self.hidden_logits(v)).sum(-1)

    def energy(self, v: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return -(v @ self.b) - (h @ self.c) - ((v @ self.W) * h).sum(-1)

    def gibbs_vhv(self, v: torch.Tensor, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        """One block Gibbs step v -> h -> v'; returns (v' sample, p(v' = 1 | h))."""
        h = bernoulli(torch.sigmoid(self.hidden_logits(v)), generator)
        p = torch.sigmoid(self.visible_logits(h))
        return bernoulli(p, generator), p

    def init_from_data(self, x: torch.Tensor, generator: torch.Generator, weight_std: float = 0.01) -> None:
        """Hinton 2010: W ~ N(0, 0.01^2), b = log-odds of the data marginals, c = 0."""
        with torch.no_grad():
            self.W.copy_(torch.randn(self.W.shape, generator=generator) * weight_std)
            self.b.copy_(base_rate_logits(x.cpu()).float())
            self.c.zero_()


class RBMPath:
    """The AIS path of Salakhutdinov & Murray 2008 for an RBM: the joint energy tempered
    by beta against a base of independent visible units with logits `base` (the same hidden units,
    with zero weights), hidden units summed out:

        log f_beta(v) = (1 - beta) a.v + beta b.v + sum_j softplus(beta (c_j + v.W_j)),

    so log Z_0 = sum_i softplus(a_i) + H log 2, and f_1 is the RBM's exp(-F(v))."""

    def __init__(self, net: RBMNet, base: torch.Tensor):
        self.net = net
        self.base = base.to(net.W.device, net.W.dtype)

    def log_unnorm(self, v: torch.Tensor, beta: float) -> torch.Tensor:
        net = self.net
        return ((1.0 - beta) * (v @ self.base) + beta * (v @ net.b)
                + F.softplus(beta * net.hidden_logits(v)).sum(-1))

    def transition(self, v: torch.Tensor, beta: float, generator: torch.Generator) -> torch.Tensor:
        net = self.net
        h = bernoulli(torch.sigmoid(beta * net.hidden_logits(v)), generator)
        return bernoulli(torch.sigmoid((1.0 - beta) * self.base + beta * net.visible_logits(h)), generator)

    def sample_base(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return bernoulli(torch.sigmoid(self.base).expand(n, -1).contiguous(), generator)

    def log_z_base(self) -> float:
        return float(F.softplus(self.base.double()).sum() + self.net.n_hidden * math.log(2.0))


def train_rbm(name: str, net: RBMNet, x: torch.Tensor, *, training: str, cd_k: int, epochs: int,
              batch_size: int, lr: float, momentum: float, weight_decay: float, seed: int,
              device: torch.device,
              make_input: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
              val: torch.Tensor | None = None,
              ) -> list[dict[str, float]]:
    """CD-k or PCD-k training of `net` on data x (N, ...) through the shared training loop; returns
    the per-epoch history. Each batch becomes binary visible states by `make_input(batch, generator)`,
    by default a fresh binarisation of the probabilities in [0, 1] (dynamic binarisation); the DBN
    passes an upward sampling pass through the layers below instead.

    The update is the gradient of the mean free-energy difference F(v_data) - F(v_model) written out
    (dF/dW = -v p(h|v)^T, dF/db = -v, dF/dc = -p(h|v)), with classical momentum and an L2 penalty on
    the weights only (Hinton 2010); written out rather than through autograd and
    torch.optim because it is a handful of matrix products per step. With `val` (held-out images), the
    history also has their reconstruction error after every epoch (`val_reconstruction_bce`)."""
    params = (net.W, net.b, net.c)
    velocity = [torch.zeros_like(p) for p in params]
    chains: dict[str, torch.Tensor] = {}

    def reconstruction_bce(v0: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
        reconstruction = torch.sigmoid(net.visible_logits(h0))
        return F.binary_cross_entropy(reconstruction, v0, reduction="none").sum(-1).mean()

    def held_out(batch: tuple[torch.Tensor, ...], generator: torch.Generator) -> dict[str, torch.Tensor]:
        v0 = make_input(batch[0], generator) if make_input else binarize(batch[0], generator=generator)
        return {"reconstruction_bce": reconstruction_bce(v0, torch.sigmoid(net.hidden_logits(v0)))}

    @torch.no_grad()
    def step(batch: tuple[torch.Tensor, ...], state) -> dict[str, torch.Tensor]:
        (xb,) = batch
        v0 = make_input(xb, state.generator) if make_input else binarize(xb, generator=state.generator)
        if training == "pcd":
            if "v" not in chains:  # persistent chains start at uniformly random states
                chains["v"] = bernoulli(torch.full_like(v0, 0.5), state.generator)
            v = chains["v"]
        else:
            v = v0
        for _ in range(cd_k):
            v, _p = net.gibbs_vhv(v, state.generator)
        if training == "pcd":
            chains["v"] = v
        n0, n1 = len(v0), len(v)
        h0 = torch.sigmoid(net.hidden_logits(v0))
        h1 = torch.sigmoid(net.hidden_logits(v))
        grads = (-(v0.T @ h0) / n0 + (v.T @ h1) / n1 + weight_decay * net.W,  # d gap / dW
                 -v0.mean(0) + v.mean(0),
                 -h0.mean(0) + h1.mean(0))
        for p, vel, g in zip(params, velocity, grads):
            vel.mul_(momentum).add_(g, alpha=-lr)
            p.add_(vel)
        gap = net.free_energy(v0).mean() - net.free_energy(v).mean()
        return {"free_energy_gap": gap.detach(), "reconstruction_bce": reconstruction_bce(v0, h0).detach()}

    net.train()
    history = train_loop(name, step, (x.float(),), epochs=epochs, batch_size=batch_size, seed=seed,
                         device=device, modules={"rbm": net},
                         validation=(held_out, (val.float(),)) if val is not None else None)
    net.eval()
    return history


@torch.no_grad()
def rbm_ais(net: RBMNet, base: torch.Tensor, *, chains: int, betas: int, seed: int) -> AISResult:
    generator = torch.Generator(device=net.W.device).manual_seed(seed)
    return ais(RBMPath(net, base), n_chains=chains, n_betas=betas, generator=generator)


@register("rbm")
class RBM(Model):
    """Bernoulli-Bernoulli RBM trained by CD-k or PCD-k; log-likelihood with log Z by AIS.

    Hyperparameters: n_hidden, training ("cd" or "pcd"), cd_k (Gibbs steps per update), epochs,
    batch_size, lr, momentum, weight_decay (SGD), gibbs_steps (of `sample`), ais_chains, ais_betas
    (AIS of log Z, Salakhutdinov & Murray 2008 temperature spacing). `device` is a runtime setting.
    """

    kind = "generative"
    likelihood_space = "binary"
    constraints = {
        "n_hidden": {"low": 1},
        "training": {"choices": ("cd", "pcd")},
        "cd_k": {"low": 1},
        "epochs": {"low": 1},
        "batch_size": {"low": 1},
        "lr": {"low": 0.0},
        "momentum": {"low": 0.0, "high": 1.0},
        "weight_decay": {"low": 0.0},
        "gibbs_steps": {"low": 1},
        "ais_chains": {"low": 2},
        "ais_betas": {"low": 2},
    }
    fast_params = {"n_hidden": 16, "epochs": 3, "batch_size": 50, "gibbs_steps": 20,
                   "ais_chains": 16, "ais_betas": 100}

    def __init__(self, n_hidden: int = 100, training: str = "cd", cd_k: int = 1, epochs: int = 100,
                 batch_size: int = 20, lr: float = 0.01, momentum: float = 0.9, weight_decay: float = 1e-4,
                 gibbs_steps: int = 1000, ais_chains: int = 100, ais_betas: int = 5000,
                 device: str = "auto"):
        self.n_hidden = n_hidden
        self.training = training
        self.cd_k = cd_k
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.gibbs_steps = gibbs_steps
        self.ais_chains = ais_chains
        self.ais_betas = ais_betas
        self.device = device

    @property
    def likelihood_info(self) -> dict:
        return {"estimator": "estimate",
                "method": f"AIS estimate of log Z (Salakhutdinov & Murray 2008), {self.ais_chains} chains, "
                          f"{self.ais_betas} temperatures; exact free energy",
                "samples": self.ais_chains}

    # --- training ---------------------------------------------------------------------------------
    def fit(self, train: Split, *, seed: int, val: Split | None = None) -> "RBM":
        device = resolve_device(self.device)
        self.image_shape_ = train.image_shape
        self.seed_ = seed
        x = train.x.float().flatten(1)
        seed_everything(seed)
        net = RBMNet(x.shape[1], self.n_hidden)
        net.init_from_data(x, torch.Generator().manual_seed(seed))
        self.net_ = net.to(device)
        self.base_logits_ = base_rate_logits(x).float()  # the AIS base model (CPU tensor)
        self.history_ = train_rbm("rbm", self.net_, x, training=self.training, cd_k=self.cd_k,
                                  epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                                  momentum=self.momentum, weight_decay=self.weight_decay, seed=seed,
                                  device=device, val=val.x.flatten(1) if val is not None else None)
        self.ais_ = None  # computed on first use by log_partition()
        return self

    # --- inference --------------------------------------------------------------------------------
    def _device(self) -> torch.device:
        return self.net_.W.device

    def _batches(self, x: torch.Tensor):
        check_fitted(self, "net_")
        self.net_.eval()
        for i in range(0, len(x), EVAL_BATCH):
            yield x[i:i + EVAL_BATCH].float().flatten(1).to(self._device())

    @torch.no_grad()
    def log_partition(self) -> AISResult:
        """AIS estimate of log Z (run once, on `device`, seeded by the fit seed; then stored)."""
        check_fitted(self, "net_")
        if getattr(self, "ais_", None) is None:
            self.net_.to(resolve_device(self.device))
            self.ais_ = rbm_ais(self.net_, self.base_logits_, chains=self.ais_chains, betas=self.ais_betas,
                                seed=self.seed_ + AIS_SEED_OFFSET)
        return self.ais_

    @torch.no_grad()
    def free_energy(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.net_.free_energy(b).cpu() for b in self._batches(x)])

    @torch.no_grad()
    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(v) = -F(v) - log Z for binary images v, (N,) nats; log Z by AIS."""
        log_z = self.log_partition().log_z
        return (-self.free_energy(x).double() - log_z).float()

    @torch.no_grad()
    def anomaly_score(self, x: torch.Tensor) -> torch.Tensor:
        """The free energy F(x): -log p(x) up to the constant log Z (no AIS needed)."""
        return self.free_energy(x)

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """p(h = 1 | x), (N, n_hidden)."""
        return torch.cat([torch.sigmoid(self.net_.hidden_logits(b)).cpu() for b in self._batches(x)])

    @torch.no_grad()
    def sample(self, n: int, *, y: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """`gibbs_steps` block Gibbs steps from uniform random visible states (noise drawn on the CPU
        with `generator`); returns p(v = 1 | h) of the last step, (n, C, H, W) in [0, 1]."""
        if y is not None:
            raise ValueError("rbm is unconditional: sample() takes no labels y")
        check_fitted(self, "net_")
        net = self.net_
        v = (uniform((n, net.n_visible), generator, self._device()) < 0.5).float()
        p = v
        for _ in range(self.gibbs_steps):
            v, p = net.gibbs_vhv(v, generator)
        return p.cpu().reshape(n, *self.image_shape_)

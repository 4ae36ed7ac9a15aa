"""Fully visible Boltzmann machine (Ackley, Hinton & Sejnowski 1985, "A learning algorithm for
Boltzmann machines"), i.e. a fully connected pairwise binary Markov random field over the pixels:

    p(v) = exp(b.v + 1/2 v^T W v) / Z,     W symmetric with zero diagonal,
    p(v_i = 1 | v_-i) = sigmoid(b_i + sum_j W_ij v_j).

Training: the log-likelihood gradient is <v v^T>_data - <v v^T>_model (and <v>_data - <v>_model for
b); the model expectations come from persistent Gibbs chains (persistent contrastive divergence,
Tieleman 2008; "stochastic maximum likelihood", Younes 1989), `sweeps` Gibbs sweeps per update.
A sweep updates every unit once from its conditional, vectorised over the chains: in a fixed
order ("systematic" scan) or in a fresh random order each sweep ("random" scan); both leave p
invariant. SGD with momentum and L2 weight decay on W; b starts at the log-odds of the data
marginals and W at 0 (the independent-units model). The likelihood space is "binary": each batch
is binarised afresh.

log Z by annealed importance sampling (`genbench.models.ais`) from the independent-units base with
the data marginals (Salakhutdinov & Murray 2008), along log f_beta(v) = (1 - beta) a.v +
beta (b.v + 1/2 v^T W v), one Gibbs sweep per temperature. As for the RBM, AIS runs lazily the first
time `log_prob` needs it (seeded by the fit seed) and is stored; fit, sample, encode and
anomaly_score never run it.

- `anomaly_score(x)` = the energy E(x) = -(b.x + 1/2 x^T W x) = -log p(x) - log Z, on the images as
  given (grey levels in the one-class protocol): same ranking as -log p for binary x, no AIS.
- `encode(x)` = the conditionals p(x_i = 1 | x_-i) = sigmoid(b + W x), (N, D): what each pixel
  "should" be given all the others (the model has no latent variables).
- `sample` runs `gibbs_steps` sweeps from uniformly random states and returns the conditionals
  p(v_i = 1 | v_-i) of the last state (a smooth image in [0, 1]).

Written by hand: no maintained library fits fully visible Boltzmann machines in torch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from genbench.data import Split, binarize
from genbench.models import register
from genbench.models.ais import AISResult, ais, base_rate_logits, uniform
from genbench.models.base import Model, check_fitted, resolve_device
from genbench.training import seed_everything, train_loop

EVAL_BATCH = 1024
AIS_SEED_OFFSET = 7919


class FVBMNet(nn.Module):
    """W (D, D) symmetric with zero diagonal (kept so by every update), b (D)."""

    def __init__(self, dim: int):
        super().__init__()
        self.W = nn.Parameter(torch.zeros(dim, dim))
        self.b = nn.Parameter(torch.zeros(dim))

    @property
    def dim(self) -> int:
        return self.b.shape[0]

    def log_unnorm(self, v: torch.Tensor) -> torch.Tensor:
        """b.v + 1/2 v^T W v, (N,): minus the energy."""
        return v @ self.b + 0.5 * ((v @ self.W) * v).sum(-1)

    def conditionals(self, v: torch.Tensor) -> torch.Tensor:
        """p(v_i = 1 | v_-i) for every i, (N, D)."""
        return torch.sigmoid(self.b + v @ self.W)


def gibbs_sweep(v: torch.Tensor, weights: torch.Tensor, bias: torch.Tensor,
                generator: torch.Generator | None, scan: str = "systematic") -> torch.Tensor:
    """One Gibbs sweep over all units of the pairwise model with logits bias_i + sum_j weights_ij v_j
    (weights symmetric, zero diagonal), vectorised over the chains v (n, D); returns new states.

    Unit i becomes 1 iff logit(u_i) < its logit, u_i ~ U[0, 1) (the same event as u_i < sigmoid),
    so all the noise of a sweep is drawn at once; the states are held unit-major (D, n) so that each
    update is one matrix-vector product and one comparison written in place."""
    n, dim = v.shape
    states = v.T.contiguous()
    u = uniform((dim, n), generator, v.device, v.dtype)
    threshold = torch.log(u) - torch.log1p(-u) - bias[:, None]
    if scan == "random":
        where = generator.device if generator is not None else torch.device("cpu")
        order = torch.randperm(dim, generator=generator, device=where).tolist()
    else:
        order = range(dim)
    for i in order:
        torch.lt(threshold[i], weights[i] @ states, out=states[i])
    return states.T.contiguous()


class FVBMPath:
    """AIS path log f_beta(v) = (1 - beta) a.v + beta (b.v + 1/2 v^T W v) from independent units
    with logits a (log Z_0 = sum_i softplus(a_i)); one Gibbs sweep at beta per temperature."""

    def __init__(self, net: FVBMNet, base: torch.Tensor, scan: str = "systematic"):
        self.net = net
        self.base = base.to(net.W.device, net.W.dtype)
        self.scan = scan

    def log_unnorm(self, v: torch.Tensor, beta: float) -> torch.Tensor:
        return (1.0 - beta) * (v @ self.base) + beta * self.net.log_unnorm(v)

    def transition(self, v: torch.Tensor, beta: float, generator: torch.Generator) -> torch.Tensor:
        net = self.net
        return gibbs_sweep(v, beta * net.W, (1.0 - beta) * self.base + beta * net.b, generator, self.scan)

    def sample_base(self, n: int, generator: torch.Generator) -> torch.Tensor:
        p = torch.sigmoid(self.base).expand(n, -1)
        return (uniform(tuple(p.shape), generator, p.device, p.dtype) < p).to(p.dtype)

    def log_z_base(self) -> float:
        return float(F.softplus(self.base.double()).sum())


@torch.no_grad()
def fvbm_ais(net: FVBMNet, base: torch.Tensor, *, chains: int, betas: int, seed: int,
             scan: str = "systematic") -> AISResult:
    generator = torch.Generator(device=net.W.device).manual_seed(seed)
    return ais(FVBMPath(net, base, scan), n_chains=chains, n_betas=betas, generator=generator)


@register("boltzmann")
class BoltzmannMachine(Model):
    """Fully visible Boltzmann machine trained by PCD; log-likelihood with log Z by AIS.

    Hyperparameters: epochs, batch_size, lr, momentum, weight_decay (SGD), n_chains (persistent
    chains), sweeps (Gibbs sweeps per update), scan ("systematic" or "random"), gibbs_steps (sweeps of
    `sample`), ais_chains, ais_betas. `device` is a runtime setting.
    """

    kind = "generative"
    likelihood_space = "binary"
    constraints = {
        "epochs": {"low": 1},
        "batch_size": {"low": 1},
        "lr": {"low": 0.0},
        "momentum": {"low": 0.0, "high": 1.0},
        "weight_decay": {"low": 0.0},
        "n_chains": {"low": 1},
        "sweeps": {"low": 1},
        "scan": {"choices": ("systematic", "random")},
        "gibbs_steps": {"low": 1},
        "ais_chains": {"low": 2},
        "ais_betas": {"low": 2},
    }
    fast_params = {"epochs": 2, "batch_size": 50, "n_chains": 20, "gibbs_steps": 10,
                   "ais_chains": 16, "ais_betas": 50}

    def __init__(self, epochs: int = 100, batch_size: int = 50, lr: float = 0.005, momentum: float = 0.9,
                 weight_decay: float = 1e-4, n_chains: int = 100, sweeps: int = 1, scan: str = "systematic",
                 gibbs_steps: int = 200, ais_chains: int = 100, ais_betas: int = 2000, device: str = "auto"):
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.n_chains = n_chains
        self.sweeps = sweeps
        self.scan = scan
        self.gibbs_steps = gibbs_steps
        self.ais_chains = ais_chains
        self.ais_betas = ais_betas
        self.device = device

    @property
    def likelihood_info(self) -> dict:
        return {"estimator": "estimate",
                "method": f"AIS estimate of log Z (Salakhutdinov & Murray 2008), {self.ais_chains} chains, "
                          f"{self.ais_betas} temperatures, one {self.scan} Gibbs sweep each; exact energy",
                "samples": self.ais_chains}

    # --- training ---------------------------------------------------------------------------------
    def fit(self, train: Split, *, seed: int, val: Split | None = None) -> "BoltzmannMachine":
        device = resolve_device(self.device)
        self.image_shape_ = train.image_shape
        self.seed_ = seed
        x = train.x.float().flatten(1)
        seed_everything(seed)
        net = FVBMNet(x.shape[1])
        self.base_logits_ = base_rate_logits(x).float()
        with torch.no_grad():
            net.b.copy_(self.base_logits_)
        self.net_ = net = net.to(device)
        mask = 1.0 - torch.eye(net.dim, device=device)  # keeps the diagonal at zero
        vel_w, vel_b = torch.zeros_like(net.W), torch.zeros_like(net.b)
        chains: dict[str, torch.Tensor] = {}

        def neg_pseudo_log_likelihood(v0: torch.Tensor) -> torch.Tensor:
            return F.binary_cross_entropy(net.conditionals(v0), v0, reduction="none").sum(-1).mean()

        def held_out(batch: tuple[torch.Tensor, ...], generator: torch.Generator) -> dict[str, torch.Tensor]:
            return {"neg_pseudo_log_likelihood": neg_pseudo_log_likelihood(binarize(batch[0], generator=generator))}

        @torch.no_grad()
        def step(batch: tuple[torch.Tensor, ...], state) -> dict[str, torch.Tensor]:
            (xb,) = batch
            v0 = binarize(xb, generator=state.generator)
            if "v" not in chains:  # persistent chains from uniformly random states
                chains["v"] = (uniform((self.n_chains, net.dim), state.generator, device) < 0.5).float()
            v = chains["v"]
            for _ in range(self.sweeps):
                v = gibbs_sweep(v, net.W, net.b, state.generator, self.scan)
            chains["v"] = v
            # gradient of the negative log-likelihood (data term minus model term, negated)
            grad_w = -(v0.T @ v0 / len(v0) - v.T @ v / len(v)) * mask + self.weight_decay * net.W
            grad_b = -(v0.mean(0) - v.mean(0))
            vel_w.mul_(self.momentum).add_(grad_w, alpha=-self.lr)
            vel_b.mul_(self.momentum).add_(grad_b, alpha=-self.lr)
            net.W.add_(vel_w)
            net.b.add_(vel_b)
            return {"energy_gap": net.log_unnorm(v).mean() - net.log_unnorm(v0).mean(),
                    "neg_pseudo_log_likelihood": neg_pseudo_log_likelihood(v0)}

        self.history_ = train_loop("boltzmann", step, (x,), epochs=self.epochs, batch_size=self.batch_size,
                                   seed=seed, device=device, modules={"fvbm": net},
                                   validation=(held_out, (val.x.float().flatten(1),)) if val is not None else None)
        net.eval()
        self.ais_ = None  # computed on first use by log_partition()
        return self

    # --- inference --------------------------------------------------------------------------------
    def _device(self) -> torch.device:
        return self.net_.W.device

    def _batches(self, x: torch.Tensor):
        check_fitted(self, "net_")
        for i in range(0, len(x), EVAL_BATCH):
            yield x[i:i + EVAL_BATCH].float().flatten(1).to(self._device())

    @torch.no_grad()
    def log_partition(self) -> AISResult:
        """AIS estimate of log Z (run once, on `device`, seeded by the fit seed; then stored)."""
        check_fitted(self, "net_")
        if getattr(self, "ais_", None) is None:
            self.net_.to(resolve_device(self.device))
            self.ais_ = fvbm_ais(self.net_, self.base_logits_, chains=self.ais_chains, betas=self.ais_betas,
                                 seed=self.seed_ + AIS_SEED_OFFSET, scan=self.scan)
        return self.ais_

    @torch.no_grad()
    def energy(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([-self.net_.log_unnorm(b).cpu() for b in self._batches(x)])

    @torch.no_grad()
    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(v) = b.v + 1/2 v^T W v - log Z for binary images v, (N,) nats; log Z by AIS."""
        log_z = self.log_partition().log_z
        return (-self.energy(x).double() - log_z).float()

    @torch.no_grad()
    def anomaly_score(self, x: torch.Tensor) -> torch.Tensor:
        """The energy -(b.x + 1/2 x^T W x): -log p(x) up to the constant log Z (no AIS)."""
        return self.energy(x)

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """p(x_i = 1 | x_-i), (N, D)."""
        return torch.cat([self.net_.conditionals(b).cpu() for b in self._batches(x)])

    @torch.no_grad()
    def sample(self, n: int, *, y: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """`gibbs_steps` sweeps from uniform random states (noise drawn on the CPU with `generator`);
        returns the conditionals p(v_i = 1 | v_-i) of the last state, (n, C, H, W) in [0, 1]."""
        if y is not None:
            raise ValueError("boltzmann is unconditional: sample() takes no labels y")
        check_fitted(self, "net_")
        net = self.net_
        v = (uniform((n, net.dim), generator, self._device()) < 0.5).float()
        for _ in range(self.gibbs_steps):
            v = gibbs_sweep(v, net.W, net.b, generator, self.scan)
        return net.conditionals(v).cpu().reshape(n, *self.image_shape_)

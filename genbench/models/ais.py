"""Annealed importance sampling (AIS) of log partition functions (not a registered model).

AIS (Neal 2001, "Annealed importance sampling") estimates the normalising constant Z_K of an
unnormalised target f_K from a tractable base f_0 with known Z_0 through intermediate distributions
f_k, k = 0..K, on a path indexed by inverse temperatures 0 = beta_0 < beta_1 < ... < beta_K = 1.
Each of M independent chains starts from an exact sample x_0 ~ p_0, and for k = 1..K

    log w  +=  log f_k(x_{k-1}) - log f_{k-1}(x_{k-1}),        x_k ~ T_k(x_{k-1}, .),

where T_k leaves p_k = f_k / Z_k invariant. Then E[w] = Z_K / Z_0, so

    log Z_K  ~=  log Z_0 + log (1/M) sum_m w_m

(unbiased in Z, hence a stochastic *under*-estimate of log Z on average by Jensen, which makes the
resulting log-likelihood a stochastic over-estimate: Salakhutdinov & Murray 2008).
As there, the spread is reported as log(Z_hat +- 3 sigma_hat), sigma_hat the standard error of
the mean of the weights, computed in log space.

The path follows Salakhutdinov & Murray 2008 ("On the quantitative analysis of deep belief
networks"): the intermediate distributions temper the model's *joint* energy against a
base of independent visible units (zero weights, biases fitted to the data marginals), so that the
transitions are the model's own Gibbs updates at inverse temperature beta. A model serves AIS by
exposing a small "path" object (`AISPath`): its unnormalised log-probability at beta (with any
hidden units summed out analytically), one Gibbs transition at beta, exact samples of the base
(beta = 0) and the base's log partition function. The RBM, the Gaussian-Bernoulli RBM, the fully
visible Boltzmann machine and the DBN's top RBM all use it.

Written by hand: no maintained library runs AIS for an arbitrary torch energy model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import torch

SCHEDULES = ("linear", "sm08")


class AISPath(Protocol):
    """What a model provides for AIS: the path p_beta, beta in [0, 1] (p_0 the base, p_1 the model)."""

    def log_unnorm(self, x: torch.Tensor, beta: float) -> torch.Tensor:
        """(n,) unnormalised log f_beta(x) of the states x (hidden units summed out)."""

    def transition(self, x: torch.Tensor, beta: float, generator: torch.Generator) -> torch.Tensor:
        """One Markov step x -> x' that leaves p_beta invariant (a Gibbs sweep at beta)."""

    def sample_base(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """n exact samples of p_0."""

    def log_z_base(self) -> float:
        """log Z_0 = log of the normaliser of f_0."""


@dataclass
class AISResult:
    log_z: float  # log Z_0 + log mean(w)
    log_z_low: float  # log(Z_hat - 3 sigma_hat); -inf when the interval reaches 0
    log_z_high: float  # log(Z_hat + 3 sigma_hat)
    log_w: torch.Tensor  # (chains,) log importance weights, log Z_0 included
    n_chains: int
    n_betas: int
    schedule: str

    @property
    def effective_sample_size(self) -> float:
        w = torch.softmax(self.log_w.double(), 0)
        return float(1.0 / (w**2).sum())

    def as_dict(self) -> dict:
        return {"log_z": self.log_z, "log_z_low": self.log_z_low, "log_z_high": self.log_z_high,
                "chains": self.n_chains, "betas": self.n_betas, "schedule": self.schedule,
                "effective_sample_size": self.effective_sample_size}


def beta_schedule(n_betas: int, schedule: str = "sm08") -> torch.Tensor:
    """n_betas inverse temperatures from 0 to 1 (both included), float64.

    "linear": evenly spaced. "sm08": Salakhutdinov & Murray 2008 used 500 evenly
    spaced in [0, 0.5], 4 000 in [0.5, 0.9] and 10 000 in [0.9, 1] (14 500 in all); this keeps those
    proportions for any n_betas, i.e. more temperatures near 1 where the distributions change most.
    """
    if n_betas < 2:
        raise ValueError(f"AIS needs at least 2 inverse temperatures, got {n_betas}")
    if schedule == "linear":
        return torch.linspace(0.0, 1.0, n_betas, dtype=torch.float64)
    if schedule != "sm08":
        raise ValueError(f"unknown AIS schedule {schedule!r}; one of {SCHEDULES}")
    if n_betas < 6:
        return torch.linspace(0.0, 1.0, n_betas, dtype=torch.float64)
    steps = n_betas - 1  # intervals
    a = max(1, round(steps * 500 / 14500))
    b = max(1, round(steps * 4000 / 14500))
    c = max(1, steps - a - b)
    parts = [torch.linspace(0.0, 0.5, a + 1, dtype=torch.float64)[:-1],
             torch.linspace(0.5, 0.9, b + 1, dtype=torch.float64)[:-1],
             torch.linspace(0.9, 1.0, c + 1, dtype=torch.float64)]
    return torch.cat(parts)


def _log_mean_exp_interval(log_w: torch.Tensor, n_std: float = 3.0) -> tuple[float, float, float]:
    """log mean(w), log(mean - n_std * sem), log(mean + n_std * sem), all from log weights."""
    log_w = log_w.double()
    m = len(log_w)
    top = log_w.max()
    w = torch.exp(log_w - top)
    mean = w.mean()
    sem = w.std(unbiased=True) / math.sqrt(m) if m > 1 else torch.zeros((), dtype=torch.float64)
    log_mean = float(top + torch.log(mean))
    low = mean - n_std * sem
    log_low = float(top + torch.log(low)) if low > 0 else -math.inf
    log_high = float(top + torch.log(mean + n_std * sem))
    return log_mean, log_low, log_high


@torch.no_grad()
def ais(path: AISPath, *, n_chains: int, n_betas: int, generator: torch.Generator,
        schedule: str = "sm08") -> AISResult:
    """Estimate log Z of the model at the end of `path` with `n_chains` AIS chains through
    `n_betas` inverse temperatures (see the module docstring). Random draws come from `generator`,
    so a fixed seed gives a fixed estimate."""
    betas = beta_schedule(n_betas, schedule).tolist()
    x = path.sample_base(n_chains, generator)
    log_w = torch.zeros(n_chains, dtype=torch.float64, device=x.device)
    previous = path.log_unnorm(x, betas[0]).double()
    for k in range(1, len(betas)):
        log_w += path.log_unnorm(x, betas[k]).double() - previous
        if k < len(betas) - 1:
            x = path.transition(x, betas[k], generator)
            previous = path.log_unnorm(x, betas[k]).double()
    log_w = (log_w + path.log_z_base()).cpu()
    log_z, low, high = _log_mean_exp_interval(log_w)
    return AISResult(log_z, low, high, log_w, n_chains, len(betas), schedule)


# --- helpers the models share ---------------------------------------------------------------------

def uniform(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device,
            dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """U[0, 1) noise drawn on the generator's device (the CPU when there is none) and moved to
    `device`: results depend on the generator only, not on where the model lives."""
    where = generator.device if generator is not None else torch.device("cpu")
    return torch.rand(shape, generator=generator, device=where, dtype=dtype).to(device)


def bernoulli(p: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Binary samples with probabilities p (same shape, dtype, device)."""
    return (uniform(tuple(p.shape), generator, p.device, p.dtype) < p).to(p.dtype)


def normal(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device,
           dtype: torch.dtype = torch.float32) -> torch.Tensor:
    where = generator.device if generator is not None else torch.device("cpu")
    return torch.randn(shape, generator=generator, device=where, dtype=dtype).to(device)


def base_rate_logits(x: torch.Tensor, pseudo_count: float = 1.0) -> torch.Tensor:
    """Logits of the independent-units base model of Salakhutdinov & Murray 2008: each unit's
    marginal on data x (N, D) in [0, 1], smoothed by `pseudo_count` pseudo-observations per state."""
    n = x.shape[0]
    p = (x.double().sum(0) + pseudo_count) / (n + 2.0 * pseudo_count)
    return torch.log(p) - torch.log1p(-p)

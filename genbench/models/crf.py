"""Hidden-state conditional random field (Quattoni, Wang, Morency, Collins & Darrell 2007, "Hidden
conditional random fields", IEEE TPAMI) over the rows of an image: the discriminative twin of a
row HMM classifier.

An image is read as a sequence of its H rows. The observation at step t is the window of rows
t - w .. t + w (w = `window`, Quattoni et al.'s window features; rows outside the image are zeros),
flattened to F = (2w + 1) * C * W values, o_t. A chain of hidden states h_1..h_H in {1..S} links the
rows, and the potential of a class y, a hidden path h and an image x is

    Psi(y, h, x) = c_y + sum_t [ theta(y, h_t) . o_t + b(y, h_t) ] + sum_{t>1} A(y, h_{t-1}, h_t)

with class-specific state-observation weights theta (Y, S, F) and state biases b (Y, S),
class-specific transition weights A (Y, S, S) and class biases c (Y,). The model is

    p(y | x) = sum_h exp Psi(y, h, x) / sum_{y', h} exp Psi(y', h, x),

where each inner sum over the S^H hidden paths is the forward algorithm in log space,
log Z_y(x) = log sum_h exp Psi(y, h, x) (vectorised over images and classes). Training maximises
the conditional log-likelihood sum_n log p(y_n | x_n) minus an L2 penalty `l2` * |theta, b, A|^2
(per image), by Adam through the shared `genbench.training.train_loop`; torch's autograd gives the
gradient (the expected-feature differences of Quattoni et al., eq. 6). The hidden states are
symmetric at zero, so theta starts at small random values drawn from the seed.

Written by hand: no maintained library implements a hidden-state CRF for classification
(sklearn-crfsuite and pytorch-crf label every step of a sequence; there is no hidden layer).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from genbench.data import Split
from genbench.models import register
from genbench.models.base import Model, check_fitted, resolve_device
from genbench.training import seed_everything, train_loop

EVAL_BATCH = 512  # images per inference batch
INIT_SCALE = 0.1  # standard deviation of the initial observation weights (breaks the state symmetry)


def row_observations(x: torch.Tensor, window: int) -> torch.Tensor:
    """(N, C, H, W) images -> (N, H, (2 window + 1) C W) observations: at step t the rows
    t - window .. t + window (zeros beyond the image), each row's channels and pixels flattened."""
    n, c, h, w = x.shape
    rows = x.permute(0, 2, 1, 3).reshape(n, h, c * w)
    if window == 0:
        return rows
    padded = F.pad(rows, (0, 0, window, window))
    return torch.cat([padded[:, k:k + h] for k in range(2 * window + 1)], dim=2)


class HCRF(nn.Module):
    """Chain hidden-state CRF: observations (N, T, F) -> log p(y | x), (N, Y)."""

    def __init__(self, num_classes: int, n_states: int, obs_dim: int):
        super().__init__()
        self.theta = nn.Parameter(torch.randn(num_classes, n_states, obs_dim) * INIT_SCALE)
        self.state_bias = nn.Parameter(torch.zeros(num_classes, n_states))
        self.transition = nn.Parameter(torch.zeros(num_classes, n_states, n_states))
        self.class_bias = nn.Parameter(torch.zeros(num_classes))

    def class_log_partition(self, obs: torch.Tensor) -> torch.Tensor:
        """log sum_h exp Psi(y, h, x) for every class y, (N, Y): the forward algorithm in log space,
        alpha_t(y, s') = log sum_s exp(alpha_{t-1}(y, s) + A(y, s, s')) + theta(y, s') . o_t + b(y, s')."""
        emission = torch.einsum("ntf,ysf->ntys", obs, self.theta) + self.state_bias  # (N, T, Y, S)
        alpha = emission[:, 0]
        for t in range(1, obs.shape[1]):
            alpha = torch.logsumexp(alpha.unsqueeze(-1) + self.transition, dim=-2) + emission[:, t]
        return torch.logsumexp(alpha, dim=-1) + self.class_bias

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """log p(y | x), (N, Y)."""
        return torch.log_softmax(self.class_log_partition(obs), dim=1)

    def penalty(self) -> torch.Tensor:
        return self.theta.square().sum() + self.state_bias.square().sum() + self.transition.square().sum()


@register("crf")
class CRF(Model):
    """Hyperparameters: n_states (hidden states per class, S), window (rows on each side of the
    current one in an observation), l2 (penalty on theta, b and A per image), epochs, batch_size, lr
    (Adam). `device` is a runtime setting."""

    kind = "discriminative"
    constraints = {
        "n_states": {"low": 1},
        "window": {"low": 0},
        "l2": {"low": 0.0},
        "epochs": {"low": 1},
        "batch_size": {"low": 1},
        "lr": {"low": 0.0},
    }
    fast_params = {"n_states": 3, "epochs": 2}

    def __init__(self, n_states: int = 10, window: int = 2, l2: float = 1e-4, epochs: int = 40,
                 batch_size: int = 64, lr: float = 0.03, device: str = "auto"):
        self.n_states = n_states
        self.window = window
        self.l2 = l2
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.device = device

    def fit(self, train: Split, *, seed: int, val: Split | None = None) -> "CRF":
        device = resolve_device(self.device)
        self.num_classes_ = train.num_classes
        obs = row_observations(train.x.float(), self.window)
        seed_everything(seed)  # the initial weights depend on the seed alone
        self.hcrf_ = HCRF(train.num_classes, self.n_states, obs.shape[2]).to(device)
        optimiser = torch.optim.Adam(self.hcrf_.parameters(), lr=self.lr)
        self.hcrf_.train()

        def losses(batch: tuple[torch.Tensor, ...], generator: torch.Generator) -> dict[str, torch.Tensor]:
            o, y = batch
            log_p = self.hcrf_(o)
            nll = F.nll_loss(log_p, y)  # minus the mean conditional log-likelihood
            return {"loss": nll + self.l2 * self.hcrf_.penalty(), "nll": nll,
                    "accuracy": (log_p.argmax(1) == y).float().mean()}

        def step(batch: tuple[torch.Tensor, ...], state) -> dict[str, torch.Tensor]:
            out = losses(batch, state.generator)
            optimiser.zero_grad(set_to_none=True)
            out["loss"].backward()
            optimiser.step()
            return {k: v.detach() for k, v in out.items()}

        self.history_ = train_loop("crf", step, (obs, train.y.long()), epochs=self.epochs,
                                   batch_size=self.batch_size, seed=seed, device=device,
                                   modules={"hcrf": self.hcrf_},
                                   validation=((losses, (row_observations(val.x.float(), self.window), val.y.long()))
                                               if val is not None else None))
        self.hcrf_.eval()
        return self

    def predict_proba(self, x: torch.Tensor) -> np.ndarray:
        check_fitted(self, "hcrf_")
        self.hcrf_.eval()
        device = self.hcrf_.theta.device
        out = []
        with torch.no_grad():
            for i in range(0, len(x), EVAL_BATCH):
                obs = row_observations(x[i:i + EVAL_BATCH].float(), self.window).to(device)
                out.append(torch.log_softmax(self.hcrf_.class_log_partition(obs).double(), dim=1).exp().cpu())
        return torch.cat(out).numpy()

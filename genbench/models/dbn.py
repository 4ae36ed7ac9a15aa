"""Deep belief network (Hinton, Osindero & Teh 2006, "A fast learning algorithm for deep belief
nets"): binary RBMs stacked and trained greedily, layer by layer, with CD-k or PCD-k (the `RBMNet`
and `train_rbm` of `genbench.models.rbm`).

`hidden_sizes = [H1, ..., HL]` (L >= 2) gives layers v - h1 - ... - hL; the top two layers
h_{L-1} - h_L form an undirected RBM, the layers below are directed sigmoid belief layers
p(h_{l-1} | h_l) = sigmoid(b_l + W_l h_l). Layer l is trained on samples of h_{l-1} from the
recognition pass q(h_l | h_{l-1}) = sigmoid(c_l + h_{l-1} W_l) through the trained layers below,
starting from a fresh binarisation of each batch. The likelihood space is "binary".

`log_prob` is the variational lower bound of Salakhutdinov & Murray 2008, here
with the recognition chain q(h_1, ..., h_{L-1} | v) = prod_l q(h_l | h_{l-1}):

    log p(v) >= E_q[ sum_{l=1}^{L-1} log p(h_{l-1} | h_l) + log p*(h_{L-1}) ]
                + E_q[ sum_l H(q(h_l | h_{l-1})) ] - log Z_top,

h_0 = v, p*(h_{L-1}) = exp(-F_top(h_{L-1})) the top RBM's unnormalised marginal, H the entropy of
the factorial conditional (analytic given its parent). For the usual 2-layer DBN this is exactly
their bound E_q(h1|v)[log p(v|h1) + log p*(h1)] + H(q(h1|v)) - log Z. The expectation is a Monte
Carlo average over `n_posterior_samples` samples of the chain (a fixed seed: repeated calls agree),
and log Z_top comes from AIS (`genbench.models.ais`, from the base-rate model of h_{L-1} on the
training data); AIS runs lazily on first use and is stored. The number is thus an AIS-based
estimate of a lower bound: reported as "lower_bound", with that caveat in the method.

- `anomaly_score(x)` = minus the bound without its constant log Z_top (the same ranking as
  -log_prob's bound, no AIS), on the images as given (grey levels in the one-class protocol).
- `encode(x)` = the top-layer activation probabilities of the deterministic upward pass
  (probabilities, not samples, fed upward).
- `sample`: `gibbs_steps` block Gibbs steps in the top RBM from uniformly random h_{L-1}, then one
  sampled downward pass to h_1 and the visible probabilities p(v = 1 | h_1).

Written by hand: no maintained library trains DBNs in torch or computes their AIS bound.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from genbench.config import ConfigError
from genbench.data import Split, binarize
from genbench.models import register
from genbench.models.ais import AISResult, base_rate_logits, bernoulli, uniform
from genbench.models.base import Model, check_fitted, resolve_device
from genbench.models.rbm import RBMNet, rbm_ais, train_rbm
from genbench.training import seed_everything

EVAL_BATCH = 256
EVAL_SEED = 0  # the posterior samples of the bound: fixed, so repeated calls agree
AIS_SEED_OFFSET = 7919


def bernoulli_log_prob(x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """sum_i log Bernoulli(x_i; sigmoid(logits_i)) over the last axis (x may broadcast)."""
    return -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)


def bernoulli_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of a factorial Bernoulli with the given logits, summed over the last axis."""
    p = torch.sigmoid(logits)
    return (F.softplus(logits) - p * logits).sum(-1)


@torch.no_grad()
def unnormalised_bound(layers: list[RBMNet], v: torch.Tensor, n_samples: int,
                       generator: torch.Generator | None) -> torch.Tensor:
    """The bound on log p(v) + log Z_top (module docstring), (N,), averaged over n_samples samples
    of the recognition chain. layers[-1] is the top RBM; v (N, D) are images in [0, 1]."""
    total = torch.zeros(len(v), dtype=torch.float64, device=v.device)
    for _ in range(n_samples):
        below = v
        value = torch.zeros(len(v), dtype=torch.float64, device=v.device)
        for layer in layers[:-1]:
            logits = layer.hidden_logits(below)
            h = bernoulli(torch.sigmoid(logits), generator)
            value += (bernoulli_log_prob(below, layer.visible_logits(h)) + bernoulli_entropy(logits)).double()
            below = h
        value += -layers[-1].free_energy(below).double()
        total += value
    return total / n_samples


@register("dbn")
class DBN(Model):
    """Deep belief network of greedily trained RBMs; log-likelihood bound with AIS for the top RBM.

    Hyperparameters: hidden_sizes (a list of >= 2 layer widths), training ("cd" or "pcd"), cd_k,
    epochs (per layer), batch_size, lr, momentum, weight_decay, gibbs_steps (of `sample`),
    ais_chains, ais_betas, n_posterior_samples. `device` is a runtime setting.
    """

    kind = "generative"
    likelihood_space = "binary"
    constraints = {
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
        "n_posterior_samples": {"low": 1},
    }
    fast_params = {"hidden_sizes": [16, 16], "epochs": 2, "batch_size": 50, "gibbs_steps": 20,
                   "ais_chains": 16, "ais_betas": 100, "n_posterior_samples": 5}

    def __init__(self, hidden_sizes: list = [100, 100], training: str = "cd", cd_k: int = 1,  # noqa: B006
                 epochs: int = 100, batch_size: int = 20, lr: float = 0.01, momentum: float = 0.9,
                 weight_decay: float = 1e-4, gibbs_steps: int = 1000, ais_chains: int = 100,
                 ais_betas: int = 5000, n_posterior_samples: int = 100, device: str = "auto"):
        self.hidden_sizes = hidden_sizes
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
        self.n_posterior_samples = n_posterior_samples
        self.device = device

    @property
    def likelihood_info(self) -> dict:
        return {"estimator": "lower_bound",
                "method": f"variational lower bound of Salakhutdinov & Murray 2008, "
                          f"{self.n_posterior_samples} posterior samples, with log Z of the top RBM by AIS "
                          f"({self.ais_chains} chains, {self.ais_betas} temperatures): an AIS-based estimate "
                          "of the bound",
                "samples": self.n_posterior_samples}

    # --- training ---------------------------------------------------------------------------------
    def fit(self, train: Split, *, seed: int, val: Split | None = None) -> "DBN":
        sizes = list(self.hidden_sizes)
        if len(sizes) < 2 or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in sizes):
            raise ConfigError(f"params.yaml: 'models.dbn.hidden_sizes' must list two or more layer widths >= 1, "
                              f"got {self.hidden_sizes!r}")
        device = resolve_device(self.device)
        self.image_shape_ = train.image_shape
        self.seed_ = seed
        x = train.x.float().flatten(1)
        seed_everything(seed)
        layers = nn.ModuleList()
        self.layers_ = layers
        init_generator = torch.Generator().manual_seed(seed)
        history: list[dict[str, float]] = []
        for depth, (n_in, n_out) in enumerate(zip([x.shape[1]] + sizes[:-1], sizes)):
            below = list(layers)

            def make_input(batch: torch.Tensor, generator: torch.Generator, below=below) -> torch.Tensor:
                h = binarize(batch, generator=generator)
                for layer in below:
                    h = bernoulli(torch.sigmoid(layer.hidden_logits(h)), generator)
                return h

            # this layer's data marginals (for the visible-bias start and, at the top, the AIS base):
            # the mean-field upward pass of the training images
            with torch.no_grad():
                marginals = x.to(device)
                for layer in below:
                    marginals = torch.sigmoid(layer.hidden_logits(marginals))
                marginals = marginals.cpu()
            net = RBMNet(n_in, n_out)
            net.init_from_data(marginals, init_generator)
            net = net.to(device)
            layer_history = train_rbm(f"dbn layer {depth + 1}", net, x, training=self.training, cd_k=self.cd_k,
                                      epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                                      momentum=self.momentum, weight_decay=self.weight_decay, seed=seed + depth,
                                      device=device, make_input=make_input if below else None,
                                      val=val.x.float().flatten(1) if val is not None else None)
            history += [{**row, "layer": depth + 1} for row in layer_history]  # epochs count from 1 per layer
            layers.append(net)
            self.top_base_logits_ = base_rate_logits(marginals).float()
        self.history_ = history
        self.ais_ = None  # computed on first use by log_partition()
        return self

    # --- inference --------------------------------------------------------------------------------
    def _device(self) -> torch.device:
        return self.layers_[0].W.device

    def _batches(self, x: torch.Tensor):
        check_fitted(self, "layers_")
        self.layers_.eval()
        for i in range(0, len(x), EVAL_BATCH):
            yield x[i:i + EVAL_BATCH].float().flatten(1).to(self._device())

    @torch.no_grad()
    def log_partition(self) -> AISResult:
        """AIS estimate of the top RBM's log Z (run once, on `device`, seeded by the fit seed; stored)."""
        check_fitted(self, "layers_")
        if getattr(self, "ais_", None) is None:
            self.layers_.to(resolve_device(self.device))
            self.ais_ = rbm_ais(self.layers_[-1], self.top_base_logits_, chains=self.ais_chains,
                                betas=self.ais_betas, seed=self.seed_ + AIS_SEED_OFFSET)
        return self.ais_

    @torch.no_grad()
    def unnormalised_bound(self, x: torch.Tensor) -> torch.Tensor:
        """The bound plus log Z_top, (N,) float64, with `n_posterior_samples` seeded samples."""
        generator = torch.Generator().manual_seed(EVAL_SEED)
        layers = list(self.layers_)
        return torch.cat([unnormalised_bound(layers, b, self.n_posterior_samples, generator).cpu()
                          for b in self._batches(x)])

    @torch.no_grad()
    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Lower bound on log p(v) for binary images v, (N,) nats (module docstring)."""
        log_z = self.log_partition().log_z
        return (self.unnormalised_bound(x) - log_z).float()

    @torch.no_grad()
    def anomaly_score(self, x: torch.Tensor) -> torch.Tensor:
        """Minus the bound without log Z_top (same ranking as -log_prob, no AIS)."""
        return (-self.unnormalised_bound(x)).float()

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Top-layer activation probabilities of the mean-field upward pass, (N, hidden_sizes[-1])."""
        out = []
        for b in self._batches(x):
            for layer in self.layers_:
                b = torch.sigmoid(layer.hidden_logits(b))
            out.append(b.cpu())
        return torch.cat(out)

    @torch.no_grad()
    def sample(self, n: int, *, y: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Gibbs in the top RBM, then a sampled downward pass; the visible probabilities, in [0, 1]."""
        if y is not None:
            raise ValueError("dbn is unconditional: sample() takes no labels y")
        check_fitted(self, "layers_")
        top = self.layers_[-1]
        h = (uniform((n, top.n_visible), generator, self._device()) < 0.5).float()
        for _ in range(self.gibbs_steps):
            h, _p = top.gibbs_vhv(h, generator)
        below = list(self.layers_)[:-1]
        for layer in reversed(below[1:]):
            h = bernoulli(torch.sigmoid(layer.visible_logits(h)), generator)
        p = torch.sigmoid(below[0].visible_logits(h))
        return p.cpu().reshape(n, *self.image_shape_)

"""Variational autoencoder (Kingma & Welling 2014, "Auto-encoding variational Bayes").

Generative model p(z) = N(0, I), p(x|z) a factorised Bernoulli or Gaussian whose parameters an MLP
decoder computes from z; a Gaussian encoder q(z|x) = N(mu(x), diag sigma^2(x)). Both are MLPs with
two hidden layers (small and fast on a CPU), trained by maximising the ELBO with the
reparameterisation trick.

Two decoders, two likelihood spaces (DESIGN.md, "Data"):
  - "bernoulli": trained on dynamically binarised images (a fresh binarisation per batch), evaluated
    on the fixed binarised test set -> likelihood_space "binary";
  - "gaussian": per-pixel mean from the decoder and a learned per-pixel log-variance (one free
    parameter per pixel, not a function of z), trained on uniformly dequantised images ->
    likelihood_space "discrete". The Gaussian puts some mass outside [0, 1]^D, so as a density on
    [0, 1]^D it is sub-normalised and the resulting bits per dimension are conservative.

`log_prob` is the importance-weighted bound of Burda, Grosse & Salakhutdinov 2016 ("Importance
weighted autoencoders", eq. 8) with k = `iwae_samples` samples from q(z|x): a stochastic lower bound
on log p(x) that tightens as k grows (their Theorem 1). `elbo` is the k = 1 case with the KL term in
closed form. The estimators are written by hand: no maintained library computes them for an
arbitrary torch model.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from genbench.data import Split, binarize, dequantize
from genbench.models import register
from genbench.models.base import Model, check_fitted, resolve_device
from genbench.models.nets import latent_interpolation, mlp
from genbench.training import seed_everything, train_loop

LOG_2PI = math.log(2.0 * math.pi)
EVAL_SEED = 0  # the fixed seed of the noise that `elbo` and `log_prob` draw: repeated calls agree
EVAL_BATCH = 256  # images per inference batch
EVAL_ELEMENTS = 2**22  # importance samples x images x max(pixels, hidden units) per chunk


class Encoder(nn.Module):
    """x (N, D) -> (mu, log sigma^2) of q(z|x), each (N, latent_dim) (Kingma & Welling, appendix C.2)."""

    def __init__(self, dim: int, hidden_dim: int, latent_dim: int, hidden_layers: int = 2):
        super().__init__()
        self.net = mlp([dim, *[hidden_dim] * hidden_layers, 2 * latent_dim])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, log_var = self.net(x).chunk(2, dim=-1)
        return mu, log_var


class Decoder(nn.Module):
    """z (..., latent_dim) -> the parameters of p(x|z) over D pixels.

    bernoulli: logits (..., D). gaussian: means (..., D); the per-pixel log-variance is `log_var`.
    """

    def __init__(self, dim: int, hidden_dim: int, latent_dim: int, kind: str, hidden_layers: int = 2):
        super().__init__()
        self.kind = kind
        self.net = mlp([latent_dim, *[hidden_dim] * hidden_layers, dim])
        self.log_var = nn.Parameter(torch.zeros(dim)) if kind == "gaussian" else None

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)

    def log_likelihood(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p(x|z) summed over pixels; x (N, D) broadcasts against z (..., N, latent_dim)."""
        out = self(z)
        if self.kind == "bernoulli":  # log Bernoulli(x; sigmoid(logits)) = x*l - softplus(l)
            return -F.binary_cross_entropy_with_logits(out, x.expand_as(out), reduction="none").sum(-1)
        log_var = self.log_var
        return -0.5 * (LOG_2PI + log_var + (x - out) ** 2 * torch.exp(-log_var)).sum(-1)


def gaussian_kl(mu: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, I)) per example (Kingma & Welling 2014, appendix B)."""
    return 0.5 * (mu**2 + torch.exp(log_var) - 1.0 - log_var).sum(-1)


def log_normal(z: torch.Tensor, mu: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, diag exp(log_var)) summed over the last axis."""
    return -0.5 * (LOG_2PI + log_var + (z - mu) ** 2 * torch.exp(-log_var)).sum(-1)


@register("vae")
class VAE(Model):
    """Variational autoencoder with MLP encoder and decoder (Kingma & Welling 2014).

    Hyperparameters: latent_dim, hidden_dim (width of the hidden layers), hidden_layers (per MLP), decoder
    ("bernoulli" or "gaussian"), epochs, batch_size, lr (Adam), iwae_samples (k of the test
    log-likelihood). `device` is a runtime setting.
    """

    fast_params = {"epochs": 2, "iwae_samples": 20, "hidden_dim": 32}
    constraints = {
        "latent_dim": {"low": 1},
        "hidden_dim": {"low": 1},
        "hidden_layers": {"low": 1},
        "decoder": {"choices": ("bernoulli", "gaussian")},
        "epochs": {"low": 1},
        "batch_size": {"low": 1},
        "lr": {"low": 0.0},
        "iwae_samples": {"low": 1},
    }

    def __init__(self, latent_dim: int = 16, hidden_dim: int = 256, decoder: str = "bernoulli",
                 epochs: int = 50, batch_size: int = 64, lr: float = 1e-3, iwae_samples: int = 1000,
                 hidden_layers: int = 2, device: str = "auto"):
        self.latent_dim = latent_dim
        self.hidden_dim = hidden_dim
        self.hidden_layers = hidden_layers  # per network; 1 is the pytorch/examples VAE (784-400-20)
        self.decoder = decoder
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.iwae_samples = iwae_samples
        self.device = device

    # --- what the pipeline reads about the likelihood ---------------------------------------------
    @property
    def likelihood_space(self) -> str:
        return "binary" if self.decoder == "bernoulli" else "discrete"

    @property
    def likelihood_info(self) -> dict:
        k = self.iwae_samples
        return {"estimator": "estimate",
                "method": f"IWAE importance-sampling estimate (Burda et al. 2016), k={k}; "
                          "a stochastic lower bound on log p(x)",
                "samples": k}

    @property
    def elbo_info(self) -> dict:
        return {"estimator": "lower_bound",
                "method": "ELBO (Kingma & Welling 2014): analytic KL, 1-sample reconstruction term",
                "samples": 1}

    # --- training ---------------------------------------------------------------------------------
    def fit(self, train: Split, *, seed: int, val: Split | None = None) -> "VAE":
        device = resolve_device(self.device)
        self.image_shape_ = train.image_shape
        self.levels_ = train.levels
        dim = train.dim
        seed_everything(seed)  # the initial weights depend on the seed alone
        self.encoder_ = Encoder(dim, self.hidden_dim, self.latent_dim, self.hidden_layers).to(device)
        self.decoder_ = Decoder(dim, self.hidden_dim, self.latent_dim, self.decoder, self.hidden_layers).to(device)
        self._init_gaussian_variance(train, seed)
        params = list(self.encoder_.parameters()) + list(self.decoder_.parameters())
        optimiser = torch.optim.Adam(params, lr=self.lr)
        self.encoder_.train()
        self.decoder_.train()

        def losses(batch: tuple[torch.Tensor, ...], generator: torch.Generator) -> dict[str, torch.Tensor]:
            (x,) = batch
            if self.decoder == "bernoulli":  # dynamic binarisation (Salakhutdinov & Murray 2008)
                x = binarize(x, generator=generator)
            else:  # uniform dequantisation (Theis et al. 2016)
                x = dequantize(x, self.levels_, generator=generator)
            x = x.flatten(1)
            mu, log_var = self.encoder_(x)
            eps = torch.randn(mu.shape, generator=generator, device=mu.device)
            z = mu + torch.exp(0.5 * log_var) * eps  # reparameterisation (Kingma & Welling, eq. 10)
            reconstruction = self.decoder_.log_likelihood(x, z)
            kl = gaussian_kl(mu, log_var)
            # the negative ELBO (eq. 10), per image, and its two terms
            return {"loss": (kl - reconstruction).mean(), "reconstruction": -reconstruction.mean(), "kl": kl.mean()}

        def step(batch: tuple[torch.Tensor, ...], state) -> dict[str, torch.Tensor]:
            out = losses(batch, state.generator)
            optimiser.zero_grad(set_to_none=True)
            out["loss"].backward()
            optimiser.step()
            return {k: v.detach() for k, v in out.items()}

        self.history_ = train_loop("vae", step, (train.x.float(),), epochs=self.epochs,
                                   batch_size=self.batch_size, seed=seed, device=device,
                                   modules={"encoder": self.encoder_, "decoder": self.decoder_},
                                   validation=(losses, (val.x.float(),)) if val is not None else None)
        self.encoder_.eval()
        self.decoder_.eval()
        return self

    def _init_gaussian_variance(self, train: Split, seed: int) -> None:
        """Gaussian decoder: start each pixel's log-variance at the log of its variance over the
        dequantised training images. Adam moves a parameter by about lr per step, so the default
        unit variance dominates short trainings on pixels that are always 0 (digits, default
        hyperparameters: 4.77 bits/dim without this, worse than uniform at log2(17) = 4.09; 3.06
        with it).

        The output biases are left at their default: starting them at the marginal means (as
        Burda et al. 2016 do for the Bernoulli decoder) parks the model at the z-ignoring
        optimum, whose plateau short trainings do not leave (posterior collapse, KL ~ 0)."""
        if self.decoder != "gaussian":
            return
        y = dequantize(train.x.float().flatten(1), train.levels, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            self.decoder_.log_var.copy_(torch.log(y.var(dim=0)))

    # --- inference --------------------------------------------------------------------------------
    def _device(self) -> torch.device:
        return next(self.encoder_.parameters()).device

    def _batches(self, x: torch.Tensor):
        check_fitted(self, "encoder_")
        self.encoder_.eval()
        self.decoder_.eval()
        for i in range(0, len(x), EVAL_BATCH):
            yield x[i:i + EVAL_BATCH].float().flatten(1)

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The posterior mean E_q[z|x], (N, latent_dim) on the CPU."""
        return torch.cat([self.encoder_(b.to(self._device()))[0].cpu() for b in self._batches(x)])

    @torch.no_grad()
    def elbo(self, x: torch.Tensor) -> torch.Tensor:
        """Per-example ELBO in nats, (N,): E_q[log p(x|z)] - KL(q(z|x) || p(z)) with one z ~ q
        (noise from a fixed seed, drawn on the CPU) and the KL in closed form."""
        generator = torch.Generator().manual_seed(EVAL_SEED)
        out = []
        for b in self._batches(x):
            b = b.to(self._device())
            mu, log_var = self.encoder_(b)
            eps = torch.randn(mu.shape, generator=generator).to(mu.device)
            z = mu + torch.exp(0.5 * log_var) * eps
            out.append((self.decoder_.log_likelihood(b, z) - gaussian_kl(mu, log_var)).cpu())
        return torch.cat(out)

    @torch.no_grad()
    def log_prob(self, x: torch.Tensor, k: int | None = None) -> torch.Tensor:
        """IWAE estimate of log p(x) per example in nats, (N,) (Burda et al. 2016, eq. 8):

            log (1/k) sum_{i=1..k} p(x, z_i) / q(z_i | x),   z_i ~ q(z | x),

        accumulated over chunks of importance samples with a running logsumexp so memory stays
        bounded. The noise comes from a fixed seed, so repeated calls give the same numbers.
        Bernoulli decoder: x must be binary; Gaussian decoder: x are dequantised images and the
        result is a log density on [0, 1]^D.
        """
        k = k or self.iwae_samples
        generator = torch.Generator().manual_seed(EVAL_SEED)
        out = []
        for b in self._batches(x):
            b = b.to(self._device())
            n, dim = b.shape
            mu, log_var = self.encoder_(b)
            std = torch.exp(0.5 * log_var)
            chunk = max(1, EVAL_ELEMENTS // (n * max(dim, self.hidden_dim)))
            total = torch.full((n,), -math.inf, device=b.device)
            for start in range(0, k, chunk):
                m = min(chunk, k - start)
                eps = torch.randn((m, n, self.latent_dim), generator=generator).to(b.device)
                z = mu + std * eps
                log_w = (self.decoder_.log_likelihood(b, z)  # log p(x | z)
                         + log_normal(z, torch.zeros_like(z), torch.zeros_like(z))  # log p(z)
                         - log_normal(z, mu, log_var))  # log q(z | x)
                total = torch.logaddexp(total, torch.logsumexp(log_w, dim=0))
            out.append((total - math.log(k)).cpu())
        return torch.cat(out)

    @torch.no_grad()
    def sample(self, n: int, *, y: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """n images (n, C, H, W) in [0, 1]: z ~ N(0, I) (drawn on the CPU) through the decoder,
        showing its mean: pixel probabilities (bernoulli) or the Gaussian mean clamped to [0, 1]."""
        if y is not None:
            raise ValueError("vae is unconditional: sample() takes no labels y")
        return self.decode(torch.randn((n, self.latent_dim), generator=generator))

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The decoder's mean image for each code, (N, C, H, W) in [0, 1]: pixel probabilities
        (bernoulli) or the Gaussian mean clamped to [0, 1]."""
        check_fitted(self, "decoder_")
        self.decoder_.eval()
        images = []
        for i in range(0, len(z), EVAL_BATCH):
            out = self.decoder_(z[i:i + EVAL_BATCH].to(self._device())).cpu()
            images.append(torch.sigmoid(out) if self.decoder == "bernoulli" else out.clamp(0.0, 1.0))
        return torch.cat(images).reshape(len(z), *self.image_shape_)

    def figures(self, data: Split, *, generator: torch.Generator | None = None) -> dict:
        """'interpolation': decoded means along straight lines between the posterior means of pairs
        of test images (rows start and end at the two reconstructions)."""
        return {"interpolation": latent_interpolation(self.encode, self.decode, data.x, generator=generator)}

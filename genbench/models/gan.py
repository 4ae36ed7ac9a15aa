"""Generative adversarial network with MLP generator and discriminator (Goodfellow et al. 2014,
"Generative adversarial nets").

A generator G maps z ~ N(0, I) to an image in [0, 1] (an MLP with two hidden layers, batch norm and
LeakyReLU, and a sigmoid output); a discriminator D maps an image to a real-vs-fake logit l,
D = sigmoid(l) (an MLP with two LeakyReLU(0.2) hidden layers and dropout, as Goodfellow et al.
regularise theirs with dropout). They play the minimax game of Goodfellow et al., eq. 1:

    min_G max_D  E_x[log D(x)] + E_z[log(1 - D(G(z)))],

trained by alternating updates (their Algorithm 1): `d_steps` discriminator updates, each on a
fresh batch of real images, per generator update. The discriminator minimises the binary
cross-entropy with "real" = 1 and "fake" = 0. The generator loss is selectable:

  - "minimax":        E_z[log(1 - D(G(z)))] = -E[softplus(l)], the saturating form of eq. 1, whose
                      gradient vanishes when D confidently rejects the samples (early training);
  - "non_saturating": -E_z[log D(G(z))] = E[softplus(-l)], the alternative Goodfellow et al.
                      recommend in section 3 (the default).

Both networks use Adam (beta1 0.5 as in Radford et al. 2016; lr 5e-4). The training images are
used as they are, in [0, 1].

Capabilities:
  - `sample(n)`: G(z), z ~ N(0, I) drawn on the CPU;
  - `log_prob(x)`: a GAN has no tractable likelihood, so this is the Parzen-window estimate
    (`genbench.models.parzen`, as in Goodfellow et al. 2014, Table 1) in the "discrete" likelihood
    space: a Gaussian kernel density on [0, 1]^D centred on `parzen_samples` generated images (as the
    generator outputs them, not mapped to the intensity lattice), evaluated on dequantised images.
    Its bandwidth is chosen on a held-out slice (`parzen_holdout`) of the training images given to
    `fit`, dequantised; the GAN is trained on the rest, so it never sees validation or test data and
    the bandwidth is chosen on images it was not trained on;
  - `anomaly_score(x)` = minus the discriminator's logit (a heuristic: D is trained to tell real from
    generated images, not to recognise images unlike both).

The networks are the small MLPs of `genbench.models.nets` (hand-written: no library ships a GAN).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from genbench.data import Split, dequantize
from genbench.models import register
from genbench.models.base import Model, check_fitted, resolve_device
from genbench.models.nets import MLPDiscriminator, MLPGenerator, holdout_indices
from genbench.models.parzen import ParzenWindow
from genbench.training import seed_everything, train_loop

EVAL_BATCH = 1024  # images per inference batch
GENERATOR_LOSSES = ("non_saturating", "minimax")


def generator_loss(fake_logits: torch.Tensor, kind: str) -> torch.Tensor:
    """The generator's loss on the discriminator's logits l of generated images, averaged.

    minimax: log(1 - sigmoid(l)) = -softplus(l) (Goodfellow et al. 2014, eq. 1; G minimises it);
    non_saturating: -log sigmoid(l) = softplus(-l) (section 3).
    """
    if kind == "minimax":
        return -F.softplus(fake_logits).mean()
    if kind == "non_saturating":
        return F.softplus(-fake_logits).mean()
    raise ValueError(f"generator_loss must be one of {GENERATOR_LOSSES}, got {kind!r}")


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """-[log D(x) + log(1 - D(G(z)))], averaged: binary cross-entropy with real = 1, fake = 0."""
    return (F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
            + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))


@register("gan")
class GAN(Model):
    """MLP GAN (Goodfellow et al. 2014) with a Parzen-window log-likelihood estimate.

    Hyperparameters: latent_dim (size of z ~ N(0, I)), hidden_dim (width of the two hidden layers of
    each MLP), dropout (discriminator), epochs, batch_size, lr and beta1 (Adam, both networks),
    d_steps (discriminator updates per generator update), generator_loss ("non_saturating" or
    "minimax"), parzen_samples (generated images of the Parzen estimate), parzen_holdout (fraction
    of the training images held out to choose its bandwidth). `device` is a runtime setting.
    """

    likelihood_space = "discrete"
    fast_params = {"epochs": 2, "hidden_dim": 32, "parzen_samples": 200}
    constraints = {
        "latent_dim": {"low": 1},
        "hidden_dim": {"low": 1},
        "dropout": {"low": 0.0, "high": 0.99},
        "epochs": {"low": 1},
        "batch_size": {"low": 2},  # the generator's batch norm needs more than one image per batch
        "lr": {"low": 0.0},
        "beta1": {"low": 0.0, "high": 1.0},
        "d_steps": {"low": 1},
        "generator_loss": {"choices": GENERATOR_LOSSES},
        "parzen_samples": {"low": 1},
        "parzen_holdout": {"low": 0.0, "high": 0.9},
    }

    def __init__(self, latent_dim: int = 32, hidden_dim: int = 256, dropout: float = 0.3, epochs: int = 150,
                 batch_size: int = 64, lr: float = 5e-4, beta1: float = 0.5, d_steps: int = 1,
                 generator_loss: str = "non_saturating", parzen_samples: int = 10000,
                 parzen_holdout: float = 0.1, device: str = "auto"):
        self.latent_dim = latent_dim
        self.hidden_dim = hidden_dim
        self.dropout = dropout
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.beta1 = beta1
        self.d_steps = d_steps
        self.generator_loss = generator_loss
        self.parzen_samples = parzen_samples
        self.parzen_holdout = parzen_holdout
        self.device = device

    @property
    def likelihood_info(self) -> dict:
        check_fitted(self, "parzen_")
        return self.parzen_.info(self.parzen_samples)

    def fit(self, train: Split, *, seed: int) -> "GAN":
        device = resolve_device(self.device)
        self.image_shape_ = train.image_shape
        kept, held_out = holdout_indices(len(train), self.parzen_holdout, seed)
        seed_everything(seed)  # the initial weights depend on the seed alone
        self.generator_ = MLPGenerator(train.image_shape, self.latent_dim, self.hidden_dim).to(device)
        self.discriminator_ = MLPDiscriminator(train.image_shape, self.hidden_dim, self.dropout).to(device)
        betas = (self.beta1, 0.999)
        opt_g = torch.optim.Adam(self.generator_.parameters(), lr=self.lr, betas=betas)
        opt_d = torch.optim.Adam(self.discriminator_.parameters(), lr=self.lr, betas=betas)
        self.generator_.train()
        self.discriminator_.train()

        def step(batch: tuple[torch.Tensor, ...], state) -> dict[str, float]:
            (real,) = batch
            z = torch.randn((len(real), self.latent_dim), generator=state.generator, device=real.device)
            fake = self.generator_(z)

            # D: maximise log D(x) + log(1 - D(G(z)))  (Goodfellow et al. 2014, eq. 1)
            logit_real = self.discriminator_(real)
            logit_fake = self.discriminator_(fake.detach())
            d_loss = discriminator_loss(logit_real, logit_fake)
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()

            # G: one update after every d_steps discriminator updates (Algorithm 1); the loss is
            # recorded on every batch so that the per-epoch curve averages like the D loss.
            logit_gen = self.discriminator_(fake)
            g_loss = generator_loss(logit_gen, self.generator_loss)
            if (state.step + 1) % self.d_steps == 0:
                opt_g.zero_grad(set_to_none=True)
                g_loss.backward()
                opt_g.step()
            return {"d_loss": d_loss.item(), "g_loss": g_loss.item(),
                    "d_real": torch.sigmoid(logit_real).mean().item(),  # mean D(x)
                    "d_fake": torch.sigmoid(logit_fake).mean().item()}  # mean D(G(z)) before the D step

        self.history_ = train_loop("gan", step, (train.x[kept].float(),), epochs=self.epochs,
                                   batch_size=self.batch_size, seed=seed, device=device,
                                   modules={"generator": self.generator_, "discriminator": self.discriminator_})
        self.generator_.eval()
        self.discriminator_.eval()
        self._fit_parzen(train, held_out if len(held_out) else kept, seed)
        return self

    def _fit_parzen(self, train: Split, held_out: torch.Tensor, seed: int) -> None:
        """The Parzen window on `parzen_samples` generated images, bandwidth by the mean
        log-density of the dequantised held-out training images."""
        samples = self.sample(self.parzen_samples, generator=torch.Generator().manual_seed(seed))
        validation = dequantize(train.x[held_out].float(), train.levels, generator=torch.Generator().manual_seed(seed))
        self.parzen_ = ParzenWindow().fit(samples, validation)

    def _device(self) -> torch.device:
        return next(self.generator_.parameters()).device

    @torch.no_grad()
    def sample(self, n: int, *, y: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """n images (n, C, H, W) in [0, 1] on the CPU: G(z) with z ~ N(0, I) drawn on the CPU."""
        if y is not None:
            raise ValueError("gan is unconditional: sample() takes no labels y")
        check_fitted(self, "generator_")
        self.generator_.eval()
        z = torch.randn((n, self.latent_dim), generator=generator)
        return torch.cat([self.generator_(z[i:i + EVAL_BATCH].to(self._device())).cpu()
                          for i in range(0, n, EVAL_BATCH)]).reshape(n, *self.image_shape_)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Parzen-window estimate of the log-density of dequantised images on [0, 1]^D, (N,) nats."""
        check_fitted(self, "parzen_")
        return self.parzen_.log_prob(x.float())

    @torch.no_grad()
    def anomaly_score(self, x: torch.Tensor) -> torch.Tensor:
        """Minus the discriminator's logit per image, (N,): higher = less like the training data."""
        check_fitted(self, "discriminator_")
        self.discriminator_.eval()
        return torch.cat([-self.discriminator_(x[i:i + EVAL_BATCH].float().to(self._device())).cpu()
                          for i in range(0, len(x), EVAL_BATCH)])

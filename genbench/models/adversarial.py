"""What `gan`, `dcgan` and `cgan` share (not a registered model): the adversarial losses and
training step of Goodfellow et al. 2014 ("Generative adversarial nets"), the Parzen-window
log-likelihood estimate, sampling and the discriminator's anomaly score. Each model file supplies
its networks and hyperparameters, and documents its choices.

Training, one `train_loop` step per batch of real images x (with labels y for conditional models):
  - D minimises -[log D(x) + log(1 - D(G(z)))]  (Goodfellow et al., eq. 1), binary cross-entropy
    on logits with "real" = 1 and "fake" = 0;
  - after every `d_steps` D updates, one G update with the generator loss "non_saturating"
    -log D(G(z)) (their section 3) or "minimax" log(1 - D(G(z))) (eq. 1, saturating);
  - conditional models feed y to both networks and generate fakes for the batch's labels
    (Mirza & Osindero 2014, eq. 2), so the generated classes follow the training prior.
Both networks use Adam with (beta1, 0.999).

Likelihood: a GAN has none, so `log_prob` is the Parzen-window estimate (`genbench.models.parzen`,
Goodfellow et al. 2014, Table 1) in the "discrete" space: a Gaussian kernel density on [0, 1]^D
centred on `parzen_samples` generated images (as generated, not mapped to the intensity lattice),
evaluated on dequantised images. Its bandwidth is chosen on a held-out slice (`parzen_holdout`) of
the training images given to `fit`, dequantised; the GAN trains on the rest, so it never sees
validation or test data and the bandwidth is chosen on images it was not trained on.

Anomaly score: minus the discriminator's logit (a heuristic: D is trained to tell real from
generated images, not to recognise images unlike both, and its output on those is not calibrated).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F
from torch import nn

from genbench.data import Split, dequantize
from genbench.models.base import Model, check_fitted, resolve_device
from genbench.models.nets import holdout_indices
from genbench.models.parzen import ParzenWindow
from genbench.training import seed_everything, train_loop

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


class AdversarialModel(Model, ABC):
    """Base of the GANs. Subclasses set the hyperparameters latent_dim, epochs, batch_size, lr,
    beta1, parzen_samples, parzen_holdout and device, and implement `_networks(train)`; they may
    make `generator_loss` and `d_steps` hyperparameters too (class defaults below)."""

    likelihood_space = "discrete"
    conditional = False
    generator_loss = "non_saturating"
    d_steps = 1
    eval_batch = 1024  # images per inference batch

    @abstractmethod
    def _networks(self, train: Split) -> tuple[nn.Module, nn.Module]:
        """(generator, discriminator) sized for `train`'s images (and classes, if conditional)."""

    @property
    def likelihood_info(self) -> dict:
        check_fitted(self, "parzen_")
        return self.parzen_.info(self.parzen_samples)

    def fit(self, train: Split, *, seed: int) -> "AdversarialModel":
        device = resolve_device(self.device)
        self.image_shape_ = train.image_shape
        self.num_classes_ = train.num_classes
        kept, held_out = holdout_indices(len(train), self.parzen_holdout, seed)
        x, y = train.x[kept].float(), train.y[kept].long()
        if self.conditional:
            counts = torch.bincount(y, minlength=self.num_classes_).double()
            self.class_prior_ = counts / counts.sum()
        seed_everything(seed)  # the initial weights depend on the seed alone
        generator, discriminator = self._networks(train)
        self.generator_, self.discriminator_ = generator.to(device), discriminator.to(device)
        betas = (self.beta1, 0.999)
        opt_g = torch.optim.Adam(self.generator_.parameters(), lr=self.lr, betas=betas)
        opt_d = torch.optim.Adam(self.discriminator_.parameters(), lr=self.lr, betas=betas)
        self.generator_.train()
        self.discriminator_.train()

        def step(batch: tuple[torch.Tensor, ...], state) -> dict[str, torch.Tensor]:
            real, *labels = batch  # labels: [y] for conditional models, [] otherwise
            z = torch.randn((len(real), self.latent_dim), generator=state.generator, device=real.device)
            fake = self.generator_(z, *labels)

            # D: maximise log D(x) + log(1 - D(G(z)))  (Goodfellow et al. 2014, eq. 1)
            logit_real = self.discriminator_(real, *labels)
            logit_fake = self.discriminator_(fake.detach(), *labels)
            d_loss = discriminator_loss(logit_real, logit_fake)
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()

            # G: one update after every d_steps D updates (Algorithm 1); the loss is recorded on
            # every batch so that the per-epoch curve averages like the D loss.
            g_loss = generator_loss(self.discriminator_(fake, *labels), self.generator_loss)
            if (state.step + 1) % self.d_steps == 0:
                opt_g.zero_grad(set_to_none=True)
                g_loss.backward()
                opt_g.step()
            return {"d_loss": d_loss.detach(), "g_loss": g_loss.detach(),
                    "d_real": torch.sigmoid(logit_real).mean().detach(),  # mean D(x)
                    "d_fake": torch.sigmoid(logit_fake).mean().detach()}  # mean D(G(z)) before the D step

        self.history_ = train_loop(self.name, step, (x, y) if self.conditional else (x,), epochs=self.epochs,
                                   batch_size=self.batch_size, seed=seed, device=device,
                                   modules={"generator": self.generator_, "discriminator": self.discriminator_})
        self.generator_.eval()
        self.discriminator_.eval()
        self._fit_parzen(train, held_out if len(held_out) else kept, seed)
        return self

    def _fit_parzen(self, train: Split, held_out: torch.Tensor, seed: int) -> None:
        """The Parzen window on `parzen_samples` generated images (classes from the training prior
        for conditional models), bandwidth by the mean log-density of the dequantised held-out
        training images."""
        samples = self.sample(self.parzen_samples, generator=torch.Generator().manual_seed(seed))
        validation = dequantize(train.x[held_out].float(), train.levels, generator=torch.Generator().manual_seed(seed))
        self.parzen_ = ParzenWindow().fit(samples, validation)

    def _device(self) -> torch.device:
        return next(self.generator_.parameters()).device

    def _labels(self, n: int, y: torch.Tensor | None, generator: torch.Generator | None) -> torch.Tensor:
        """The classes to generate: `y` checked, or n draws from the training class frequencies."""
        if y is None:
            return torch.multinomial(self.class_prior_, n, replacement=True, generator=generator)
        y = torch.as_tensor(y).long().reshape(-1)
        if len(y) != n:
            raise ValueError(f"{self.name}.sample({n}) got {len(y)} labels y")
        if len(y) and (y.min() < 0 or y.max() >= self.num_classes_):
            raise ValueError(f"{self.name} was fitted on classes 0..{self.num_classes_ - 1}; "
                             f"cannot sample y={y.unique().tolist()}")
        return y

    @torch.no_grad()
    def sample(self, n: int, *, y: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """n images (n, C, H, W) in [0, 1] on the CPU: G(z) (G(z, y) for conditional models) with
        z ~ N(0, I) drawn on the CPU; y the requested classes or, when None, drawn from the prior."""
        check_fitted(self, "generator_")
        if self.conditional:
            labels = [self._labels(n, y, generator)]
        elif y is not None:
            raise ValueError(f"{self.name} is unconditional: sample() takes no labels y")
        else:
            labels = []
        self.generator_.eval()
        z = torch.randn((n, self.latent_dim), generator=generator)
        device, b = self._device(), self.eval_batch
        return torch.cat([self.generator_(z[i:i + b].to(device), *(c[i:i + b].to(device) for c in labels)).cpu()
                          for i in range(0, n, b)]).reshape(n, *self.image_shape_)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Parzen-window estimate of the log-density of dequantised images on [0, 1]^D, (N,) nats."""
        check_fitted(self, "parzen_")
        return self.parzen_.log_prob(x.float())

    @torch.no_grad()
    def anomaly_score(self, x: torch.Tensor) -> torch.Tensor:
        """Minus the discriminator's logit per image, (N,): higher = less like the training data."""
        check_fitted(self, "discriminator_")
        self.discriminator_.eval()
        b = self.eval_batch
        return torch.cat([-self.discriminator_(x[i:i + b].float().to(self._device())).cpu()
                          for i in range(0, len(x), b)])

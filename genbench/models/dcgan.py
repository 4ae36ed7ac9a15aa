"""Deep convolutional GAN (Radford, Metz & Chintala 2016) trained with the GAN minimax objective of
Goodfellow et al. 2014 ("Generative adversarial nets").

The discriminator D maximises  E_x[log D(x)] + E_z[log(1 - D(G(z)))]  (Goodfellow et al., eq. 1),
written as binary cross-entropy on logits with "real" = 1 and "fake" = 0. The generator uses the
non-saturating loss  -E_z[log D(G(z))]  that Goodfellow et al. recommend in section 3 instead of
minimising log(1 - D(G(z))), which has vanishing gradients early in training. One D update and one G
update per batch, both with Adam (lr 2e-4, beta1 0.5, as in Radford et al., section 4).

Training data are the real images in [0, 1] as they are (no binarisation or dequantisation); the
networks are in `genbench.models.nets`, sized from the image shape.

Capabilities: `sample`, and `anomaly_score(x)` = minus the discriminator's logit: an image the
discriminator finds unlike the training data (a low "real" logit) scores high. This is a heuristic
score, not a likelihood: the discriminator of a GAN is trained to tell real from generated images,
and its output on images unlike both is not calibrated.

A GAN has no tractable likelihood: `log_prob` is the Parzen-window estimate (`genbench.models.parzen`,
as in Goodfellow et al. 2014, Table 1) in the "discrete" likelihood space: a Gaussian kernel density
on [0, 1]^D centred on `parzen_samples` generated images (as the generator outputs them, not mapped
to the intensity lattice), evaluated on dequantised images. Its bandwidth is chosen on a held-out
slice (`parzen_holdout`) of the training images given to `fit`, dequantised; the GAN trains on the
rest, so it never sees validation or test data and the bandwidth is chosen on images it was not
trained on.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from genbench.data import Split, dequantize
from genbench.models import register
from genbench.models.base import Model, check_fitted, resolve_device
from genbench.models.nets import DCGANDiscriminator, DCGANGenerator, holdout_indices
from genbench.models.parzen import ParzenWindow
from genbench.training import seed_everything, train_loop

EVAL_BATCH = 256  # images per inference batch


@register("dcgan")
class DCGAN(Model):
    """DCGAN with the non-saturating generator loss.

    Hyperparameters: latent_dim (size of z ~ N(0, I)), base_channels (width of the first
    discriminator and last generator layer; it doubles at each resolution halving), epochs,
    batch_size, lr and beta1 (Adam, both networks), parzen_samples (generated images of the Parzen
    log-likelihood estimate), parzen_holdout (fraction of the training images held out to choose
    its bandwidth). `device` is a runtime setting.
    """

    likelihood_space = "discrete"
    fast_params = {"epochs": 2, "base_channels": 8, "parzen_samples": 200}
    constraints = {
        "latent_dim": {"low": 1},
        "base_channels": {"low": 1},
        "epochs": {"low": 1},
        "batch_size": {"low": 2},  # batch norm needs more than one image per batch
        "lr": {"low": 0.0},
        "beta1": {"low": 0.0, "high": 1.0},
        "parzen_samples": {"low": 1},
        "parzen_holdout": {"low": 0.0, "high": 0.9},
    }

    def __init__(self, latent_dim: int = 32, base_channels: int = 32, epochs: int = 60,
                 batch_size: int = 64, lr: float = 2e-4, beta1: float = 0.5, parzen_samples: int = 10000,
                 parzen_holdout: float = 0.1, device: str = "auto"):
        self.latent_dim = latent_dim
        self.base_channels = base_channels
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.beta1 = beta1
        self.parzen_samples = parzen_samples
        self.parzen_holdout = parzen_holdout
        self.device = device

    @property
    def likelihood_info(self) -> dict:
        check_fitted(self, "parzen_")
        return self.parzen_.info(self.parzen_samples)

    def fit(self, train: Split, *, seed: int) -> "DCGAN":
        device = resolve_device(self.device)
        self.image_shape_ = train.image_shape
        kept, held_out = holdout_indices(len(train), self.parzen_holdout, seed)
        seed_everything(seed)  # the initial weights depend on the seed alone
        self.generator_ = DCGANGenerator(train.image_shape, self.latent_dim, self.base_channels).to(device)
        self.discriminator_ = DCGANDiscriminator(train.image_shape, self.base_channels).to(device)
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
            d_loss = (F.binary_cross_entropy_with_logits(logit_real, torch.ones_like(logit_real))
                      + F.binary_cross_entropy_with_logits(logit_fake, torch.zeros_like(logit_fake)))
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()

            # G: non-saturating loss, maximise log D(G(z))  (Goodfellow et al. 2014, section 3)
            logit_gen = self.discriminator_(fake)
            g_loss = F.binary_cross_entropy_with_logits(logit_gen, torch.ones_like(logit_gen))
            opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            opt_g.step()
            return {"d_loss": d_loss.item(), "g_loss": g_loss.item(),
                    "d_real": torch.sigmoid(logit_real).mean().item(),  # mean D(x)
                    "d_fake": torch.sigmoid(logit_fake).mean().item()}  # mean D(G(z)) before the D step

        self.history_ = train_loop("dcgan", step, (train.x[kept].float(),), epochs=self.epochs,
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
            raise ValueError("dcgan is unconditional: sample() takes no labels y")
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

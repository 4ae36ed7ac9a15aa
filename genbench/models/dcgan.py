"""Deep convolutional GAN (Radford, Metz & Chintala 2016) trained with the GAN minimax objective of
Goodfellow et al. 2014 ("Generative adversarial nets").

The discriminator D maximises  E_x[log D(x)] + E_z[log(1 - D(G(z)))]  (Goodfellow et al., eq. 1),
written as binary cross-entropy on logits with "real" = 1 and "fake" = 0. The generator uses the
non-saturating loss  -E_z[log D(G(z))]  that Goodfellow et al. recommend in section 3 instead of
minimising log(1 - D(G(z))), which has vanishing gradients early in training. One D update and one G
update per batch, both with Adam (lr 2e-4, beta1 0.5, as in Radford et al., section 4).

Training data are the real images in [0, 1] as they are (no binarisation or dequantisation); the
networks are in `genbench.models.nets`, sized from the image shape.

Capabilities (shared with gan and cgan, `genbench.models.adversarial`): `sample(n)` = G(z);
`anomaly_score(x)` = minus the discriminator's logit, a heuristic score, not a likelihood; `log_prob`
= the Parzen-window estimate (Goodfellow et al. 2014, Table 1), labelled as such.
"""

from __future__ import annotations

from torch import nn

from genbench.data import Split
from genbench.models import register
from genbench.models.adversarial import AdversarialModel
from genbench.models.nets import DCGANDiscriminator, DCGANGenerator


@register("dcgan")
class DCGAN(AdversarialModel):
    """DCGAN with the non-saturating generator loss.

    Hyperparameters: latent_dim (size of z ~ N(0, I)), base_channels (width of the first
    discriminator and last generator layer; it doubles at each resolution halving), epochs,
    batch_size, lr and beta1 (Adam, both networks), parzen_samples (generated images of the Parzen
    log-likelihood estimate), parzen_holdout (fraction of the training images held out to choose
    its bandwidth). `device` is a runtime setting.
    """

    eval_batch = 256
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

    def _networks(self, train: Split) -> tuple[nn.Module, nn.Module]:
        return (DCGANGenerator(train.image_shape, self.latent_dim, self.base_channels),
                DCGANDiscriminator(train.image_shape, self.base_channels))

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

Capabilities (shared with dcgan and cgan, `genbench.models.adversarial`): `sample(n)` = G(z);
`log_prob(x)` = the Parzen-window estimate (Goodfellow et al. 2014, Table 1), labelled as such;
`anomaly_score(x)` = minus the discriminator's logit.

The networks are the small MLPs of `genbench.models.nets` (hand-written: no library ships a GAN).
"""

from __future__ import annotations

from torch import nn

from genbench.data import Split
from genbench.models import register
from genbench.models.adversarial import GENERATOR_LOSSES, AdversarialModel
from genbench.models.nets import MLPDiscriminator, MLPGenerator


@register("gan")
class GAN(AdversarialModel):
    """MLP GAN (Goodfellow et al. 2014) with a Parzen-window log-likelihood estimate.

    Hyperparameters: latent_dim (size of z ~ N(0, I)), hidden_dim (width of the two hidden layers of
    each MLP), dropout (discriminator), epochs, batch_size, lr and beta1 (Adam, both networks),
    d_steps (discriminator updates per generator update), generator_loss ("non_saturating" or
    "minimax"), parzen_samples (generated images of the Parzen estimate), parzen_holdout (fraction
    of the training images held out to choose its bandwidth). `device` is a runtime setting.
    """

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

    def _networks(self, train: Split) -> tuple[nn.Module, nn.Module]:
        return (MLPGenerator(train.image_shape, self.latent_dim, self.hidden_dim),
                MLPDiscriminator(train.image_shape, self.hidden_dim, self.dropout))

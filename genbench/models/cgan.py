"""Class-conditional generative adversarial network (Mirza & Osindero 2014, "Conditional generative
adversarial nets"), with MLP generator and discriminator.

Both players see the class label y: the generator G(z, y) maps z ~ N(0, I) concatenated with a
learned embedding of y to an image in [0, 1], and the discriminator D(x, y) reads the flattened image
concatenated with its own embedding of y (Mirza & Osindero, section 3.2, with the label joined to
the input of each network). They play the conditional minimax game (their eq. 2)

    min_G max_D  E_{x,y}[log D(x, y)] + E_{z,y}[log(1 - D(G(z, y), y))],

with one discriminator and one generator update per batch; the fake images of a batch are generated
for the labels of its real images (so the classes follow the training prior), D minimises the binary
cross-entropy with "real" = 1 and "fake" = 0, and G the non-saturating loss -log D(G(z, y), y)
(Goodfellow et al. 2014, section 3). Adam, beta1 0.5, for both. The networks are the MLPs of
`genbench.models.nets` (batch norm in G, dropout in D), the same as the unconditional `gan`'s plus
the label embeddings: they train in seconds on a CPU and serve every image shape.

Capabilities:
  - `sample(n, y=...)`: G(z, y) for the requested classes; y None draws the classes from the class
    frequencies of the training images (`class_prior_`). `conditional = True`, so the report's
    sample grid has one row per class.
  - `log_prob(x)`: no tractable likelihood; the Parzen-window estimate (`genbench.models.parzen`,
    Goodfellow et al. 2014, Table 1) of the marginal density p(x) = sum_y p(y) p(x | y), in the
    "discrete" likelihood space: a Gaussian kernel density on [0, 1]^D centred on `parzen_samples`
    generated images whose classes are drawn from the training prior, bandwidth chosen on a held-out
    slice (`parzen_holdout`) of the training images given to `fit` (dequantised). The cGAN trains on
    the rest: it never sees validation or test data.
  - `anomaly_score(x)` = -max_y D(x, y): minus the discriminator's largest logit over the classes
    present in the training data (an image that no class's discriminator accepts as real scores
    high). Classes absent from the training data (the one-class anomaly protocol trains on a single
    class) are left out of the max, since their embeddings never learned anything. A heuristic, like
    the unconditional GAN's score.
  - No `predict_proba`: the discriminator scores (image, label) pairs as real or fake, it is not a
    classifier of the label.
"""

from __future__ import annotations

import torch
from torch import nn

from genbench.data import Split
from genbench.models import register
from genbench.models.adversarial import AdversarialModel
from genbench.models.base import check_fitted
from genbench.models.nets import MLPDiscriminator, MLPGenerator


@register("cgan")
class CGAN(AdversarialModel):
    """Conditional MLP GAN (Mirza & Osindero 2014) with a Parzen-window log-likelihood estimate.

    Hyperparameters: latent_dim (size of z), embed_dim (size of the label embeddings), hidden_dim
    (width of the two hidden layers of each MLP), dropout (discriminator), epochs, batch_size, lr and
    beta1 (Adam, both networks), parzen_samples (generated images of the Parzen estimate),
    parzen_holdout (fraction of the training images held out to choose its bandwidth). `device` is a
    runtime setting.
    """

    conditional = True
    fast_params = {"epochs": 2, "hidden_dim": 32, "parzen_samples": 200}
    constraints = {
        "latent_dim": {"low": 1},
        "embed_dim": {"low": 1},
        "hidden_dim": {"low": 1},
        "dropout": {"low": 0.0, "high": 0.99},
        "epochs": {"low": 1},
        "batch_size": {"low": 2},  # the generator's batch norm needs more than one image per batch
        "lr": {"low": 0.0},
        "beta1": {"low": 0.0, "high": 1.0},
        "parzen_samples": {"low": 1},
        "parzen_holdout": {"low": 0.0, "high": 0.9},
    }

    def __init__(self, latent_dim: int = 32, embed_dim: int = 16, hidden_dim: int = 256, dropout: float = 0.3,
                 epochs: int = 100, batch_size: int = 64, lr: float = 5e-4, beta1: float = 0.5,
                 parzen_samples: int = 10000, parzen_holdout: float = 0.1, device: str = "auto"):
        self.latent_dim = latent_dim
        self.embed_dim = embed_dim
        self.hidden_dim = hidden_dim
        self.dropout = dropout
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.beta1 = beta1
        self.parzen_samples = parzen_samples
        self.parzen_holdout = parzen_holdout
        self.device = device

    @property
    def likelihood_info(self) -> dict:
        info = super().likelihood_info
        info["method"] += "; samples' classes drawn from the training class frequencies"
        return info

    def _networks(self, train: Split) -> tuple[nn.Module, nn.Module]:
        return (MLPGenerator(train.image_shape, self.latent_dim, self.hidden_dim, train.num_classes, self.embed_dim),
                MLPDiscriminator(train.image_shape, self.hidden_dim, self.dropout, train.num_classes, self.embed_dim))

    @torch.no_grad()
    def anomaly_score(self, x: torch.Tensor) -> torch.Tensor:
        """-max_y D(x, y) over the classes seen in training, (N,): higher = no class finds x real."""
        check_fitted(self, "discriminator_")
        self.discriminator_.eval()
        device = self._device()
        classes = torch.nonzero(self.class_prior_ > 0).flatten().tolist()
        out = []
        for i in range(0, len(x), self.eval_batch):
            b = x[i:i + self.eval_batch].float().to(device)
            logits = torch.stack([self.discriminator_(b, torch.full((len(b),), c, dtype=torch.long, device=device))
                                  for c in classes], dim=1)
            out.append(-logits.max(dim=1).values.cpu())
        return torch.cat(out)

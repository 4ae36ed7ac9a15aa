"""Deterministic convolutional autoencoder, made generative by a Gaussian mixture on its codes.

An encoder E (stride-2 convolutions, `genbench.models.nets.ConvEncoder`) maps an image to a code
z = E(x) in R^latent_dim and a decoder G (the DCGAN generator, `genbench.models.nets.DCGANGenerator`)
maps it back to an image in [0, 1]. Both are trained to minimise a per-image reconstruction loss,
summed over pixels (Hinton & Salakhutdinov 2006, "Reducing the dimensionality of data with neural
networks"): the binary cross-entropy of the pixel intensities (`loss: bce`, the intensities read as
Bernoulli means) or the squared error (`loss: mse`).

An autoencoder has no prior over its codes, so generation fits one afterwards: a Gaussian mixture
(scikit-learn's GaussianMixture, full covariances, `n_mixture_components` components, EM) on the
codes of the training images; `sample` draws codes from the mixture and decodes them (the
"two-stage" recipe of e.g. Ghosh et al. 2020, "From variational to deterministic autoencoders",
section 4). The mixture is not a density over images, so the model has no `log_prob`.

Capabilities:
  - `sample(n)`: G(z), z ~ the code mixture (noise drawn on the CPU with `generator`);
  - `encode(x)`: the code E(x), (N, latent_dim);
  - `anomaly_score(x)`: the per-image reconstruction error of G(E(x)): the sum of squared errors
    (`mse`), or for `bce` the cross-entropy minus its minimum over reconstructions, i.e. the sum
    over pixels of the Bernoulli KL divergence KL(x_i || G(E(x))_i) (zero for a perfect
    reconstruction, so grey images are not penalised for their intensity entropy);
  - `figures(data)`: "interpolation" (decoded linear interpolations between the codes of pairs of
    test images, one pair per row, the end points being the reconstructions of the pair) and
    "reconstructions" (rows of test images, each followed by a row of their reconstructions).

The networks are written by hand in `genbench.models.nets` (torchvision ships no autoencoder); the
code mixture is scikit-learn's.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.mixture import GaussianMixture

from genbench.data import Split
from genbench.models import register
from genbench.models.base import Model, check_fitted, resolve_device
from genbench.models.nets import ConvEncoder, DCGANGenerator, latent_interpolation
from genbench.training import seed_everything, train_loop

EVAL_BATCH = 256  # images per inference batch
EPS = 1e-6  # clamp for logarithms of decoder outputs


def reconstruction_error(x: torch.Tensor, recon: torch.Tensor, loss: str) -> torch.Tensor:
    """Per-image training loss, summed over pixels: BCE(recon; x) or ||x - recon||^2, shape (N,)."""
    if loss == "bce":
        return F.binary_cross_entropy(recon.clamp(EPS, 1 - EPS), x, reduction="none").flatten(1).sum(1)
    return ((x - recon) ** 2).flatten(1).sum(1)


@register("autoencoder")
class Autoencoder(Model):
    """Convolutional autoencoder with a Gaussian-mixture prior fitted to its codes after training.

    Hyperparameters: latent_dim (code size), base_channels (width of the first encoder and last
    decoder layer, doubling at each resolution halving), loss ("bce" or "mse"), epochs,
    batch_size, lr (Adam), n_mixture_components (components of the code mixture; capped at the
    number of training images). `device` is a runtime setting.
    """

    fast_params = {"epochs": 2, "base_channels": 8, "n_mixture_components": 2}
    constraints = {
        "latent_dim": {"low": 1},
        "base_channels": {"low": 1},
        "loss": {"choices": ("bce", "mse")},
        "epochs": {"low": 1},
        "batch_size": {"low": 2},  # the decoder's batch norm needs more than one image per batch
        "lr": {"low": 0.0},
        "n_mixture_components": {"low": 1},
    }

    def __init__(self, latent_dim: int = 10, base_channels: int = 32, loss: str = "bce", epochs: int = 60,
                 batch_size: int = 64, lr: float = 1e-3, n_mixture_components: int = 10,
                 device: str = "auto"):
        self.latent_dim = latent_dim
        self.base_channels = base_channels
        self.loss = loss
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.n_mixture_components = n_mixture_components
        self.device = device

    # --- training ---------------------------------------------------------------------------------
    def fit(self, train: Split, *, seed: int, val: Split | None = None) -> "Autoencoder":
        device = resolve_device(self.device)
        self.image_shape_ = train.image_shape
        seed_everything(seed)  # the initial weights depend on the seed alone
        self.encoder_ = ConvEncoder(train.image_shape, self.latent_dim, self.base_channels).to(device)
        self.decoder_ = DCGANGenerator(train.image_shape, self.latent_dim, self.base_channels).to(device)
        params = list(self.encoder_.parameters()) + list(self.decoder_.parameters())
        optimiser = torch.optim.Adam(params, lr=self.lr)
        self.encoder_.train()
        self.decoder_.train()

        def losses(batch: tuple[torch.Tensor, ...], generator: torch.Generator) -> dict[str, torch.Tensor]:
            (x,) = batch
            return {"loss": reconstruction_error(x, self.decoder_(self.encoder_(x)), self.loss).mean()}

        def step(batch: tuple[torch.Tensor, ...], state) -> dict[str, torch.Tensor]:
            loss = losses(batch, state.generator)["loss"]
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            return {"loss": loss.detach()}

        self.history_ = train_loop("autoencoder", step, (train.x.float(),), epochs=self.epochs,
                                   batch_size=self.batch_size, seed=seed, device=device,
                                   modules={"encoder": self.encoder_, "decoder": self.decoder_},
                                   validation=(losses, (val.x.float(),)) if val is not None else None)
        self.encoder_.eval()
        self.decoder_.eval()

        # The code prior: a full-covariance Gaussian mixture on the training codes (EM, seeded).
        codes = self.encode(train.x).double().numpy()
        mixture = GaussianMixture(n_components=min(self.n_mixture_components, len(codes)),
                                  covariance_type="full", reg_covar=1e-4, random_state=seed).fit(codes)
        self.mixture_ = mixture
        self.mixture_weights_ = torch.from_numpy(mixture.weights_).double()
        self.mixture_means_ = torch.from_numpy(mixture.means_).double()
        self.mixture_cholesky_ = torch.linalg.cholesky(torch.from_numpy(mixture.covariances_).double())
        return self

    # --- inference --------------------------------------------------------------------------------
    def _device(self) -> torch.device:
        return next(self.encoder_.parameters()).device

    def _map(self, fn, x: torch.Tensor) -> torch.Tensor:
        """fn over batches of x on the model's device, in eval mode, concatenated on the CPU."""
        check_fitted(self, "encoder_")
        self.encoder_.eval()
        self.decoder_.eval()
        with torch.no_grad():
            return torch.cat([fn(x[i:i + EVAL_BATCH].float().to(self._device())).cpu()
                              for i in range(0, len(x), EVAL_BATCH)])

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The code E(x) of each image, (N, latent_dim)."""
        return self._map(self.encoder_, x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images G(z) in [0, 1], (N, C, H, W), from codes (N, latent_dim)."""
        return self._map(self.decoder_, z).reshape(len(z), *self.image_shape_)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """G(E(x)), (N, C, H, W)."""
        return self._map(lambda b: self.decoder_(self.encoder_(b)), x).reshape(x.shape)

    def anomaly_score(self, x: torch.Tensor) -> torch.Tensor:
        """Per-image reconstruction error, (N,): higher = worse reconstructed = more anomalous.

        mse: sum of squared errors. bce: the cross-entropy minus its minimum (attained at a perfect
        reconstruction), i.e. the summed Bernoulli KL divergence of the pixels.
        """
        x = x.float()
        error = reconstruction_error(x, self.reconstruct(x), self.loss)
        if self.loss == "bce":
            error = error - reconstruction_error(x, x, "bce")
        return error

    def sample(self, n: int, *, y: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """n images (n, C, H, W) in [0, 1]: codes drawn from the fitted mixture on the CPU, decoded."""
        if y is not None:
            raise ValueError("autoencoder is unconditional: sample() takes no labels y")
        check_fitted(self, "mixture_means_")
        component = torch.multinomial(self.mixture_weights_, n, replacement=True, generator=generator)
        eps = torch.randn((n, self.mixture_means_.shape[1], 1), generator=generator, dtype=torch.float64)
        z = self.mixture_means_[component] + (self.mixture_cholesky_[component] @ eps).squeeze(-1)
        return self.decode(z.float())

    def figures(self, data: Split, *, generator: torch.Generator | None = None,
                pairs: int = 8, steps: int = 10) -> dict[str, tuple[torch.Tensor, int, dict]]:
        """{"interpolation": (pairs x steps images, steps per row, labels), "reconstructions": (...)}.

        Interpolation: `pairs` pairs of distinct test images drawn with `generator`; row i decodes
        (1 - t) E(a_i) + t E(b_i) for t = 0, 1/(steps-1), ..., 1, so its first and last images are
        the reconstructions of a_i and b_i.
        """
        interpolation = latent_interpolation(self.encode, self.decode, data.x, generator=generator,
                                             pairs=pairs, steps=steps)

        per_row = min(8, len(data))
        shown = data.x[torch.randperm(len(data), generator=generator)[:2 * per_row]].float()
        recon = self.reconstruct(shown)
        rows = []
        for start in range(0, len(shown), per_row):
            rows += [shown[start:start + per_row], recon[start:start + per_row]]
        reconstructions = torch.cat(rows)
        labels = {"row_labels": ["test image", "reconstruction"] * (len(rows) // 2)}
        return {"interpolation": interpolation,
                "reconstructions": (reconstructions.clamp(0, 1), per_row, labels)}

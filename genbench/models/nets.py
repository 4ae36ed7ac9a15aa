"""Shared torch building blocks (not a registered model): a multilayer perceptron and the DCGAN
generator and discriminator (Radford, Metz & Chintala 2016, "Unsupervised representation learning
with deep convolutional generative adversarial networks").

Convolutional networks are sized from the image shape (C, H, W), so one definition serves 8x8x1
digits, 28x28x1 MNIST and 32x32x3 CIFAR-10: the generator starts from a small base resolution and
doubles it with stride-2 transposed convolutions, the discriminator halves it back with stride-2
convolutions. Written by hand because torchvision ships no DCGAN.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def mlp(sizes: list[int], activation: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    """Linear layers of the given widths with `activation` between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


def upsampling_stages(size: int) -> int:
    """How many times a small base resolution doubles up to `size`.

    The fewest stages that bring the base down to at most 7 pixels, but at least two while the base
    stays >= 2 pixels: 8 -> 2 stages from 2x2, 28 -> 2 from 7x7, 32 -> 3 from 4x4, 64 -> 4 from 4x4.
    When `size` is not the base times a power of two (e.g. 9), the base is rounded up
    (ceil(9 / 4) = 3 -> 12) and the generator crops its output to `size`.
    """
    stages = 0
    while math.ceil(size / 2**stages) > 7:
        stages += 1
    while stages < 2 and math.ceil(size / 2 ** (stages + 1)) >= 2:
        stages += 1
    return stages


def _dcgan_init(module: nn.Module) -> None:
    """Weights ~ N(0, 0.02), batch-norm scales ~ N(1, 0.02) (Radford et al. 2016, section 4)."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class DCGANGenerator(nn.Module):
    """z (N, latent_dim) -> images (N, C, H, W) in [0, 1].

    A linear projection to `width * 2**(s-1)` channels at the base resolution, then `s` stride-2
    transposed convolutions (kernel 4) that double the resolution and halve the channels, with
    batch norm and ReLU after all but the last; the last maps to C channels and a sigmoid (the
    paper's tanh, rescaled to [0, 1]: (tanh(a) + 1) / 2 = sigmoid(2a)).
    """

    def __init__(self, image_shape: tuple[int, int, int], latent_dim: int, width: int = 32):
        super().__init__()
        channels, height, width_px = image_shape
        self.image_shape = tuple(image_shape)
        self.stages = upsampling_stages(min(height, width_px))
        self.base = (math.ceil(height / 2**self.stages), math.ceil(width_px / 2**self.stages))
        top = width * 2 ** max(self.stages - 1, 0)
        self.top_channels = top
        self.project = nn.Sequential(
            nn.Linear(latent_dim, top * self.base[0] * self.base[1], bias=False),
            nn.Unflatten(1, (top, *self.base)),
            nn.BatchNorm2d(top),
            nn.ReLU(inplace=True),
        )
        layers: list[nn.Module] = []
        ch = top
        for _ in range(self.stages - 1):
            layers += [nn.ConvTranspose2d(ch, ch // 2, 4, stride=2, padding=1, bias=False),
                       nn.BatchNorm2d(ch // 2), nn.ReLU(inplace=True)]
            ch //= 2
        if self.stages > 0:
            layers.append(nn.ConvTranspose2d(ch, channels, 4, stride=2, padding=1))
        else:  # an image no larger than the base: one 3x3 convolution to C channels
            layers.append(nn.Conv2d(ch, channels, 3, padding=1))
        self.body = nn.Sequential(*layers)
        self.apply(_dcgan_init)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = torch.sigmoid(self.body(self.project(z)))
        _, height, width = self.image_shape
        if x.shape[-2:] != (height, width):  # the base was rounded up: crop the centre
            top = (x.shape[-2] - height) // 2
            left = (x.shape[-1] - width) // 2
            x = x[..., top:top + height, left:left + width]
        return x


class DCGANDiscriminator(nn.Module):
    """Images (N, C, H, W) in [0, 1] -> one real-vs-fake logit per image, shape (N,).

    Inputs are mapped to [-1, 1]; `s` stride-2 convolutions (kernel 4, padding 1, so H -> floor(H/2))
    double the channels from `width`, with LeakyReLU(0.2) after each and batch norm after all but the
    first (Radford et al. 2016); a linear layer reads the flattened features.
    """

    def __init__(self, image_shape: tuple[int, int, int], width: int = 32):
        super().__init__()
        channels, height, width_px = image_shape
        stages = max(upsampling_stages(min(height, width_px)), 1)
        layers: list[nn.Module] = []
        ch_in, ch_out = channels, width
        for i in range(stages):
            layers.append(nn.Conv2d(ch_in, ch_out, 4, stride=2, padding=1, bias=i == 0))
            if i > 0:
                layers.append(nn.BatchNorm2d(ch_out))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            height, width_px = height // 2, width_px // 2
            ch_in, ch_out = ch_out, ch_out * 2
        self.features = nn.Sequential(*layers)
        self.logit = nn.Linear(ch_in * max(height, 1) * max(width_px, 1), 1)
        self.apply(_dcgan_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(2.0 * x - 1.0)
        return self.logit(h.flatten(1)).squeeze(1)


class ConvEncoder(nn.Module):
    """Images (N, C, H, W) in [0, 1] -> codes (N, out_dim): the DCGAN discriminator's stride-2
    convolutions (without batch norm, so a code depends on its own image only) and a linear layer.

    The mirror image of `DCGANGenerator` with the same `width`, used as the encoder of the
    convolutional autoencoder.
    """

    def __init__(self, image_shape: tuple[int, int, int], out_dim: int, width: int = 32):
        super().__init__()
        channels, height, width_px = image_shape
        stages = max(upsampling_stages(min(height, width_px)), 1)
        layers: list[nn.Module] = []
        ch_in, ch_out = channels, width
        for _ in range(stages):
            layers += [nn.Conv2d(ch_in, ch_out, 4, stride=2, padding=1), nn.LeakyReLU(0.2, inplace=True)]
            height, width_px = height // 2, width_px // 2
            ch_in, ch_out = ch_out, ch_out * 2
        self.features = nn.Sequential(*layers)
        self.out = nn.Linear(ch_in * max(height, 1) * max(width_px, 1), out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.features(2.0 * x - 1.0).flatten(1))


def holdout_indices(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded random split of range(n) into (kept, held out), about `fraction` held out.

    At least one index is held out and at least one kept when n >= 2 (GANs hold out a slice of the
    training images to choose the bandwidth of their Parzen-window likelihood estimate).
    """
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    held = min(max(1, round(fraction * n)), n - 1) if n >= 2 else 0
    return order[held:].sort().values, order[:held].sort().values


class MLPGenerator(nn.Module):
    """z (N, latent_dim), optionally labels y (N,) -> images (N, C, H, W) in [0, 1].

    Two hidden layers with batch norm and LeakyReLU(0.2), a sigmoid output. With `num_classes`, a
    learned label embedding of size `embed_dim` is concatenated to z (the conditional GAN of Mirza
    & Osindero 2014, "Conditional generative adversarial nets").
    """

    def __init__(self, image_shape: tuple[int, int, int], latent_dim: int, hidden_dim: int,
                 num_classes: int = 0, embed_dim: int = 0):
        super().__init__()
        self.image_shape = tuple(image_shape)
        dim = math.prod(image_shape)
        self.embed = nn.Embedding(num_classes, embed_dim) if num_classes else None
        n_in = latent_dim + (embed_dim if num_classes else 0)
        self.net = nn.Sequential(
            nn.Linear(n_in, hidden_dim), nn.BatchNorm1d(hidden_dim), nn.LeakyReLU(0.2),
            nn.Linear(hidden_dim, hidden_dim), nn.BatchNorm1d(hidden_dim), nn.LeakyReLU(0.2),
            nn.Linear(hidden_dim, dim),
        )

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if self.embed is not None:
            z = torch.cat([z, self.embed(y)], dim=1)
        return torch.sigmoid(self.net(z)).reshape(len(z), *self.image_shape)


class MLPDiscriminator(nn.Module):
    """Images (N, C, H, W) in [0, 1], optionally labels y (N,) -> real-vs-fake logits (N,).

    Inputs mapped to [-1, 1] and flattened; two hidden layers with LeakyReLU(0.2) and dropout. With
    `num_classes`, a learned label embedding is concatenated to the flattened image (Mirza &
    Osindero 2014).
    """

    def __init__(self, image_shape: tuple[int, int, int], hidden_dim: int, dropout: float = 0.0,
                 num_classes: int = 0, embed_dim: int = 0):
        super().__init__()
        dim = math.prod(image_shape)
        self.embed = nn.Embedding(num_classes, embed_dim) if num_classes else None
        n_in = dim + (embed_dim if num_classes else 0)
        self.net = nn.Sequential(
            nn.Linear(n_in, hidden_dim), nn.LeakyReLU(0.2), nn.Dropout(dropout),
            nn.Linear(hidden_dim, hidden_dim), nn.LeakyReLU(0.2), nn.Dropout(dropout),
            nn.Linear(hidden_dim, 1),
        )

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = 2.0 * x.flatten(1) - 1.0
        if self.embed is not None:
            h = torch.cat([h, self.embed(y)], dim=1)
        return self.net(h).squeeze(1)


def latent_interpolation(encode, decode, data_x: torch.Tensor, *, generator: torch.Generator | None = None,
                         pairs: int = 8, steps: int = 10) -> tuple[torch.Tensor, int, dict]:
    """A latent interpolation figure: `pairs` pairs of distinct images of `data_x` drawn with
    `generator`; row i decodes (1 - t) E(a_i) + t E(b_i) for t = 0, 1/(steps-1), ..., 1, so its
    first and last images are the reconstructions of a_i and b_i. Returns (images, steps per row, labels)."""
    pairs = min(pairs, len(data_x) // 2)
    if pairs < 1:
        raise ValueError("a latent interpolation needs at least two images")
    order = torch.randperm(len(data_x), generator=generator)[:2 * pairs]
    codes = encode(data_x[order]).double()
    a, b = codes[:pairs, None, :], codes[pairs:, None, :]
    t = torch.linspace(0.0, 1.0, steps, dtype=torch.float64)[None, :, None]
    path = ((1 - t) * a + t * b).reshape(pairs * steps, -1)
    labels = {"row_labels": [f"pair {i + 1}" for i in range(pairs)],
              "column_labels": [f"t = {v:.2f}" for v in t.flatten().tolist()]}
    return decode(path.float()).clamp(0, 1), steps, labels

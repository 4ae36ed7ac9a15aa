"""The feature spaces the compare stage measures stored samples in.

- "evaluator": the pinned evaluator's penultimate features after its ReLU (the non-linearity its classifier
  head reads), scaled to unit length. Bounded (every coordinate in [0, 1]), so one off-manifold sample
  cannot dominate a mean or covariance: on the raw linear-layer outputs two rbm seeds with the same
  precision and recall scored FID 83 and 461.
- "pixels": the first principal components of the training images' pixels (scikit-learn's PCA): a second
  space that shares nothing with the evaluator (no labels, no training of a network), bounded since pixels
  are.
- "inception_v3" (only when params.yaml's `feature_networks: {inception_v3: <file>}` points at weights):
  torchvision's InceptionV3 with the user's state dict (e.g. torchvision's IMAGENET1K_V1 file), its 2048-d
  pool features of the images resized to 299 x 299, grey repeated over three channels, ImageNet-normalised.
  Nothing is downloaded. Heavy on a CPU (about 6 GFLOPs an image).
Sample metrics are compared within a space; the report gives the rank agreement between the spaces.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

PIXEL_COMPONENTS = 32
DESCRIPTIONS = {
    "evaluator": "the pinned evaluator's penultimate features after its ReLU, scaled to unit length",
    "pixels": f"the first {PIXEL_COMPONENTS} principal components of the training images' pixels (scikit-learn PCA)",
}


@torch.no_grad()
def bounded_features(network: torch.nn.Module, images: torch.Tensor, batch_size: int = 500) -> np.ndarray:
    """(N, d) float64: relu(features(x)) / ||relu(features(x))|| (0 for an all-zero row)."""
    network.eval()
    out = [F.normalize(F.relu(network.features(images[i:i + batch_size].float())), dim=1)
           for i in range(0, len(images), batch_size)]
    return torch.cat(out).double().numpy()


NETWORKS = ("inception_v3",)  # the user-weighted feature networks genbench knows


def load_network(name: str, weights: str) -> torch.nn.Module:
    """A feature network with the user's weights, its classifier removed; a clear error when they do not fit."""
    from pathlib import Path

    from genbench.config import ConfigError

    if name not in NETWORKS:
        raise ConfigError(f"params.yaml: feature_networks.{name}: unknown network; genbench knows {', '.join(NETWORKS)}")
    if not Path(weights).is_file():
        raise ConfigError(f"params.yaml: feature_networks.{name}: no file {weights}: save the network's state dict "
                          f"there (e.g. torchvision's Inception_V3_Weights.IMAGENET1K_V1), or remove the entry")
    from torchvision.models import inception_v3

    network = inception_v3(weights=None, aux_logits=False, init_weights=False)
    state = torch.load(weights, map_location="cpu", weights_only=True)
    state = {k: v for k, v in state.items() if not k.startswith("AuxLogits.")}  # the auxiliary head is not used
    missing, unexpected = network.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ConfigError(f"params.yaml: feature_networks.{name}: {weights} is not an InceptionV3 state dict "
                          f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    network.fc = torch.nn.Identity()
    return network.eval()


@torch.no_grad()
def network_features(network: torch.nn.Module, images: torch.Tensor, batch_size: int = 50) -> np.ndarray:
    """(N, 2048) pool features of [0, 1] images: resized to 299 x 299, grey repeated, ImageNet-normalised."""
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    out = []
    for i in range(0, len(images), batch_size):
        x = images[i:i + batch_size].float()
        x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        out.append(network((x - mean) / std))
    return torch.cat(out).double().numpy()


class SampleSpaces:
    """The feature maps, fitted once per dataset, and the reference images' features in each.
    `networks`: {name: weights file} of user-weighted networks (params.yaml's `feature_networks`)."""

    def __init__(self, network: torch.nn.Module, train: torch.Tensor, reference: torch.Tensor, levels: int,
                 components: int = PIXEL_COMPONENTS, networks: dict[str, str] | None = None):
        from sklearn.decomposition import PCA

        self.network, self.levels = network.eval(), levels
        pixels = train.flatten(1).double().numpy()
        self.pca = PCA(n_components=min(components, *pixels.shape), svd_solver="full").fit(pixels)
        self.networks = {name: load_network(name, path) for name, path in (networks or {}).items()}
        self.reference = {"evaluator": self.evaluator(reference), "pixels": self.pixels(reference),
                          **{name: network_features(net, reference) for name, net in self.networks.items()}}
        self.train_evaluator = self.evaluator(train)

    @property
    def second(self) -> list[str]:
        """The spaces besides the evaluator's, where FID and KID are computed too."""
        return ["pixels", *self.networks]

    def features(self, space: str, images: torch.Tensor) -> np.ndarray:
        if space == "evaluator":
            return self.evaluator(images)
        if space == "pixels":
            return self.pixels(images)
        return network_features(self.networks[space], images)

    def images(self, stored: np.ndarray) -> torch.Tensor:
        """Stored uint8 samples (genbench.runner.RAW) -> float images in [0, 1]."""
        return torch.from_numpy(np.asarray(stored, dtype=np.float32) / (self.levels - 1))

    def evaluator(self, images: torch.Tensor) -> np.ndarray:
        return bounded_features(self.network, images)

    def pixels(self, images: torch.Tensor) -> np.ndarray:
        return self.pca.transform(images.flatten(1).double().numpy())

    def describe(self) -> dict:
        texts = {**DESCRIPTIONS, **{name: f"{name} pool features with the weights of params.yaml's feature_networks "
                                          f"(images resized to 299 x 299, grey repeated, ImageNet-normalised)"
                                    for name in self.networks}}
        return {name: {"description": texts[name], "dim": int(self.reference[name].shape[1])} for name in self.reference}

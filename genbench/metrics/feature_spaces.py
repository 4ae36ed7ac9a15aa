"""The feature spaces the compare stage measures stored samples in.

- "evaluator": the pinned evaluator's penultimate features after its ReLU (the non-linearity its classifier
  head reads), scaled to unit length. Bounded (every coordinate in [0, 1]), so one off-manifold sample
  cannot dominate a mean or covariance: on the raw linear-layer outputs two rbm seeds with the same
  precision and recall scored FID 83 and 461.
- "pixels": the first principal components of the training images' pixels (scikit-learn's PCA): a second
  space that shares nothing with the evaluator (no labels, no training of a network), bounded since pixels
  are.
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


class SampleSpaces:
    """Both feature maps, fitted once per dataset, and the reference images' features in each."""

    def __init__(self, network: torch.nn.Module, train: torch.Tensor, reference: torch.Tensor, levels: int,
                 components: int = PIXEL_COMPONENTS):
        from sklearn.decomposition import PCA

        self.network, self.levels = network.eval(), levels
        pixels = train.flatten(1).double().numpy()
        self.pca = PCA(n_components=min(components, *pixels.shape), svd_solver="full").fit(pixels)
        self.reference = {"evaluator": self.evaluator(reference), "pixels": self.pixels(reference)}
        self.train_evaluator = self.evaluator(train)

    def images(self, stored: np.ndarray) -> torch.Tensor:
        """Stored uint8 samples (genbench.runner.RAW) -> float images in [0, 1]."""
        return torch.from_numpy(np.asarray(stored, dtype=np.float32) / (self.levels - 1))

    def evaluator(self, images: torch.Tensor) -> np.ndarray:
        return bounded_features(self.network, images)

    def pixels(self, images: torch.Tensor) -> np.ndarray:
        return self.pca.transform(images.flatten(1).double().numpy())

    def describe(self) -> dict:
        return {name: {"description": text, "dim": int(self.reference[name].shape[1])}
                for name, text in DESCRIPTIONS.items()}

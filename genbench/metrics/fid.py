"""Fréchet distance (Heusel et al. 2017) on the evaluator network's features, with torchmetrics'
FrechetInceptionDistance given a custom feature module."""

from __future__ import annotations

import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance


class _Features(nn.Module):
    def __init__(self, network: nn.Module, feature_dim: int):
        super().__init__()
        self.network = network
        self.num_features = feature_dim  # torchmetrics reads this instead of probing with a 299x299 image

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network.features(x.float())


@torch.no_grad()
def frechet_distance(network: nn.Module, feature_dim: int, real: torch.Tensor, fake: torch.Tensor,
                     *, batch_size: int = 500) -> float:
    network.eval()
    metric = FrechetInceptionDistance(feature=_Features(network, feature_dim), normalize=True)
    for images, is_real in ((real, True), (fake, False)):
        for start in range(0, len(images), batch_size):
            metric.update(images[start:start + batch_size], real=is_real)
    return float(metric.compute())

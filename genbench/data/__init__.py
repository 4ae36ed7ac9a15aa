"""Datasets: a registry of loaders, fixed seeded splits with checksums, and the two likelihood spaces.

Images are float32 tensors in [0, 1] of shape (N, C, H, W) on `levels` evenly spaced intensities
(17 for digits, 256 for 8-bit images); labels are int64. Prepared splits are stored as uint8
intensity indices so that a 60 000-image dataset stays small on disk.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from genbench.config import ConfigError


@dataclass
class Split:
    """One split of a dataset: what `fit` receives and what the metrics read."""

    x: torch.Tensor  # float32 (N, C, H, W) in [0, 1]
    y: torch.Tensor  # int64 (N,)
    levels: int  # number of intensity levels of the discrete data
    num_classes: int
    name: str = "train"

    def __len__(self) -> int:
        return len(self.x)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.x.shape[1:])  # type: ignore[return-value]

    @property
    def dim(self) -> int:
        return int(np.prod(self.image_shape))

    def subset(self, mask: torch.Tensor, name: str | None = None) -> "Split":
        return Split(self.x[mask], self.y[mask], self.levels, self.num_classes, name or self.name)


@dataclass
class RawDataset:
    """What a loader returns: integer images (N, C, H, W) in 0..levels-1, labels, and provenance."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray | None  # None: no official test split, one is cut from train
    test_labels: np.ndarray | None
    levels: int
    class_names: list[str]
    source: dict[str, Any] = field(default_factory=dict)


Loader = Callable[..., RawDataset]
_LOADERS: dict[str, Loader] = {}


def register_dataset(name: str) -> Callable[[Loader], Loader]:
    def wrap(fn: Loader) -> Loader:
        _LOADERS[name] = fn
        return fn

    return wrap


def dataset_names() -> list[str]:
    _import_loaders()
    return sorted(_LOADERS)


def get_loader(name: str) -> Loader:
    _import_loaders()
    if name not in _LOADERS:
        raise ConfigError(f"unknown dataset '{name}' in params.yaml; registered datasets: {', '.join(sorted(_LOADERS))}")
    return _LOADERS[name]


def _import_loaders() -> None:
    from genbench.data import digits, torchvision_datasets  # noqa: F401  (they register themselves)


def sha256(array: np.ndarray | torch.Tensor) -> str:
    if isinstance(array, torch.Tensor):
        array = array.numpy()
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


# --- the two likelihood spaces -------------------------------------------------------------------


def binarize(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Stochastic binarisation (Salakhutdinov & Murray 2008): each pixel ~ Bernoulli(intensity)."""
    return torch.bernoulli(x, generator=generator)


def dequantize(x: torch.Tensor, levels: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniform dequantisation (Theis et al. 2016): level k -> (k + u) / levels, u ~ U[0, 1).

    A density p on [0, 1]^D then gives log P(x) >= E_u[log p(y)] - D log(levels).
    """
    noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return (torch.round(x * (levels - 1)) + noise) / levels

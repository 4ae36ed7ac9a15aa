"""Anomaly detection AUROC (torchmetrics), one-class protocol of Ruff et al. 2018."""

from __future__ import annotations

import torch
from torchmetrics.functional.classification import binary_auroc

PROTOCOL = ("one-class (Ruff et al. 2018): for each normal class, train on the training images of "
            "that class only, score the whole test split, AUROC with every other class as anomalous")


def auroc(scores: torch.Tensor, is_anomaly: torch.Tensor) -> float:
    """Area under the ROC curve; `scores` higher = more anomalous."""
    scores = torch.as_tensor(scores, dtype=torch.float64)
    if not torch.isfinite(scores).all():
        raise ValueError("anomaly scores contain NaN or infinite values")
    return float(binary_auroc(scores, torch.as_tensor(is_anomaly).long()))

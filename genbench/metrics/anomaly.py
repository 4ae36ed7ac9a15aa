"""Anomaly detection AUROC (torchmetrics), one-class protocol of Ruff et al. 2018."""

from __future__ import annotations

import scipy.stats
import torch
from torchmetrics.functional.classification import binary_auroc

PROTOCOL = ("one-class (Ruff et al. 2018): for each normal class, train on the training images of "
            "that class only, score the whole test split, AUROC with every other class as anomalous")


def auroc(scores: torch.Tensor, is_anomaly: torch.Tensor) -> float:
    """Area under the ROC curve; `scores` higher = more anomalous.

    torchmetrics reads scores outside [0, 1] as logits and applies a sigmoid, which in float64 rounds
    every score above about 37 (an NLL in nats, an energy) to 1.0 and ties them all; AUROC depends on
    the scores only through their order, so they go in as their average ranks scaled into (0, 1]."""
    scores = torch.as_tensor(scores, dtype=torch.float64)
    if not torch.isfinite(scores).all():
        raise ValueError("anomaly scores contain NaN or infinite values")
    ranks = scipy.stats.rankdata(scores.cpu().numpy(), method="average") / max(len(scores), 1)
    return float(binary_auroc(torch.from_numpy(ranks), torch.as_tensor(is_anomaly).long().cpu()))

"""Accuracy, log-loss and expected calibration error on a labelled split (torchmetrics, scikit-learn)."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import log_loss
from torchmetrics.functional.classification import multiclass_accuracy, multiclass_calibration_error

ECE_BINS = 15


def classification_record(proba: np.ndarray | torch.Tensor, y: torch.Tensor, num_classes: int, *, split: str) -> dict:
    proba = torch.as_tensor(np.asarray(proba), dtype=torch.float64)
    if proba.shape != (len(y), num_classes):
        raise ValueError(f"predict_proba returned shape {tuple(proba.shape)}, expected {(len(y), num_classes)}")
    proba = proba.clamp_min(0)
    proba = proba / proba.sum(1, keepdim=True)
    return {
        "accuracy": float(multiclass_accuracy(proba, y, num_classes=num_classes, average="micro")),
        "log_loss": float(log_loss(y.numpy(), proba.numpy(), labels=list(range(num_classes)))),
        "ece": float(multiclass_calibration_error(proba.float(), y, num_classes=num_classes, n_bins=ECE_BINS, norm="l1")),
        "ece_bins": ECE_BINS,
        "split": split,
        "n": len(y),
    }

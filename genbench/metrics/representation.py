"""Linear-probe accuracy of a model's representation: a multinomial logistic regression
(scikit-learn) trained on `encode(train)` and scored on `encode(test)`."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from genbench.data import Split


def linear_probe(model: Any, train: Split, test: Split, *, seed: int, C: float = 1.0) -> tuple[dict, np.ndarray]:
    """The probe's record and its per-test-image correctness (float64 0/1, for the bootstrap over test images)."""
    def codes(x: torch.Tensor) -> np.ndarray:
        return np.asarray(torch.as_tensor(model.encode(x)).reshape(len(x), -1).double())

    train_codes, test_codes = codes(train.x), codes(test.x)
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000, random_state=seed))
    probe.fit(train_codes, train.y.numpy())
    correct = (probe.predict(test_codes) == test.y.numpy()).astype(np.float64)
    return {
        "accuracy": float(np.mean(correct)),
        "feature_dim": int(train_codes.shape[1]),
        "classifier": f"standardised features, multinomial logistic regression (scikit-learn, C={C})",
        "train_split": train.name, "split": test.name, "n_train": len(train), "n": len(test),
    }, correct

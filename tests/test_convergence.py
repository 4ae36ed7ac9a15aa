"""The report's convergence flag (genbench.report.convergence) on curves whose answer is known."""

from __future__ import annotations

import numpy as np
import pandas as pd

from genbench.report.convergence import THRESHOLD, still_falling


def curve(values_per_seed: dict[int, np.ndarray], column: str = "val_loss", **extra) -> pd.DataFrame:
    rows = [{"seed": s, "epoch": e, column: v, **extra} for s, values in values_per_seed.items()
            for e, v in enumerate(values)]
    return pd.DataFrame(rows)


def test_a_loss_still_falling_at_the_end_is_flagged_and_a_flat_one_is_not():
    epochs = np.arange(40)
    falling = {s: 10 * np.exp(-epochs / 60) + 1 for s in range(3)}  # still dropping ~5% a quarter at the end
    flat = {s: 10 * np.exp(-epochs / 3) + 1 for s in range(3)}  # converged long before the end
    found = still_falling(curve(falling))
    assert found["still_falling"] and found["column"] == "val_loss" and found["epochs"] == 40
    last, before = falling[0][-10:].mean(), falling[0][-20:-10].mean()
    assert found["drops"][0] == (before - last) / before > THRESHOLD
    assert not still_falling(curve(flat))["still_falling"]


def test_a_majority_of_seeds_decides_and_the_last_layer_is_judged():
    epochs = np.arange(20)
    falling, flat = 5 * np.exp(-epochs / 30) + 1, np.full(20, 2.0)
    assert not still_falling(curve({0: falling, 1: flat, 2: flat}))["still_falling"]
    assert still_falling(curve({0: falling, 1: falling, 2: flat}))["still_falling"]
    layered = pd.concat([curve({0: falling}, "val_reconstruction_bce", layer=0),
                         curve({0: flat}, "val_reconstruction_bce", layer=1)])
    assert not still_falling(layered)["still_falling"]  # layer 0 still fell; the last layer is flat


def test_no_verdict_without_a_validation_loss_or_with_too_few_epochs():
    assert still_falling(curve({0: np.ones(10)}, "d_loss")) is None
    assert still_falling(curve({0: np.array([3.0, 2.0, 1.0])})) is None

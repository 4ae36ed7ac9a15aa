"""Is a model's validation loss still falling when its training stops? Read off its training curves
(`results/<dataset>/<model>/curve.csv`, held-out validation losses per epoch), so that an under-trained
model is not ranked as if converged without the report saying so.

Measure: per seed, the mean validation loss over the last quarter of the epochs against the mean over the
quarter before (at least two epochs each); the model is flagged when that mean fell by more than
THRESHOLD of its size on a majority of the seeds. A model trained layer by layer (dbn) is judged on its
last layer. Models that log no validation loss (adversarial games, closed-form fits) get no verdict.
"""

from __future__ import annotations

import pandas as pd

THRESHOLD = 0.01  # a relative drop of 1% over the last quarter of training
# The validation column read, in this order of preference: each model's held-out training objective.
LOSSES = ("val_loss", "val_reconstruction_bce", "val_reconstruction_sq_error", "val_neg_pseudo_log_likelihood",
          "val_nll")
MEASURE = (f"validation loss still falling: its mean over the last quarter of the epochs is more than "
           f"{THRESHOLD:.0%} below its mean over the quarter before, on most seeds")


def still_falling(curve: pd.DataFrame) -> dict | None:
    """{"still_falling", "column", "drops" (per seed, relative), "epochs", "measure"}, or None without a
    validation loss or with fewer than 4 logged epochs per seed."""
    column = next((c for c in LOSSES if c in curve.columns), None)
    if column is None:
        return None
    if "layer" in curve.columns:
        curve = curve[curve["layer"] == curve["layer"].max()]
    drops = {}
    for seed, rows in curve.dropna(subset=[column]).groupby("seed"):
        values = rows.sort_values("epoch")[column].to_numpy(dtype=float)
        quarter = max(2, len(values) // 4)
        if len(values) < 2 * quarter:
            return None
        last, before = values[-quarter:].mean(), values[-2 * quarter:-quarter].mean()
        drops[int(seed)] = float((before - last) / abs(before)) if before else 0.0
    if not drops:
        return None
    flagged = sum(d > THRESHOLD for d in drops.values())
    return {"still_falling": flagged * 2 > len(drops), "column": column, "drops": drops,
            "epochs": int(curve["epoch"].nunique()), "measure": MEASURE}

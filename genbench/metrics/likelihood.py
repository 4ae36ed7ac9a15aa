"""Test log-likelihood in nats per image and bits per dimension, in one of two spaces.

- "binary": the model scores the fixed stochastic binarisation of the test split; the number is
  a log-probability of binary data, bits/dim = nll / (D ln 2).
- "discrete": the model scores uniformly dequantised images y = (k + u) / K and returns a log
  density on [0, 1]^D; log P(k) >= E_u[log p(y)] - D log K (Theis et al. 2016), evaluated with one
  fixed noise draw per image, so an exact density becomes a lower bound on the discrete likelihood.
  A model of the levels themselves (likelihood_info "discrete_input": "levels", e.g. ddpm) reads
  k = floor(yK) back and returns log P(k) + D log K, so the record is its own number for log P(k).

No library computes these conversions; they are written here by hand.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from genbench.data import dequantize
from genbench.data.prepare import PreparedData

SPACES = ("binary", "discrete")


def model_input(model: Any, data: PreparedData, split: str, *, seed: int) -> torch.Tensor:
    """The split as the model's likelihood space wants it (binarised or dequantised)."""
    space = getattr(model, "likelihood_space", None)
    if space == "binary":
        return data.binary(split).x
    if space == "discrete":
        x = data.split(split).x
        return dequantize(x, data.levels, torch.Generator().manual_seed(seed))
    raise ValueError(f"{type(model).__name__}.likelihood_space must be one of {SPACES}, got {space!r}")


def log_likelihood_per_image(log_prob: torch.Tensor, space: str, dim: int, levels: int) -> torch.Tensor:
    """Per-image log-likelihood in nats in the record's space (adds -D log K for densities)."""
    log_prob = log_prob.double()
    return log_prob - dim * math.log(levels) if space == "discrete" else log_prob


def nll_record(log_prob: torch.Tensor, *, space: str, dim: int, levels: int, info: dict[str, Any], split: str) -> dict:
    """Summarise per-image log-likelihoods (nats) into the record the report reads."""
    if space not in SPACES:
        raise ValueError(f"space must be one of {SPACES}, got {space!r}")
    log_lik = log_likelihood_per_image(log_prob, space, dim, levels)
    if not torch.isfinite(log_lik).all():
        bad = int((~torch.isfinite(log_lik)).sum())
        raise ValueError(f"log_prob returned {bad} non-finite values of {len(log_lik)}")
    nll = float(-log_lik.mean())
    estimator, method = info["estimator"], info["method"]
    if space == "discrete" and info.get("discrete_input") == "levels":
        # the model reads k = floor(yK) back from y and returns log P(k) + D log K: no dequantisation gap
        method = f"{method}; scores the discrete levels k directly (dequantisation undone), no dequantisation gap"
    elif space == "discrete":
        method = f"{method}; uniform dequantisation, 1 noise draw per image: E_u[log p(y)] - D log K (Theis et al. 2016)"
        if estimator == "exact":
            estimator = "lower_bound"
    return {
        "nll_nats": nll,
        "nll_stderr_nats": float(log_lik.std() / math.sqrt(len(log_lik))) if len(log_lik) > 1 else None,
        "bits_per_dim": nll / (dim * math.log(2)),
        "space": space,
        "levels": 2 if space == "binary" else levels,
        "dim": dim,
        "estimator": estimator,
        "method": method,
        "samples": info.get("samples"),
        "split": split,
        "n": len(log_lik),
    }

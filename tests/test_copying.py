"""The data-copying test C_T (Meehan et al. 2020) against a hand count of its U statistic, and on the cases
whose answer is known: exact copies of training images, held-out images, and samples far from the data."""

from __future__ import annotations

import numpy as np
import pytest

from genbench.metrics.copying import CopyingTest, nearest_distances


def _pixels(split):
    return split.x.flatten(1).double().numpy()


def test_one_cell_statistic_equals_the_hand_counted_mann_whitney_z():
    rng = np.random.default_rng(0)
    train, held_out, samples = rng.normal(size=(200, 3)), rng.normal(size=(60, 3)), rng.normal(size=(80, 3)) * 1.1
    result = CopyingTest(train, held_out, cells=1, min_samples=1)(samples)
    q, p = nearest_distances(samples, train), nearest_distances(held_out, train)
    brute = np.sqrt(((samples[:, None] - train[None]) ** 2).sum(-1)).min(1)
    assert q == pytest.approx(brute)
    u = sum((qi > pj) + 0.5 * (qi == pj) for qi in q for pj in p)
    m, n = len(q), len(p)
    assert result["ct"] == pytest.approx((u - m * n / 2) / np.sqrt(m * n * (m + n + 1) / 12), rel=1e-12)
    assert result["cells_used"] == 1


def test_copies_of_training_images_are_caught_and_held_out_images_are_not(digits_splits):
    train, val, test = (_pixels(digits_splits[s]) for s in ("train", "val", "test"))
    test_of_copying = CopyingTest(train, test, cells=5, seed=0)
    copies = train[np.random.default_rng(1).integers(0, len(train), size=300)]
    copied = test_of_copying(copies)
    assert copied["ct"] < -5 and copied["p_copying"] < 1e-6
    held_out = test_of_copying(val)  # new images of the same distribution, never trained on
    assert abs(held_out["ct"]) < 2.5 and held_out["p_copying"] > 0.01
    blurred = test_of_copying(np.clip(val + np.random.default_rng(2).normal(scale=0.3, size=val.shape), 0, 1))
    assert blurred["ct"] > 5  # farther from the training images than new data: under-fitting, not copying


def test_cells_with_too_few_samples_are_left_out():
    rng = np.random.default_rng(3)
    train = np.concatenate([rng.normal(size=(100, 2)), rng.normal(loc=50, size=(100, 2))])
    held_out = np.concatenate([rng.normal(size=(40, 2)), rng.normal(loc=50, size=(40, 2))])
    result = CopyingTest(train, held_out, cells=2, min_samples=20)(rng.normal(size=(50, 2)))  # one mode only
    assert result["cells_used"] == 1 and result["samples_in_used_cells"] == 1.0
    with pytest.raises(ValueError, match="cells"):
        CopyingTest(train, held_out, cells=0)

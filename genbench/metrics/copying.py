"""The data-copying test of Meehan, Chaudhuri & Dasgupta 2020 ("A non-parametric test to detect data-copying
in generative models", AISTATS), on feature vectors.

Training set T, held-out real images P (never trained on) and generated samples Q. The space is cut into
cells by k-means on T. In each cell pi, the distances of P's and of Q's points to their nearest training
point are compared with the Mann-Whitney U statistic (scipy.stats.mannwhitneyu: pairs in which the sample
is farther from T than the held-out image, ties counting 1/2), standardised as
Z_U(pi) = (U - m n / 2) / sqrt(m n (m + n + 1) / 12). The statistic is the average over the cells holding at
least `min_samples` samples, weighted by the share of held-out images in each cell:

    C_T = sum_pi P(pi) Z_U(pi) / sum_pi P(pi)

C_T ~ 0 when the samples are as far from the training set as new data is; C_T << 0 means the samples sit
closer to the training images than new data does (copying), C_T >> 0 that they are farther (under-fitting).
Under "Q is as far from T as P" each Z_U is about standard normal and the cells are independent, so
C_T / sqrt(sum w^2) (w the normalised weights) is standard normal: `p_copying` is its lower tail.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.distance import cdist
from scipy.stats import mannwhitneyu, norm
from sklearn.cluster import KMeans

METHOD = ("data-copying test C_T of Meehan et al. 2020: Mann-Whitney z of the samples' against the held-out "
          "images' distances to their nearest training image, per k-means cell of the training set, weighted by "
          "the held-out images' share of each cell; 0 = as far as new data, << 0 = copying, >> 0 = farther")


def nearest_distances(queries: np.ndarray, train: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """Euclidean distance from each query row to its nearest training row (float64)."""
    return np.concatenate([cdist(queries[i:i + chunk], train).min(1) for i in range(0, len(queries), chunk)])


class CopyingTest:
    """`CopyingTest(train, held_out, cells, seed)(samples)` -> C_T. The cells and the held-out distances are
    computed once and serve every model."""

    def __init__(self, train: np.ndarray, held_out: np.ndarray, cells: int = 10, min_samples: int = 20,
                 seed: int = 0):
        if not 1 <= cells <= len(train):
            raise ValueError(f"the copying test needs 1 <= cells <= {len(train)} training points, got {cells}")
        self.train, self.cells, self.min_samples = np.asarray(train, np.float64), cells, min_samples
        self.kmeans = KMeans(n_clusters=cells, n_init=10, random_state=seed).fit(self.train)
        held_out = np.asarray(held_out, np.float64)
        self.held_out_cell = self.kmeans.predict(held_out)
        self.held_out_distance = nearest_distances(held_out, self.train)

    def __call__(self, samples: np.ndarray, min_samples: int | None = None) -> dict:
        """C_T of `samples`; `min_samples` (default: the test's) for a smaller set, e.g. held-out images."""
        min_samples = self.min_samples if min_samples is None else min_samples
        samples = np.asarray(samples, np.float64)
        sample_cell = self.kmeans.predict(samples)
        sample_distance = nearest_distances(samples, self.train)
        z, weight = [], []
        for c in range(self.cells):
            q, p = sample_distance[sample_cell == c], self.held_out_distance[self.held_out_cell == c]
            if len(q) < min_samples or len(p) == 0:
                continue  # too few samples (or no held-out image) in this cell to compare
            m, n = len(q), len(p)
            u = mannwhitneyu(q, p, alternative="two-sided", method="asymptotic").statistic
            z.append((u - m * n / 2) / np.sqrt(m * n * (m + n + 1) / 12))
            weight.append(n / len(self.held_out_distance))
        if not z:
            return {"ct": float("nan"), "p_copying": float("nan"), "cells_used": 0, "cells": self.cells,
                    "samples_in_used_cells": 0.0}
        w = np.asarray(weight) / np.sum(weight)
        ct = float(np.dot(w, z))
        return {"ct": ct, "p_copying": float(norm.cdf(ct / np.sqrt(np.sum(w ** 2)))), "cells_used": len(z),
                "cells": self.cells,
                "samples_in_used_cells": float(np.isin(sample_cell, [c for c in range(self.cells) if
                                                                     np.sum(sample_cell == c) >= min_samples]).mean()),
                "median_sample_distance": float(np.median(sample_distance)),
                "median_held_out_distance": float(np.median(self.held_out_distance))}

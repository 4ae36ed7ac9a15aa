"""Paired comparisons of models that share seeds and test images: one bootstrap per metric whose resamples
are the same for every model, so a model's interval and its difference from the best come from the same
draws (Efron & Tibshirani 1993, ch. 16; the paired bootstrap of Koehn 2004).

A resample draws each model's seeds with replacement (from a stream of the model's own: seed 3 of one
model shares nothing with seed 3 of another, and models may have different numbers of seeds) and,
together with them, the test images with replacement (one draw of images for every seed, class and model:
the models are scored on the same images, which is what pairs them). For a sample metric (FID) the units
are the generated samples instead, drawn per model and seed (a model's samples are its own, so they are
not paired). A draw is written as multiplicities (how often each seed or image was drawn), so a statistic
of a resample is the weighted statistic of the full data, computed exactly and without copying it.

Verdict: each model's value minus the best model's, with its 95% percentile interval (of the bootstrap
distribution shifted to have the estimate as its median, `centred`) and the two-sided
bootstrap p-value of "no difference" (twice the share of resamples on the other side of zero, counted
as (1 + count) / (1 + resamples) so that it is never 0), Holm-corrected across the models compared
(statsmodels' multipletests). A model is tied with the best when its corrected p-value is at least
0.05: the paired comparison cannot separate them. A wide interval is never a tie by itself.

Written by hand: scipy.stats.bootstrap resamples one data set or several independent ones, not the
crossed seed x image design shared by many models, nor weighted FID or AUROC.
"""

from __future__ import annotations

import zlib
from typing import Callable, Iterator

import numpy as np

CONFIDENCE = 0.95
ALPHA = 0.05
N_RESAMPLES = 1999  # smallest p-value 2/2000 = 0.001, below Holm's first threshold 0.05/25 = 0.002 for 26 models
CHUNK = 500  # resamples drawn at a time (memory: CHUNK x units floats)
RULE = ("tied with the best: the paired difference from the best model cannot be told from 0 "
        "(bootstrap over seeds and {units} drawn together, {resamples} resamples, two-sided, "
        "Holm-corrected across the {m} models compared at 5%)")


def weights(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """(size, n) multiplicities of n draws with replacement from n units."""
    drawn = rng.integers(0, n, size=(size, n)) + n * np.arange(size)[:, None]
    return np.bincount(drawn.ravel(), minlength=size * n).reshape(size, n).astype(np.float64)


def draws(model: str, n_seeds: int, n_units: int, n_resamples: int = N_RESAMPLES, seed: int = 0, streams: int = 1,
          own_units: bool = False, chunk: int = CHUNK) -> Iterator[tuple[np.ndarray, list[np.ndarray]]]:
    """Chunks of (seed multiplicities (B, n_seeds), [unit multiplicities (B, n_units)] * streams).

    The seed draws come from `model`'s own stream. The unit draws (test images) depend on `seed` alone, so
    they are the same for every model, unless `own_units`: generated samples are the model's own, drawn
    from its own stream, one stream per seed (`streams`)."""
    key = zlib.crc32(model.encode())
    seeds_rng = np.random.default_rng([seed, 0, key])
    units_rng = np.random.default_rng([seed, 1, key] if own_units else [seed, 1])
    done = 0
    while done < n_resamples:
        size = min(chunk, n_resamples - done)
        yield weights(seeds_rng, n_seeds, size), [weights(units_rng, n_units, size) for _ in range(streams)]
        done += size


def seed_average(per_seed: np.ndarray, seed_weights: np.ndarray) -> np.ndarray:
    """(B, n_seeds[, K]) per-seed values of B resamples -> (B[, K]) their mean over the drawn seeds."""
    w = seed_weights if per_seed.ndim == 2 else seed_weights[:, :, None]
    return np.sum(per_seed * w, axis=1) / seed_weights.shape[1]


# --- statistics of one seed under unit multiplicities w (B, n) -------------------------------------------


def weighted_means(values: np.ndarray, w: np.ndarray) -> np.ndarray:
    """values (n_seeds, n) per-image values -> (B, n_seeds) their means under multiplicities w (B, n)."""
    return w @ values.T / w.shape[1]


def weighted_auroc(scores: np.ndarray, is_anomaly: np.ndarray, w: np.ndarray) -> np.ndarray:
    """AUROC of one score vector (n,) (higher = more anomalous) under multiplicities w (B, n): the
    Mann-Whitney statistic over weighted pairs, ties counting 1/2 (Hanley & McNeil 1982). NaN where a
    resample has no anomalous or no normal image."""
    levels, codes = np.unique(scores, return_inverse=True)
    onehot = np.zeros((len(scores), len(levels)))
    onehot[np.arange(len(scores)), codes] = 1.0
    positive = w @ (onehot * is_anomaly[:, None])  # (B, levels): anomalous weight per score level
    negative = w @ (onehot * ~is_anomaly[:, None])
    below = np.cumsum(negative, axis=1) - negative  # normal weight strictly below each level
    pairs = positive.sum(1) * negative.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, np.sum(positive * (below + 0.5 * negative), axis=1) / pairs, np.nan)


def weighted_ece(proba: np.ndarray, labels: np.ndarray, w: np.ndarray, n_bins: int = 15) -> np.ndarray:
    """Expected calibration error (L1, top-1 confidence, `n_bins` equal-width bins binned as torchmetrics'
    multiclass_calibration_error bins them) of one seed's (n, C) probabilities under multiplicities w (B, n):
    sum over bins of |weighted sum of (correct - confidence)| / total weight."""
    confidence = proba.astype(np.float32).max(1)
    correct = (proba.argmax(1) == labels).astype(np.float64)
    boundaries = np.linspace(0, 1, n_bins + 1, dtype=np.float32)
    bins = np.searchsorted(boundaries, confidence, side="right") - 1  # torch.bucketize(right=True) - 1
    onehot = np.zeros((len(confidence), n_bins + 1))
    onehot[np.arange(len(confidence)), bins] = correct - confidence.astype(np.float64)
    return np.abs(w @ onehot).sum(1) / w.sum(1)


def mean_auroc(scores: np.ndarray, is_anomaly: np.ndarray, w: np.ndarray) -> np.ndarray:
    """scores (n_seeds, n_classes, n), is_anomaly (n_classes, n) -> (B, n_seeds) AUROC averaged over classes."""
    return np.stack([np.mean([weighted_auroc(scores[s, c], is_anomaly[c], w) for c in range(scores.shape[1])],
                             axis=0) for s in range(scores.shape[0])], axis=1)


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh(matrix)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def outer_products(x: np.ndarray) -> np.ndarray:
    """(n, d) -> (n, d * d): each row's x x^T, flattened."""
    return (x[:, :, None] * x[:, None, :]).reshape(len(x), -1)


class Frechet:
    """Fréchet distance (Heusel et al. 2017) of weighted generated features to fixed reference features:
    ||mu_r - mu_g||^2 + tr(S_r) + tr(S_g) - 2 tr((S_r^1/2 S_g S_r^1/2)^1/2), covariances with n - 1 as
    torchmetrics' FrechetInceptionDistance computes them (tests check the two agree)."""

    def __init__(self, reference: np.ndarray):
        reference = np.asarray(reference, dtype=np.float64)
        self.mean = reference.mean(0)
        self.cov = np.cov(reference, rowvar=False)
        self.root = _sqrt_psd(self.cov)

    def __call__(self, features: np.ndarray, w: np.ndarray | None = None, outer: np.ndarray | None = None) -> np.ndarray:
        """features (n, d); w (B, n) multiplicities (None: the features as they are) -> (B,) distances.
        `outer`: `outer_products(features)`, when the same features are weighted many times."""
        x = np.asarray(features, dtype=np.float64)
        n, d = x.shape
        w = np.ones((1, n)) if w is None else w
        mean = w @ x / n  # (B, d)
        outer = outer_products(x) if outer is None else outer
        second = (w @ outer).reshape(-1, d, d)  # sum_n w_n x_n x_n^T
        cov = (second - n * mean[:, :, None] * mean[:, None, :]) / (n - 1)
        inner = self.root @ cov @ self.root
        trace_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh(inner), 0, None)).sum(1)
        return (np.sum((mean - self.mean) ** 2, axis=1) + np.trace(self.cov)
                + np.trace(cov, axis1=1, axis2=2) - 2 * trace_sqrt)


class KernelDistance:
    """Kernel inception distance (Binkowski et al. 2018): the unbiased squared MMD between reference and
    generated features with the cubic polynomial kernel k(x, y) = (x.y / d + 1)^3, here on the whole sets
    (torchmetrics' KernelInceptionDistance averages it over random subsets; with one subset of every sample
    the two agree, which the tests check). Under multiplicities w of the generated samples, pairs of
    distinct draws count, copies of one sample included."""

    def __init__(self, reference: np.ndarray):
        self.reference = np.asarray(reference, dtype=np.float64)
        m, self.d = self.reference.shape
        k = self.kernel(self.reference, self.reference)
        self.within_reference = (k.sum() - np.trace(k)) / (m * (m - 1))

    def kernel(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return (x @ y.T / self.d + 1.0) ** 3

    def parts(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """What `__call__` reuses for one set of generated features: their kernel matrix and, per sample,
        its mean kernel value with the reference."""
        x = np.asarray(features, dtype=np.float64)
        return self.kernel(x, x), self.kernel(x, self.reference).mean(1)

    def __call__(self, features: np.ndarray, w: np.ndarray | None = None, parts: tuple | None = None) -> np.ndarray:
        within, cross = self.parts(features) if parts is None else parts
        n = len(cross)
        w = np.ones((1, n)) if w is None else w
        pairs = np.einsum("bi,bi->b", w @ within, w) - w @ np.diag(within)
        return self.within_reference + pairs / (n * (n - 1)) - 2 * (w @ cross) / n


# --- verdicts --------------------------------------------------------------------------------------------


def percentile_interval(values: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return float("nan"), float("nan")
    alpha = (1 - confidence) / 2
    low, high = np.quantile(finite, [alpha, 1 - alpha])
    return float(low), float(high)


def centred(resamples: np.ndarray, point: float) -> np.ndarray:
    """The bootstrap distribution shifted so that its median is the estimate. A resample repeats samples or
    images, which inflates distances such as FID (the full-sample estimate can lie below every resample);
    the shift removes that median bias and keeps the distribution's skew, so the percentile interval holds
    the estimate. For a mean the shift is about 0."""
    finite = resamples[np.isfinite(resamples)]
    return resamples - (np.median(finite) - point) if finite.size else resamples


def bootstrap_p(differences: np.ndarray) -> float:
    """Two-sided bootstrap p-value of "the difference is 0": the share of resamples on the far side of 0
    from the bulk, doubled, as (1 + count) / (1 + resamples)."""
    d = differences[np.isfinite(differences)]
    if d.size == 0:
        return float("nan")
    if np.all(d == 0):
        return 1.0  # the same outputs: nothing to separate
    tail = min(np.count_nonzero(d <= 0), np.count_nonzero(d >= 0))
    return float(min(1.0, 2 * (1 + tail) / (1 + d.size)))


def holm(p_values: list[float], alpha: float = ALPHA) -> tuple[list[bool], list[float]]:
    """Holm's step-down correction (statsmodels.stats.multitest.multipletests): (rejected, adjusted p)."""
    from statsmodels.stats.multitest import multipletests

    if not p_values:
        return [], []
    rejected, adjusted, _, _ = multipletests(p_values, alpha=alpha, method="holm")
    return [bool(r) for r in rejected], [float(p) for p in adjusted]


def compare(points: dict[str, float], resamples: dict[str, np.ndarray], higher_is_better: bool,
            units: str) -> dict:
    """Each model against the best one, from `resamples` (model -> (R,) the metric under the shared draws).

    Returns {"best", "rule", "models": {model: {value, low, high, diff, diff_low, diff_high, p, p_holm, tied}}}."""
    names = [m for m in points if np.isfinite(points[m])]
    if not names:
        return {"best": None, "rule": None, "models": {}}
    best = (max if higher_is_better else min)(names, key=lambda m: points[m])
    others = [m for m in names if m != best]
    differences = {m: centred(resamples[m] - resamples[best], points[m] - points[best]) for m in others}
    p_values = [bootstrap_p(differences[m]) for m in others]
    testable = [i for i, p in enumerate(p_values) if np.isfinite(p)]
    rejected, adjusted = holm([p_values[i] for i in testable])
    holm_of = {others[i]: (r, a) for i, r, a in zip(testable, rejected, adjusted)}
    out = {}
    for m in names:
        low, high = percentile_interval(centred(resamples[m], points[m]))
        entry = {"value": float(points[m]), "low": low, "high": high}
        if m == best:
            entry.update(diff=0.0, diff_low=0.0, diff_high=0.0, p=1.0, p_holm=1.0, tied=True)
        else:
            diff_low, diff_high = percentile_interval(differences[m])
            reject, adjusted_p = holm_of.get(m, (False, float("nan")))
            entry.update(diff=float(points[m] - points[best]), diff_low=diff_low, diff_high=diff_high,
                         p=p_values[others.index(m)], p_holm=adjusted_p, tied=not reject,
                         resolvable=resolvable(differences[m]))
        out[m] = entry
    n_resamples = max(len(v) for v in resamples.values())
    sizes = [out[m]["resolvable"] for m in others if np.isfinite(out[m]["resolvable"])]
    return {"best": best, "rule": RULE.format(units=units, resamples=n_resamples, m=len(others)), "models": out,
            "resolvable_median": float(np.median(sizes)) if sizes else None}


def resolvable(differences: np.ndarray, alpha: float = ALPHA, power: float = 0.8) -> float:
    """The smallest true difference this comparison detects with `power` at two-sided level `alpha` (before
    the multiple-comparison correction), from the bootstrap standard error of the difference:
    (z_{1 - alpha/2} + z_power) SE, 2.80 SE at 5% and 80% (a normal approximation)."""
    from scipy.stats import norm

    d = differences[np.isfinite(differences)]
    if d.size < 2:
        return float("nan")
    return float((norm.ppf(1 - alpha / 2) + norm.ppf(power)) * np.std(d, ddof=1))


def image_bootstrap(per_seed: Callable[[np.ndarray], np.ndarray], model: str, n_seeds: int, n_images: int,
                    n_resamples: int = N_RESAMPLES, seed: int = 0) -> np.ndarray:
    """(R,) a model's metric over the shared test images: `per_seed(w)` maps image multiplicities
    (B, n_images), the same for every model, to the (B, n_seeds) per-seed values, then averaged over the
    model's drawn seeds."""
    return np.concatenate([seed_average(per_seed(w[0]), s)
                           for s, w in draws(model, n_seeds, n_images, n_resamples, seed)])


def sample_bootstrap(per_seed: Callable[[int, np.ndarray], np.ndarray], model: str, n_seeds: int, n_samples: int,
                     n_resamples: int = N_RESAMPLES, seed: int = 0) -> np.ndarray:
    """(R, K) K metrics of a model's generated samples: `per_seed(s, w)` maps multiplicities (B, n_samples) of
    seed index s's samples to (B, K) values; the samples are drawn from the model's own stream, the seeds
    with every model's."""
    out = []
    for s, w in draws(model, n_seeds, n_samples, n_resamples, seed, streams=n_seeds, own_units=True):
        out.append(seed_average(np.stack([per_seed(i, w[i]) for i in range(n_seeds)], axis=1), s))
    return np.concatenate(out)

"""Means with 95% intervals over training seeds and test images.

Two intervals, for two sources of uncertainty of a metric's mean over seeds:

* across seeds (training randomness): the Student t interval of the mean,
  mean +- t_{(1+c)/2, n-1} * sd / sqrt(n) (Student 1908), from `scipy.stats.t`;
* over test images (the finite test set): Efron's percentile bootstrap (Efron 1979; Efron &
  Tibshirani 1993, ch. 13), from `scipy.stats.bootstrap`, resampling test images and using the
  same resampled images for every seed (and every normal class). For anomaly detection the
  statistic is AUROC, computed from ranks through its identity with the Mann-Whitney U statistic,
  AUROC = U / (n_pos n_neg) (Hanley & McNeil 1982), ties counting 1/2.

`summarise` adds the two half-widths in quadrature, separately below and above the mean.
"""

from __future__ import annotations

import inspect
import math
import warnings

import numpy as np
import scipy.stats

CONFIDENCE = 0.95
N_RESAMPLES = 1000

# Resamples per call of the statistic (scipy's `batch`) are chosen so that one batch holds about this
# many (seed, class, image) elements. Ranking a batch peaks at about 40 bytes per element (measured
# with tracemalloc: 640 MB for 3 seeds x 10 classes x 10,000 images, 1000 resamples, in 25 s), so
# memory stays under ~1 GB whatever the size of the test set.
_BATCH_ELEMENTS = 2**24

_RNG_KEYWORD = "rng" if "rng" in inspect.signature(scipy.stats.bootstrap).parameters else "random_state"


def _percent(confidence: float) -> str:
    return f"{100 * confidence:g}%"


def _check_confidence(confidence: float) -> float:
    confidence = float(confidence)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence}")
    return confidence


def _finite_array(values, name: str) -> np.ndarray:
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must be numbers: {error}") from error
    if array.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.isfinite(array).all():
        bad = ~np.isfinite(array)
        kind = "None/NaN" if np.isnan(array).any() else "infinite"
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{name} contain {int(bad.sum())} {kind} value(s), the first at index "
                         f"{first[0] if len(first) == 1 else first}")
    return array


def seed_interval(values, confidence: float = CONFIDENCE) -> dict:
    """Student t interval of the mean of one value per seed.

    Returns {"mean", "low", "high", "n_seeds", "method"}. With one seed, or all seeds equal,
    the interval has zero width (low = high = mean) and `method` says why.
    """
    confidence = _check_confidence(confidence)
    x = _finite_array(values, "per-seed values").ravel()
    n = int(x.size)
    mean = float(np.mean(x))
    if n == 1:
        return {"mean": mean, "low": mean, "high": mean, "n_seeds": 1,
                "method": "one seed: no across-seed interval"}
    if np.ptp(x) == 0:
        return {"mean": mean, "low": mean, "high": mean, "n_seeds": n,
                "method": f"Student t over {n} seeds (all equal: zero spread)"}
    low, high = scipy.stats.t.interval(confidence, n - 1, loc=mean, scale=scipy.stats.sem(x))
    return {"mean": mean, "low": float(low), "high": float(high), "n_seeds": n,
            "method": f"Student t over {n} seeds"}


def _bootstrap(data, statistic, confidence, n_resamples, random_state, batch, paired):
    """scipy.stats.bootstrap, percentile method, with resamples whose statistic is NaN left out.

    scipy's percentile does not skip NaN (it returns NaN and warns); when some resamples are NaN
    (an AUROC undefined on that resample) the interval is taken instead from the same bootstrap
    distribution with `np.nanquantile` (linear interpolation, as scipy's own). Returns
    (low, high, number of resamples left out).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", scipy.stats.DegenerateDataWarning)
        result = scipy.stats.bootstrap(
            data, statistic, n_resamples=n_resamples, batch=batch, vectorized=True, paired=paired,
            axis=-1, confidence_level=confidence, method="percentile",
            **{_RNG_KEYWORD: random_state})
    distribution = np.asarray(result.bootstrap_distribution, dtype=np.float64)
    n_dropped = int(np.isnan(distribution).sum())
    if n_dropped == 0:
        low, high = result.confidence_interval
    elif n_dropped == distribution.size:
        low = high = math.nan
    else:
        alpha = (1 - confidence) / 2
        low, high = np.nanquantile(distribution, [alpha, 1 - alpha])
    return float(low), float(high), n_dropped


def _batch(elements_per_resample: int, n_resamples: int) -> int:
    return int(max(1, min(n_resamples, _BATCH_ELEMENTS // max(1, elements_per_resample))))


def _per_image_array(per_image) -> np.ndarray:
    x = _finite_array(per_image, "per-image values")
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2:
        raise ValueError(f"per-image values must have shape (n_seeds, n_images), got {x.shape}")
    if x.shape[-1] < 2:
        raise ValueError("the bootstrap over test images needs at least two images")
    return x


def _mean_statistic(x, axis=-1):
    # x: (n_seeds, n_images) or, resampled, (n_seeds, batch, n_images)
    return np.mean(np.mean(x, axis=axis), axis=0)


def bootstrap_mean_interval(per_image, confidence: float = CONFIDENCE, n_resamples: int = N_RESAMPLES,
                            random_state=0) -> tuple[float, float]:
    """Percentile bootstrap interval of the seed-averaged mean of per-image values.

    `per_image` has shape (n_seeds, n_images); test images are resampled, the same resample
    for every seed.
    """
    confidence = _check_confidence(confidence)
    x = _per_image_array(per_image)
    low, high, _ = _bootstrap((x,), _mean_statistic, confidence, n_resamples, random_state,
                              _batch(x.size, n_resamples), paired=False)
    return low, high


def _auroc_last_axis(scores: np.ndarray, is_anomaly: np.ndarray) -> np.ndarray:
    """AUROC along the last axis from average ranks (Mann-Whitney U); NaN without both classes.

    `is_anomaly` broadcasts against `scores`.
    """
    ranks = scipy.stats.rankdata(scores, axis=-1)
    n = scores.shape[-1]
    n_pos = np.count_nonzero(is_anomaly, axis=-1).astype(np.float64)
    n_neg = n - n_pos
    rank_sum_pos = np.sum(ranks, axis=-1, where=np.broadcast_to(is_anomaly, ranks.shape))
    with np.errstate(divide="ignore", invalid="ignore"):
        auc = (rank_sum_pos - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return np.where((n_pos > 0) & (n_neg > 0), auc, np.nan)


def auroc(scores, is_anomaly) -> float:
    """Area under the ROC curve of one score vector (higher = more anomalous), ties counting 1/2."""
    s = _finite_array(scores, "anomaly scores")
    labels = np.asarray(is_anomaly, dtype=bool)
    if s.ndim != 1 or labels.shape != s.shape:
        raise ValueError(f"scores and is_anomaly must be 1-D of equal length, got {s.shape} and {labels.shape}")
    if labels.all() or not labels.any():
        raise ValueError("AUROC needs both anomalous and normal test images")
    return float(_auroc_last_axis(s, labels))


def _auroc_statistic(scores, is_anomaly, axis=-1):
    # scores: (n_seeds, n_classes, n_images) or, resampled, (n_seeds, n_classes, batch, n_images);
    # is_anomaly is broadcast to the same shape by scipy. Mean over seeds and classes.
    auc = _auroc_last_axis(scores, is_anomaly)
    return np.mean(auc, axis=(0, 1))


def _auroc_arrays(scores, is_anomaly) -> tuple[np.ndarray, np.ndarray]:
    s = _finite_array(scores, "anomaly scores")
    labels = np.asarray(is_anomaly, dtype=bool)
    if s.ndim == 2 and labels.ndim == 1:  # one normal class
        s, labels = s[:, None, :], labels[None, :]
    if s.ndim != 3 or labels.shape != s.shape[1:]:
        raise ValueError("scores must have shape (n_seeds, n_classes, n_images) and is_anomaly "
                         f"(n_classes, n_images), got {s.shape} and {labels.shape}")
    if s.shape[-1] < 2:
        raise ValueError("the bootstrap over test images needs at least two images")
    if not (labels.any(axis=-1) & ~labels.all(axis=-1)).all():
        raise ValueError("AUROC needs both anomalous and normal test images for every normal class")
    return s, labels


def _rank_codes(scores: np.ndarray) -> np.ndarray:
    """Dense ranks (0, 1, ...) along the last axis in the smallest integer type that holds them.

    AUROC depends on the scores only through their order, ties included, so the resamples can be
    ranked from these codes instead of the scores: 16-bit codes take a quarter of the memory and
    numpy's stable sort (which `rankdata` uses) sorts them by radix sort, several times faster.
    """
    codes = scipy.stats.rankdata(scores, method="dense", axis=-1) - 1
    return codes.astype(np.int16 if scores.shape[-1] <= np.iinfo(np.int16).max else np.int32)


def _bootstrap_auroc(scores, is_anomaly, confidence, n_resamples, random_state):
    s, labels = _auroc_arrays(scores, is_anomaly)
    return _bootstrap((_rank_codes(s), labels), _auroc_statistic, confidence, n_resamples,
                      random_state, _batch(s.size, n_resamples), paired=True)


def bootstrap_auroc_interval(scores, is_anomaly, confidence: float = CONFIDENCE,
                             n_resamples: int = N_RESAMPLES, random_state=0) -> tuple[float, float]:
    """Percentile bootstrap interval of the AUROC averaged over seeds and normal classes.

    `scores`: (n_seeds, n_classes, n_images), higher = more anomalous; `is_anomaly`:
    (n_classes, n_images). Test images are resampled, the same resample for every seed and class.
    A resample in which some class has no anomalous or no normal image has no AUROC; it is left
    out of the percentiles (scipy's percentile does not skip NaN, so the interval is then taken
    with `np.nanquantile` from scipy's bootstrap distribution).
    """
    confidence = _check_confidence(confidence)
    low, high, _ = _bootstrap_auroc(scores, is_anomaly, confidence, n_resamples, random_state)
    return low, high


def combine(mean, seed_low, seed_high, boot_low, boot_high) -> tuple[float, float]:
    """Add the across-seed and the over-images half-widths in quadrature, below and above the mean."""
    mean = float(mean)
    below = math.hypot(mean - float(seed_low), mean - float(boot_low))
    above = math.hypot(float(seed_high) - mean, float(boot_high) - mean)
    return mean - below, mean + above


def summarise(per_seed_values, per_image=None, kind: str = "mean", is_anomaly=None,
              confidence: float = CONFIDENCE) -> dict:
    """Mean of a metric over seeds with its interval: {"mean", "low", "high", "n_seeds", "method"}.

    `per_image`: None, or (n_seeds, n_images) per-image values for kind="mean", or
    (n_seeds, n_classes, n_images) anomaly scores for kind="auroc" with `is_anomaly`.
    The mean is always the mean of `per_seed_values`; the bootstrap interval's half-widths are
    measured from the statistic on the full per-image data and placed around that mean.
    """
    confidence = _check_confidence(confidence)
    if kind not in ("mean", "auroc"):
        raise ValueError(f"kind must be 'mean' or 'auroc', got {kind!r}")
    seeds = seed_interval(per_seed_values, confidence)
    mean, n_seeds = seeds["mean"], seeds["n_seeds"]
    prefix = f"{_percent(confidence)} interval: "
    if per_image is None:
        if n_seeds == 1:
            method = prefix + "none (one seed, no per-image data)"
        else:
            method = prefix + seeds["method"]
        return {"mean": mean, "low": seeds["low"], "high": seeds["high"], "n_seeds": n_seeds, "method": method}

    if kind == "mean":
        x = _per_image_array(per_image)
        point = float(_mean_statistic(x))
        boot_low, boot_high = bootstrap_mean_interval(x, confidence)
        n_dropped = 0
    else:
        if is_anomaly is None:
            raise ValueError("kind='auroc' needs is_anomaly")
        x, labels = _auroc_arrays(per_image, is_anomaly)
        point = float(_auroc_statistic(x, labels))
        boot_low, boot_high, n_dropped = _bootstrap_auroc(x, labels, confidence, N_RESAMPLES, 0)
    if x.shape[0] != n_seeds:
        raise ValueError(f"per-image data has {x.shape[0]} seeds, per-seed values {n_seeds}")
    n_images = x.shape[-1]
    boot = f"percentile bootstrap over {n_images} test images, {N_RESAMPLES} resamples"
    if n_dropped:
        boot += f" ({n_dropped} without both anomalous and normal images left out)"
    # half-widths of the bootstrap interval about the full-data statistic, placed about the mean
    boot_low = mean - max(point - boot_low, 0.0)
    boot_high = mean + max(boot_high - point, 0.0)
    low, high = combine(mean, seeds["low"], seeds["high"], boot_low, boot_high)
    if n_seeds == 1:
        method = prefix + boot + " (one seed)"
    else:
        method = prefix + seeds["method"] + " (+) " + boot + ", half-widths in quadrature"
    return {"mean": mean, "low": low, "high": high, "n_seeds": n_seeds, "method": method}

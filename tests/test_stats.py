"""genbench.stats against independent references: hand computations, normal theory, scikit-learn."""

import math
import warnings

import numpy as np
import pytest
import scipy.stats
from sklearn.metrics import roc_auc_score

from genbench import stats


# --- seed_interval -------------------------------------------------------------------------------

def test_seed_interval_matches_hand_computed_student_t():
    values = [1.0, 2.0, 4.0]
    mean = 7 / 3
    sd = math.sqrt(((1 - mean) ** 2 + (2 - mean) ** 2 + (4 - mean) ** 2) / 2)
    half = scipy.stats.t.ppf(0.975, 2) * sd / math.sqrt(3)
    assert half == pytest.approx(4.302652729749464 * sd / math.sqrt(3))
    r = stats.seed_interval(values)
    assert r["mean"] == pytest.approx(mean)
    assert r["low"] == pytest.approx(mean - half)
    assert r["high"] == pytest.approx(mean + half)
    assert r["n_seeds"] == 3
    assert r["method"] == "Student t over 3 seeds"
    assert all(type(r[k]) is float for k in ("mean", "low", "high"))

    # another confidence level and sample size
    x = np.array([0.91, 0.93, 0.92, 0.95, 0.90])
    half90 = scipy.stats.t.ppf(0.95, 4) * x.std(ddof=1) / math.sqrt(5)
    r = stats.seed_interval(x, confidence=0.9)
    assert (r["low"], r["high"]) == pytest.approx((x.mean() - half90, x.mean() + half90))


def test_seed_interval_one_seed_and_constant_values():
    r = stats.seed_interval([0.7])
    assert r == {"mean": 0.7, "low": 0.7, "high": 0.7, "n_seeds": 1,
                 "method": "one seed: no across-seed interval"}
    r = stats.seed_interval(np.array([0.5, 0.5, 0.5]))
    assert (r["mean"], r["low"], r["high"], r["n_seeds"]) == (0.5, 0.5, 0.5, 3)
    assert "zero spread" in r["method"] and "3 seeds" in r["method"]


@pytest.mark.parametrize("bad", [[1.0, None, 2.0], [1.0, float("nan")], [1.0, float("inf")], []])
def test_seed_interval_rejects_missing_and_infinite_values(bad):
    with pytest.raises(ValueError):
        stats.seed_interval(bad)


# --- bootstrap_mean_interval ---------------------------------------------------------------------

def test_bootstrap_mean_interval_agrees_with_normal_theory_on_a_large_sample():
    rng = np.random.default_rng(1)
    x = rng.normal(0.3, 2.0, size=20_000)
    low, high = stats.bootstrap_mean_interval(x[None, :])
    half = 1.96 * x.std(ddof=1) / math.sqrt(x.size)
    assert type(low) is float and type(high) is float
    assert low < x.mean() < high
    assert (high - low) / 2 == pytest.approx(half, rel=0.12)
    assert (low + high) / 2 == pytest.approx(x.mean(), abs=0.2 * half)


def test_bootstrap_mean_interval_contains_the_mean_of_01_correctness():
    rng = np.random.default_rng(2)
    correct = (rng.random((3, 360)) < 0.8).astype(float)
    low, high = stats.bootstrap_mean_interval(correct)
    assert low < correct.mean() < high
    assert 0 <= low and high <= 1


def test_bootstrap_mean_interval_resamples_images_paired_across_seeds():
    rng = np.random.default_rng(3)
    a = rng.normal(size=500)
    one = stats.bootstrap_mean_interval(a[None, :])
    two = stats.bootstrap_mean_interval(np.stack([a, a]))
    assert two == pytest.approx(one, rel=1e-12)
    # seeds whose per-image values cancel image by image: every paired resample has mean exactly 0
    # (independent resampling per seed would give an interval of width ~ 2 * 1.96 / sqrt(1000))
    low, high = stats.bootstrap_mean_interval(np.stack([a, -a]))
    assert abs(low) < 1e-12 and abs(high) < 1e-12


def test_bootstrap_mean_interval_is_reproducible_and_rejects_bad_input():
    x = np.random.default_rng(4).random((2, 50))
    assert stats.bootstrap_mean_interval(x) == stats.bootstrap_mean_interval(x)
    assert stats.bootstrap_mean_interval(x, random_state=1) != stats.bootstrap_mean_interval(x)
    with pytest.raises(ValueError):
        stats.bootstrap_mean_interval(np.array([[1.0, np.nan, 0.0]]))
    with pytest.raises(ValueError):
        stats.bootstrap_mean_interval(np.zeros((2, 3, 4)))


# --- AUROC ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(5))
def test_auroc_matches_sklearn_with_and_without_ties(seed):
    rng = np.random.default_rng(seed)
    labels = rng.random(300) < 0.3
    continuous = rng.normal(size=300) + labels
    tied = rng.integers(0, 5, size=300) + labels  # many ties, within and across classes
    for scores in (continuous, tied):
        assert stats.auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert stats.auroc(np.zeros(10), np.arange(10) < 3) == 0.5


def test_auroc_needs_both_classes():
    with pytest.raises(ValueError):
        stats.auroc([0.1, 0.2, 0.3], [True, True, True])
    with pytest.raises(ValueError):
        stats.auroc([0.1, np.nan, 0.3], [True, False, True])


def _anomaly_problem(n_seeds, n_classes, n_images, seed, shift=0.7, levels=None):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_classes, size=n_images)
    is_anomaly = np.stack([labels != c for c in range(n_classes)])
    scores = rng.normal(size=(n_seeds, n_classes, n_images)) + shift * is_anomaly
    if levels is not None:  # coarse scores: many ties
        scores = np.round(scores * levels) / levels
    return scores, is_anomaly


def _sklearn_mean_auroc(scores, is_anomaly):
    return float(np.mean([[roc_auc_score(is_anomaly[c], scores[s, c]) for c in range(scores.shape[1])]
                          for s in range(scores.shape[0])]))


def test_bootstrap_auroc_interval_contains_the_point_auroc_and_shrinks_with_n():
    widths = []
    for n in (150, 3000):
        scores, is_anomaly = _anomaly_problem(3, 4, n, seed=n, levels=4)
        point = _sklearn_mean_auroc(scores, is_anomaly)
        low, high = stats.bootstrap_auroc_interval(scores, is_anomaly, n_resamples=300)
        assert type(low) is float and type(high) is float
        assert low < point < high
        widths.append(high - low)
    # width ~ 1/sqrt(n): 20 times the images, about 4.5 times narrower
    assert widths[1] < widths[0] / 3


def test_bootstrap_auroc_interval_equals_scipy_bootstrap_of_sklearn_auroc():
    """Same resamples, statistic from scikit-learn: checks the rank formula, ties and the pairing."""
    scores, is_anomaly = _anomaly_problem(2, 3, 40, seed=7, levels=2)
    n_resamples = 200

    def reference(s, a, axis=-1):  # resamples: s and a (2 seeds, 3 classes, batch, n), loops only
        return np.array([np.mean([[roc_auc_score(a[i, c, b], s[i, c, b]) for c in range(3)] for i in range(2)])
                         for b in range(s.shape[2])])

    rng_kw = stats._RNG_KEYWORD
    ref = scipy.stats.bootstrap((scores, is_anomaly), reference, n_resamples=n_resamples, vectorized=True,
                                paired=True, axis=-1, method="percentile", **{rng_kw: 0})
    got = stats.bootstrap_auroc_interval(scores, is_anomaly, n_resamples=n_resamples, random_state=0)
    assert got == pytest.approx(tuple(ref.confidence_interval), abs=1e-12)


def test_bootstrap_auroc_interval_leaves_out_resamples_without_both_classes():
    """With 1 anomalous image in 8, about a third of the resamples have none: they are left out."""
    rng = np.random.default_rng(5)
    is_anomaly = np.zeros((1, 8), dtype=bool)
    is_anomaly[0, 3] = True
    scores = rng.normal(size=(2, 1, 8)) + is_anomaly
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        low, high, n_dropped = stats._bootstrap_auroc(scores, is_anomaly, 0.95, 400, 0)
        low2, high2 = stats.bootstrap_auroc_interval(scores, is_anomaly, n_resamples=400)
    assert (low, high) == (low2, high2)
    assert 0.2 * 400 < n_dropped < 0.5 * 400
    assert 0 <= low <= high <= 1

    # the same interval by hand: undefined resamples dropped, percentiles of the rest
    gen = np.random.default_rng(0)
    aucs = []
    for i in gen.integers(0, 8, size=(400, 8)):
        a = is_anomaly[0, i]
        if a.any() and not a.all():
            aucs.append(np.mean([roc_auc_score(a, scores[s, 0, i]) for s in range(2)]))
    assert len(aucs) == 400 - n_dropped
    assert (low, high) == pytest.approx(tuple(np.quantile(aucs, [0.025, 0.975])), abs=1e-12)


def test_bootstrap_auroc_interval_rejects_a_class_without_anomalies():
    scores = np.zeros((1, 2, 5))
    is_anomaly = np.array([[True, False, True, False, False], [False] * 5])
    with pytest.raises(ValueError):
        stats.bootstrap_auroc_interval(scores, is_anomaly)


def test_batches_bound_the_memory_of_large_auroc_bootstraps():
    elements = 3 * 10 * 10_000
    batch = stats._batch(elements, 1000)
    assert 1 <= batch < 1000
    assert batch * elements * 40 < 1.1e9  # ~40 bytes per element while ranking
    assert stats._batch(3 * 2 * 50, 1000) == 1000


# --- combine -------------------------------------------------------------------------------------

def test_combine_adds_half_widths_in_quadrature_on_each_side():
    low, high = stats.combine(10.0, 7.0, 14.0, 6.0, 11.0)
    assert low == pytest.approx(10 - 5)  # sqrt(3^2 + 4^2)
    assert high == pytest.approx(10 + math.sqrt(17))  # sqrt(4^2 + 1^2)
    assert stats.combine(1.0, 1.0, 1.0, 0.5, 1.25) == pytest.approx((0.5, 1.25))
    assert all(type(v) is float for v in stats.combine(np.float64(1), 0, 2, 0, 2))


# --- summarise -----------------------------------------------------------------------------------

def test_summarise_without_per_image_data():
    r = stats.summarise([0.8, 0.82, 0.85])
    ref = stats.seed_interval([0.8, 0.82, 0.85])
    assert r == {**ref, "method": "95% interval: Student t over 3 seeds"}
    r = stats.summarise([0.8])
    assert (r["mean"], r["low"], r["high"], r["n_seeds"]) == (0.8, 0.8, 0.8, 1)
    assert r["method"].startswith("95% interval: ")


def test_summarise_mean_with_per_image_data():
    rng = np.random.default_rng(6)
    correct = (rng.random((3, 360)) < np.array([[0.8], [0.82], [0.78]])).astype(float)
    per_seed = correct.mean(axis=1)
    r = stats.summarise(per_seed, correct)
    assert r["method"] == ("95% interval: Student t over 3 seeds (+) percentile bootstrap over 360 test "
                           "images, 1000 resamples, half-widths in quadrature")
    assert r["mean"] == pytest.approx(float(np.mean(per_seed)))
    assert r["n_seeds"] == 3
    seeds = stats.seed_interval(per_seed)
    boot = stats.bootstrap_mean_interval(correct)
    assert (r["low"], r["high"]) == pytest.approx(stats.combine(r["mean"], seeds["low"], seeds["high"], *boot))
    assert r["low"] < min(seeds["low"], boot[0]) and r["high"] > max(seeds["high"], boot[1])

    one = stats.summarise(per_seed[:1], correct[:1])
    assert one["method"] == "95% interval: percentile bootstrap over 360 test images, 1000 resamples (one seed)"
    assert (one["low"], one["high"]) == pytest.approx(stats.bootstrap_mean_interval(correct[:1]))
    assert one["mean"] == per_seed[0]

    with pytest.raises(ValueError):
        stats.summarise(per_seed[:2], correct)  # 2 per-seed values, 3 seeds of per-image data


def test_summarise_mean_is_always_the_mean_of_per_seed_values():
    # per-seed values need not equal the per-image means (e.g. a metric computed differently);
    # the bootstrap half-widths are then placed about the per-seed mean
    per_image = np.random.default_rng(8).random((2, 100))
    r = stats.summarise([0.1, 0.3], per_image)
    assert r["mean"] == pytest.approx(0.2)
    assert r["low"] < 0.2 < r["high"]


def test_summarise_auroc():
    scores, is_anomaly = _anomaly_problem(3, 3, 200, seed=9)
    per_seed = [float(np.mean([roc_auc_score(is_anomaly[c], scores[s, c]) for c in range(3)])) for s in range(3)]
    r = stats.summarise(per_seed, scores, kind="auroc", is_anomaly=is_anomaly)
    assert r["mean"] == pytest.approx(float(np.mean(per_seed)))
    assert r["method"] == ("95% interval: Student t over 3 seeds (+) percentile bootstrap over 200 test "
                           "images, 1000 resamples, half-widths in quadrature")
    seeds = stats.seed_interval(per_seed)
    boot = stats.bootstrap_auroc_interval(scores, is_anomaly)
    assert (r["low"], r["high"]) == pytest.approx(stats.combine(r["mean"], seeds["low"], seeds["high"], *boot))
    with pytest.raises(ValueError):
        stats.summarise(per_seed, scores, kind="auroc")  # no is_anomaly
    with pytest.raises(ValueError):
        stats.summarise(per_seed, scores, kind="median")

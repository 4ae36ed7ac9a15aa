"""Paired verdicts (genbench.paired, genbench.comparisons) against independent references: scikit-learn's
AUROC and torchmetrics' FID on explicitly repeated data, statsmodels' Holm, genbench's PRDC, and the
bootstrap's coverage and error rate on simulated models whose true difference is known."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from statsmodels.stats.multitest import multipletests

from genbench import comparisons, paired
from genbench.metrics.sample_quality import prdc


def _multiplicities(rng, n, size=4):
    return paired.weights(rng, n, size)


def test_weighted_auroc_is_the_auroc_of_the_repeated_images():
    rng = np.random.default_rng(1)
    scores = np.round(rng.normal(size=60), 1)  # ties
    is_anomaly = rng.random(60) < 0.4
    w = _multiplicities(rng, 60)
    got = paired.weighted_auroc(scores, is_anomaly, w)
    for b in range(len(w)):
        repeat = w[b].astype(int)
        expected = roc_auc_score(np.repeat(is_anomaly, repeat), np.repeat(scores, repeat))
        assert got[b] == pytest.approx(expected, abs=1e-12)
    assert paired.weighted_auroc(scores, is_anomaly, np.ones((1, 60)))[0] == pytest.approx(
        roc_auc_score(is_anomaly, scores), abs=1e-12)


def test_frechet_agrees_with_torchmetrics_and_with_repeated_rows():
    from torchmetrics.image.fid import _compute_fid

    rng = np.random.default_rng(2)
    reference = rng.normal(size=(300, 8))
    fake = rng.normal(loc=0.3, scale=1.2, size=(200, 8))
    frechet = paired.Frechet(reference)

    def torchmetrics_fid(x):
        x = torch.from_numpy(x).double()
        r = torch.from_numpy(reference).double()
        return float(_compute_fid(r.mean(0), torch.cov(r.T), x.mean(0), torch.cov(x.T)))

    assert frechet(fake)[0] == pytest.approx(torchmetrics_fid(fake), rel=1e-9)
    w = _multiplicities(rng, 200, size=3)
    got = frechet(fake, w)
    for b in range(3):
        assert got[b] == pytest.approx(torchmetrics_fid(np.repeat(fake, w[b].astype(int), axis=0)), rel=1e-9)


def test_prdc_pieces_reproduce_genbench_prdc_and_follow_the_weights():
    rng = np.random.default_rng(3)
    real, fake = rng.normal(size=(80, 4)), rng.normal(loc=0.2, size=(120, 4))
    expected = prdc(torch.from_numpy(real), torch.from_numpy(fake), k=5)
    parts = comparisons._prdc_parts(real, fake, 5)
    ones = np.ones((1, 120))
    for metric in ("precision", "recall", "density", "coverage"):
        assert comparisons._prdc_value(metric, parts, ones, 5)[0] == pytest.approx(expected[metric], abs=1e-12)
    # a draw that keeps only the first 10 samples, 12 times each: coverage counts only the balls they reach
    w = np.zeros((1, 120))
    w[0, :10] = 12
    covered = parts["in_real_ball"][:, :10].any(1).mean()
    assert comparisons._prdc_value("coverage", parts, w, 5)[0] == pytest.approx(covered)
    assert comparisons._prdc_value("precision", parts, w, 5)[0] == pytest.approx(
        parts["in_real_ball"][:, :10].any(0).mean())


def test_holm_is_statsmodels_holm():
    p = [0.01, 0.04, 0.03, 0.005]
    rejected, adjusted = paired.holm(p)
    expected = multipletests(p, alpha=0.05, method="holm")
    assert rejected == list(expected[0]) and adjusted == pytest.approx(list(expected[1]))
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02])  # Holm (1979) by hand: sorted p x (4, 3, 2, 1)


def test_bootstrap_p_is_never_zero_and_is_one_for_identical_outputs():
    assert paired.bootstrap_p(np.full(1999, 0.3)) == pytest.approx(2 / 2000)
    assert paired.bootstrap_p(np.zeros(100)) == 1.0
    symmetric = np.concatenate([-np.ones(500), np.ones(500)])
    assert paired.bootstrap_p(symmetric) == 1.0


def _simulate(rng, delta, n_seeds=3, n_images=200, seed_sd=0.02, image_sd=1.0, noise_sd=0.5):
    """Two models' per-image losses on shared images and seeds: a per-image difficulty both share, a seed
    effect, and noise; model b's expected loss exceeds a's by delta."""
    difficulty = rng.normal(scale=image_sd, size=n_images)
    a = difficulty + rng.normal(scale=seed_sd, size=(n_seeds, 1)) + rng.normal(scale=noise_sd, size=(n_seeds, n_images))
    b = difficulty + delta + rng.normal(scale=seed_sd, size=(n_seeds, 1)) + rng.normal(scale=noise_sd,
                                                                                       size=(n_seeds, n_images))
    return a, b


def _paired_resamples(a, b, n_resamples=999, seed=0):
    return {m: paired.image_bootstrap(lambda w, x=x: paired.weighted_means(x, w), m, x.shape[0], x.shape[1],
                                      n_resamples, seed) for m, x in (("a", a), ("b", b))}


def test_paired_interval_covers_the_true_difference_about_95_percent_of_the_time():
    rng = np.random.default_rng(4)
    covered, repetitions, delta = 0, 200, 0.1
    for r in range(repetitions):
        a, b = _simulate(rng, delta)
        resamples = _paired_resamples(a, b, n_resamples=499, seed=r)
        low, high = paired.percentile_interval(resamples["b"] - resamples["a"])
        covered += low <= delta <= high
    assert 0.90 <= covered / repetitions <= 0.99, covered / repetitions


def test_coverage_holds_when_the_models_have_different_numbers_of_seeds():
    rng = np.random.default_rng(6)
    covered, repetitions, delta = 0, 200, 0.1
    for r in range(repetitions):
        a, _ = _simulate(rng, delta, n_seeds=10, seed_sd=0.1)
        _, b = _simulate(rng, delta, n_seeds=3, seed_sd=0.1)
        difficulty = rng.normal(size=a.shape[1])  # shared images: the same difficulty for both models
        a, b = a + difficulty, b + difficulty
        resamples = _paired_resamples(a, b, n_resamples=499, seed=r)
        low, high = paired.percentile_interval(resamples["b"] - resamples["a"])
        covered += low <= delta <= high
    assert 0.88 <= covered / repetitions <= 0.99, covered / repetitions


def test_paired_verdict_separates_what_unpaired_overlap_ties_and_keeps_false_alarms_rare():
    rng = np.random.default_rng(5)
    a, b = _simulate(rng, delta=0.15)
    resamples = _paired_resamples(a, b)
    points = {"a": float(a.mean()), "b": float(b.mean())}
    verdict = paired.compare(points, resamples, higher_is_better=False, units="test images")
    assert verdict["best"] == "a"
    assert not verdict["models"]["b"]["tied"]  # the pairing removes the shared image difficulty
    # the models' own intervals overlap: the old rule would have called them tied
    assert verdict["models"]["b"]["low"] < verdict["models"]["a"]["high"]
    false_alarms = 0
    for r in range(100):
        a, b = _simulate(rng, delta=0.0)
        resamples = _paired_resamples(a, b, n_resamples=499, seed=r)
        false_alarms += paired.bootstrap_p(resamples["b"] - resamples["a"]) < 0.05
    assert false_alarms <= 12  # 5% expected; binomial(100, 0.05) exceeds 12 with probability < 0.001


def test_compare_ties_exactly_the_models_holm_cannot_separate():
    rng = np.random.default_rng(6)
    points = {"m0": 0.0, "m1": 0.01, "m2": 0.5, "m3": 0.02}
    resamples = {m: v + rng.normal(scale=0.1, size=999) for m, v in points.items()}
    verdict = paired.compare(points, resamples, higher_is_better=False, units="test images")
    others = ["m1", "m2", "m3"]
    p = [paired.bootstrap_p(paired.centred(resamples[m] - resamples["m0"], points[m] - points["m0"])) for m in others]
    rejected = multipletests(p, alpha=0.05, method="holm")[0]
    assert [verdict["models"][m]["tied"] for m in others] == [not r for r in rejected]
    assert verdict["models"]["m0"]["tied"] and not verdict["models"]["m2"]["tied"]
    assert "Holm" in verdict["rule"] and "3 models" in verdict["rule"]


def _raw(root, model, seeds, test_y, **per_seed):
    raw = root / "results" / "d" / model / "raw"
    for s in seeds:
        (raw / f"seed-{s}").mkdir(parents=True)
        for name, values in per_seed.items():
            np.save(raw / f"seed-{s}" / f"{name}.npy", values[s])
    np.save(raw / "test_labels.npy", test_y)
    (raw / "stage.json").write_text(json.dumps({"seeds": seeds, "anomaly_classes": None,
                                                "per_seed": [{"seed": s, "classification": {}} for s in seeds]}))


def test_compare_dataset_reads_raw_outputs_and_means_match_the_files(tmp_path):
    rng = np.random.default_rng(7)
    test_y = rng.integers(0, 3, size=50)
    seeds = [0, 1, 2]
    for model, p_correct in (("good", 0.9), ("bad", 0.5)):
        correct = (rng.random((3, 50)) < p_correct).astype(np.float64)
        _raw(tmp_path, model, seeds, test_y, **{"per_image.classification.accuracy": correct,
                                                "per_image.classification.log_loss": 1 - correct})
    job = comparisons.CompareJob(str(tmp_path), "d", test_y, None, None, 5, 499)
    result = comparisons.compare_dataset(tmp_path, "d", ["good", "bad"], job)
    accuracy = result["metrics"]["accuracy"]["groups"]["all"]
    assert accuracy["best"] == "good"
    for model in ("good", "bad"):
        stored = np.stack([np.load(tmp_path / f"results/d/{model}/raw/seed-{s}/per_image.classification.accuracy.npy")
                           for s in seeds])
        assert accuracy["models"][model]["value"] == pytest.approx(stored.mean())
    assert not accuracy["models"]["bad"]["tied"]
    assert result["metrics"]["log_loss"]["groups"]["all"]["best"] == "good"


def test_kernel_distance_agrees_with_torchmetrics_kid_and_with_repeated_rows():
    from torchmetrics.image.kid import KernelInceptionDistance

    rng = np.random.default_rng(8)
    reference = rng.normal(size=(90, 6))  # torchmetrics draws subsets: one subset of every sample is the whole set
    fake = rng.normal(loc=0.4, size=(90, 6))

    class Identity(torch.nn.Module):
        def forward(self, x):
            return x

    kid = KernelInceptionDistance(feature=Identity(), subsets=1, subset_size=90)
    kid.update(torch.from_numpy(reference), real=True)
    kid.update(torch.from_numpy(fake), real=False)
    expected = float(kid.compute()[0])
    ours = paired.KernelDistance(reference)
    assert ours(fake)[0] == pytest.approx(expected, rel=1e-6)
    # multiplicities: the unbiased MMD of the sample with the copies written out (pairs of distinct draws)
    w = _multiplicities(rng, 90, size=2)
    for b in range(2):
        repeated = np.repeat(fake, w[b].astype(int), axis=0)
        k = ours.kernel(repeated, repeated)
        within = (k.sum() - np.trace(k)) / (90 * 89)
        cross = ours.kernel(repeated, reference).mean()
        assert ours(fake, w)[b] == pytest.approx(ours.within_reference + within - 2 * cross, rel=1e-9)


def test_centred_intervals_hold_the_estimate_of_a_statistic_inflated_by_resampling():
    """FID of a resample with repeated samples exceeds the full-sample FID; the interval must still hold it."""
    rng = np.random.default_rng(9)
    reference, fake = rng.normal(size=(200, 5)), rng.normal(loc=0.05, size=(60, 5))
    frechet = paired.Frechet(reference)
    point = float(frechet(fake)[0])
    draws = frechet(fake, _multiplicities(rng, 60, size=400))
    assert np.mean(draws > point) > 0.9  # the raw bootstrap sits above the estimate
    verdict = paired.compare({"a": point, "b": point + 1.0}, {"a": draws, "b": draws + 1.0}, False, "samples")
    low, high = verdict["models"]["a"]["low"], verdict["models"]["a"]["high"]
    assert low <= point <= high
    assert verdict["models"]["b"]["diff_low"] <= 1.0 <= verdict["models"]["b"]["diff_high"]


def test_weighted_ece_agrees_with_torchmetrics_and_with_repeated_rows():
    from torchmetrics.functional.classification import multiclass_calibration_error

    rng = np.random.default_rng(10)
    logits = rng.normal(scale=2.0, size=(120, 4))
    proba = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = rng.integers(0, 4, size=120)
    expected = float(multiclass_calibration_error(torch.from_numpy(proba).float(), torch.from_numpy(labels),
                                                  num_classes=4, n_bins=15, norm="l1"))
    assert paired.weighted_ece(proba, labels, np.ones((1, 120)))[0] == pytest.approx(expected, abs=1e-6)
    w = _multiplicities(rng, 120, size=2)
    for b in range(2):
        index = np.repeat(np.arange(120), w[b].astype(int))
        again = float(multiclass_calibration_error(torch.from_numpy(proba[index]).float(),
                                                   torch.from_numpy(labels[index]), num_classes=4, n_bins=15, norm="l1"))
        assert paired.weighted_ece(proba, labels, w)[b] == pytest.approx(again, abs=1e-6)


def test_resolvable_difference_is_2_8_standard_errors():
    d = np.random.default_rng(11).normal(scale=0.5, size=20000)
    assert paired.resolvable(d) == pytest.approx(2.8016 * 0.5, rel=0.02)


def test_compare_dataset_with_unequal_seeds_parzen_left_out_and_a_reference_row(tmp_path):
    rng = np.random.default_rng(12)
    test_y = rng.integers(0, 3, size=80)
    for model, seeds, p in (("many", list(range(10)), 0.9), ("few", [0, 1, 2], 0.6)):
        correct = (rng.random((10, 80)) < p).astype(np.float64)
        _raw(tmp_path, model, seeds, test_y, **{"per_image.classification.accuracy": correct})
    _raw(tmp_path, "kde", [0, 1, 2], test_y, **{"per_image.likelihood.nll_nats": rng.random((3, 80))})
    stage = json.loads((tmp_path / "results/d/kde/raw/stage.json").read_text())
    stage["per_seed"] = [{"seed": s, "likelihood": {"space": "discrete", "method": "Parzen-window (Gaussian KDE)"}}
                         for s in stage["seeds"]]
    (tmp_path / "results/d/kde/raw/stage.json").write_text(json.dumps(stage))
    reference = {"group": "all", "point": 0.75, "per_seed": [0.75], "resamples": np.full(499, 0.75)}
    job = comparisons.CompareJob(str(tmp_path), "d", test_y, None, None, 5, 499)
    result = comparisons.compare_dataset(tmp_path, "d", ["many", "few", "kde"], job, {"accuracy": {"ref": reference}})
    accuracy = result["metrics"]["accuracy"]["groups"]["all"]["models"]
    assert accuracy["many"]["n_seeds"] == 10 and accuracy["few"]["n_seeds"] == 3 and "ref" in accuracy
    assert result["seeds"]["many"] == list(range(10))
    assert "nll_nats" not in result["metrics"] and "kde" in result["not_ranked"]["nll_nats"]


def test_bounded_features_lie_on_the_unit_sphere_and_rank_agreement_is_kendalls_tau():
    from scipy.stats import kendalltau

    from genbench.evaluator import EvaluatorNet
    from genbench.metrics.feature_spaces import bounded_features

    torch.manual_seed(0)
    features = bounded_features(EvaluatorNet((1, 8, 8), 10), torch.rand(50, 1, 8, 8) * 100)
    assert features.min() >= 0 and features.max() <= 1
    assert np.linalg.norm(features, axis=1) == pytest.approx(np.ones(50))
    values = {"a": 1.0, "b": 3.0, "c": 2.0, "d": 5.0}
    other = {"a": 2.0, "b": 1.0, "c": 4.0, "d": 8.0}
    metrics = {name: {"groups": {"all": {"models": {m: {"value": v} for m, v in table.items()}}}}
               for name, table in (("fid", values), ("fid_pixels", other))}
    [agreement] = comparisons.rank_agreement(metrics)
    assert agreement["kendall_tau"] == pytest.approx(kendalltau(list(values.values()), list(other.values())).statistic)
    assert agreement["n_models"] == 4

"""The learning-curve and augmentation studies (genbench.studies) and their report sections: subset sizes
and stratification against scikit-learn's stratified split, nesting, the training-length rule, the 100%
point reproducing the model stage, the real-only baseline reproducing the learning curve, and the paired
differences and crossings the report states."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from genbench.config import ConfigError
from genbench.data.prepare import run_prepare
from genbench.pinned_evaluator import run_evaluator
from genbench.models import get_model_class
from genbench.report.studies import crossing_text, crossings, paired_difference
from genbench.runner import run_model
from genbench.summary import accuracy_interval, run_summary
from genbench.studies import (
    REAL_ONLY, class_counts, equal_step_epochs, run_augmentation, run_learning_curve, settings, stratified_subset,
    study_models,
)

ROOT = Path(__file__).resolve().parents[1]


def _params(**studies) -> dict:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    keep = ("gaussian_nb", "logistic_regression", "cnn", "svm")
    params["models"] = {m: {**params["models"][m], **get_model_class(m).fast_params} for m in keep}
    params["datasets"], params["overrides"] = {"digits": params["datasets"]["digits"]}, {}
    params["evaluator"]["epochs"] = 1
    params["seeds"] = [0, 1]
    params["protocol"] |= {"fid_samples": 200, "anomaly": {"normal_classes": [0]}}
    params["studies"] = {"learning_curve": {"fractions": [0.05, 0.2, 1.0], **studies.get("learning_curve", {})},
                         "augmentation": {"real_fractions": [0.05, 0.2], **studies.get("augmentation", {})}}
    return params


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("studies")
    run_prepare(_params(), "digits", root=root)
    run_evaluator(_params(), "digits", root=root, retrain=True)  # pinned for this recipe
    return root


# --- subsets ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fraction", [0.01, 0.02, 0.1, 0.25, 0.5])
def test_subsets_are_stratified_as_scikit_learn_splits_them(digits_splits, fraction):
    from sklearn.model_selection import train_test_split

    y = digits_splits["train"].y.numpy()
    counts = class_counts(y, 10, fraction)
    expected = [int(fraction * n + 0.5) for _, n in sorted(Counter(y.tolist()).items())]  # round half up
    assert counts.tolist() == [max(1, e) for e in expected]
    index = stratified_subset(y, counts, seed=3)
    assert len(set(index.tolist())) == len(index) == counts.sum() and (np.diff(index) > 0).all()
    assert Counter(y[index].tolist()) == dict(enumerate(counts.tolist()))
    if counts.sum() >= 20:  # scikit-learn's stratified allocation of the same total differs by at most one a class
        _, reference = train_test_split(y, test_size=int(counts.sum()), stratify=y, random_state=0)
        assert np.abs(np.bincount(reference, minlength=10) - counts).max() <= 1


def test_a_seeds_subsets_are_nested_differ_between_seeds_and_fraction_one_is_the_split(digits_splits):
    y = digits_splits["train"].y.numpy()
    small, large = (set(stratified_subset(y, class_counts(y, 10, f), seed=0).tolist()) for f in (0.05, 0.25))
    assert small < large
    other = set(stratified_subset(y, class_counts(y, 10, 0.05), seed=1).tolist())
    assert other != small
    assert stratified_subset(y, class_counts(y, 10, 1.0), seed=5).tolist() == list(range(len(y)))
    assert class_counts(y, 10, 0.001, min_per_class=3).tolist() == [3] * 10


def test_equal_steps_gives_the_full_fits_number_of_optimiser_steps():
    cnn = {"epochs": 30, "batch_size": 64}
    assert equal_step_epochs(cnn, 1293, 1293) == {}
    assert equal_step_epochs(cnn, 1293, 10) == {"epochs": 600}  # 20 batches of 64 an epoch vs one batch of 10
    assert equal_step_epochs(cnn, 1293, 130) == {"epochs": 300}  # 130 // 64 = 2 batches an epoch
    assert equal_step_epochs({"max_iter": 100, "batch_size": 128}, 1293, 65) == {"max_iter": 1000}
    assert equal_step_epochs({"n_iter": 20}, 1293, 10) == {}  # EM to convergence: not touched
    assert equal_step_epochs({"max_iter": 2000, "C": 1.0}, 1293, 10) == {}  # no mini-batches


# --- settings ---------------------------------------------------------------------------------------------


def test_study_settings_and_selection_are_checked():
    params = _params()
    assert study_models(params, "digits", "learning_curve") == ["gaussian_nb", "logistic_regression", "cnn", "svm"]
    assert study_models(params, "digits", "augmentation") == ["gaussian_nb", REAL_ONLY]
    with pytest.raises(ConfigError, match="unknown keys"):
        settings({"studies": {"learning_curve": {"fraction": [0.1]}}}, "learning_curve")
    with pytest.raises(ConfigError, match=r"fractions\[0\]' must be <= 1.0"):
        settings({"studies": {"learning_curve": {"fractions": [1.5]}}}, "learning_curve")
    with pytest.raises(ConfigError, match="not a class-conditional generator"):
        study_models(_params(augmentation={"generators": ["svm"]}), "digits", "augmentation")
    with pytest.raises(ConfigError, match="must be a classifier"):
        study_models(_params(augmentation={"classifier": "gmm"}), "digits", "augmentation")
    assert study_models(_params(augmentation={"generators": []}), "digits", "augmentation") == []


# --- the stages -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["gaussian_nb", "cnn"])
def test_the_full_training_split_reproduces_the_model_stages_accuracy(prepared, model):
    curve = run_learning_curve(_params(), "digits", model, root=prepared)
    run_model(_params(), "digits", model, root=prepared)
    baseline = run_summary(_params(), "digits", model, root=prepared)
    full = curve["points"][-1]
    assert full["fraction"] == 1.0 and full["n_train"] == curve["n_train_full"]
    assert [r["accuracy"] for r in full["per_seed"]] == pytest.approx(
        [r["classification"]["accuracy"] for r in baseline["per_seed"]], abs=1e-6)
    assert "accuracy" not in full  # a statistic: the report computes it from the stored per-image outputs
    assert accuracy_interval(full["per_seed"])["mean"] == pytest.approx(
        baseline["summary"]["classification"]["accuracy"], abs=1e-6)
    sizes = [p["n_train"] for p in curve["points"]]
    assert sizes == sorted(sizes) and all(sum(p["class_counts"]) == p["n_train"] for p in curve["points"])
    if model == "cnn":  # epoch-trained: more epochs on the smaller subsets, none added at 100%
        assert curve["points"][0]["per_seed"][0]["adjusted"]["epochs"] > _params()["models"]["cnn"]["epochs"]
        assert full["per_seed"][0]["adjusted"] == {}


def test_real_only_baselines_are_the_classifiers_learning_curve_and_augmentation_adds_the_samples(prepared):
    params = _params(learning_curve={"fractions": [0.05, 0.2]})
    curve = run_learning_curve(params, "digits", "cnn", root=prepared)
    real = run_augmentation(params, "digits", REAL_ONLY, root=prepared)
    for c, r in zip(curve["points"], real["points"]):
        assert [s["correct"] for s in c["per_seed"]] == [s["correct"] for s in r["per_seed"]]  # the same fits
        total = r["same_total"]
        assert total["class_counts"] == [2 * k for k in r["class_counts"]]  # generated_per_real 1: twice the images
    augmented = run_augmentation(params, "digits", "gaussian_nb", root=prepared)
    for point, base in zip(augmented["points"], real["points"]):
        assert point["n_generated"] == base["n_train"]
        assert all(s["n_train"] == 2 * base["n_train"] and s["n_real"] == base["n_train"] for s in point["per_seed"])
        interval = accuracy_interval(point["per_seed"])
        assert interval["low"] <= interval["mean"] <= interval["high"]
    with pytest.raises(ConfigError, match="not among the models"):
        run_augmentation(params, "digits", "svm", root=prepared)


# --- the report's arithmetic ------------------------------------------------------------------------------


def _seed(seed: int, correct: list[int]) -> dict:
    return {"seed": seed, "accuracy": float(np.mean(correct)), "correct": "".join(map(str, correct))}


def test_paired_differences_are_the_mean_per_seed_difference_with_an_interval_around_it():
    rng = np.random.default_rng(0)
    a = [_seed(s, rng.integers(0, 2, 200).tolist()) for s in range(3)]
    b = [_seed(s, rng.integers(0, 2, 200).tolist()) for s in range(3)]
    diff = paired_difference(a, b)
    expected = np.mean([x["accuracy"] - y["accuracy"] for x, y in zip(a, b)])
    assert diff["mean"] == pytest.approx(expected)
    assert diff["low"] < diff["mean"] < diff["high"] and diff["n_seeds"] == 3
    assert paired_difference(a, a)["mean"] == 0 and paired_difference(a, a)["high"] == pytest.approx(0)
    assert paired_difference(a, [{"seed": 0, "not_fitted": "too small"}] * 3) is None


def test_crossings_name_where_one_curve_overtakes_the_other():
    sizes = [10, 30, 100, 300]
    assert crossings(sizes, [-0.1, -0.02, 0.03, 0.05]) == [(30, 100, 1)]
    assert crossing_text(sizes, [-0.1, -0.02, 0.03, 0.05], "nb", "lr") == "lr overtakes between n = 30 and 100"
    assert crossing_text(sizes, [0.1, 0.2, 0.3, 0.1], "nb", "lr") == "lr ahead at every size"
    assert crossing_text(sizes, [-0.1, None, -0.3, -0.1], "nb", "lr") == "nb ahead at every size"
    assert crossings(sizes, [-0.1, 0.0, 0.1, -0.1]) == [(10, 100, 1), (100, 300, -1)]  # a tie is skipped over
    assert crossing_text(sizes, [None] * 4, "nb", "lr") == "not fitted"

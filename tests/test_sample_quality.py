"""Precision / recall / density / coverage against the reference `prdc` package (Naeem et al. 2020)
and a brute-force loop, their sanity properties, memorisation and the Classification Accuracy Score."""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import pytest
import torch
from prdc import compute_prdc

from genbench.evaluator import train_evaluator
from genbench.metrics.sample_quality import (
    classification_accuracy_score,
    evaluator_features,
    memorisation,
    prdc,
    prdc_images,
)

EVALUATOR = dict(feature_dim=64, epochs=5, batch_size=64, lr=1e-3, seed=0, device=torch.device("cpu"))


@contextmanager
def _one_thread():
    """The 8x8 CNN gains nothing from threads, and they thrash when other jobs share the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def evaluator(digits_splits):
    with _one_thread():
        net, _ = train_evaluator(digits_splits["train"], **EVALUATOR)
    return net


def _loop_prdc(real: np.ndarray, fake: np.ndarray, k: int) -> dict:
    """The definitions, one point at a time."""
    def radius(points, i):  # distance to the k-th nearest other point
        return np.sort([np.linalg.norm(points[i] - p) for j, p in enumerate(points) if j != i])[k - 1]

    r_real = [radius(real, i) for i in range(len(real))]
    r_fake = [radius(fake, j) for j in range(len(fake))]
    d = lambda a, b: np.linalg.norm(a - b)  # noqa: E731
    precision = np.mean([any(d(y, x) < r for x, r in zip(real, r_real)) for y in fake])
    recall = np.mean([any(d(x, y) < r for y, r in zip(fake, r_fake)) for x in real])
    density = np.mean([sum(d(y, x) < r for x, r in zip(real, r_real)) for y in fake]) / k
    coverage = np.mean([any(d(y, x) < r for y in fake) for x, r in zip(real, r_real)])
    return dict(precision=precision, recall=recall, density=density, coverage=coverage)


def test_prdc_matches_reference_package_and_loop(capsys):
    rng = np.random.default_rng(0)
    real = rng.normal(size=(300, 16))
    fake = rng.normal(size=(250, 16)) * 1.2 + 0.3  # overlapping but different: every value strictly inside (0, 1)
    for k in (3, 5):
        ours = prdc(torch.tensor(real), torch.tensor(fake), k, batch_size=64)  # several blocks
        reference = compute_prdc(real, fake, k)
        for name in ("precision", "recall", "density", "coverage"):
            assert ours[name] == pytest.approx(reference[name], abs=1e-12), name
        assert (ours["k"], ours["n_real"], ours["n_fake"]) == (k, 300, 250)
        assert 0.05 < ours["precision"] < 0.95 and 0.05 < ours["coverage"] < 0.95
    small_real, small_fake = real[:30, :4], fake[:25, :4]
    ours = prdc(torch.tensor(small_real), torch.tensor(small_fake), 3)
    for name, value in _loop_prdc(small_real, small_fake, 3).items():
        assert ours[name] == pytest.approx(value, abs=1e-12), name


def test_prdc_of_a_set_against_itself_is_one(digits_splits, evaluator):
    features = evaluator_features(evaluator, digits_splits["test"].x)
    result = prdc(features, features)
    for name in ("precision", "recall", "coverage"):
        assert result[name] == 1.0, name
    assert result["density"] == pytest.approx(1.0, abs=0.02)  # exactly 1 without ties: k - 1 neighbours + itself
    assert prdc_images(evaluator, digits_splits["test"].x, digits_splits["test"].x) == result


def test_one_class_samples_have_low_recall_and_coverage(digits_splits, evaluator):
    """Mode collapse: 'samples' that are real images of a single class lie on the real manifold
    (high precision) but cover a tenth of it."""
    train, test = digits_splits["train"], digits_splits["test"]
    result = prdc_images(evaluator, test.x, train.x[train.y == 3])
    assert result["precision"] > 0.8
    assert result["recall"] < 0.3 and result["coverage"] < 0.3
    fair = prdc_images(evaluator, test.x, train.x[: int((train.y == 3).sum())])  # as many images, all classes
    assert fair["recall"] > 0.6 and fair["coverage"] > 0.6


def test_shifted_samples_have_low_precision(digits_splits, evaluator):
    real = evaluator_features(evaluator, digits_splits["test"].x)
    fake = evaluator_features(evaluator, digits_splits["train"].x)
    same = prdc(real, fake)
    assert same["precision"] > 0.7 and same["density"] > 0.7
    shifted = prdc(real, fake + 2 * real.std(0))  # two standard deviations along every feature
    assert shifted["precision"] < 0.1 and shifted["density"] < 0.1 and shifted["coverage"] < 0.1


def test_memorisation_separates_copies_held_out_data_and_noise(digits_splits):
    train, val, test = digits_splits["train"], digits_splits["val"], digits_splits["test"]
    copies = memorisation(train.x, test.x, train.x[:500])
    assert copies["share"] == 1.0 and copies["threshold"] > 0
    assert copies["reference_share"] == copies["quantile"] == 0.5
    for quantile in (0.5, 0.25):
        held_out = memorisation(train.x, test.x, val.x, quantile=quantile, batch_size=100)  # several blocks
        # 144 validation images against a threshold from 360 test images: binomial sd ~0.04 (observed 0.54, 0.33)
        assert held_out["share"] == pytest.approx(quantile, abs=0.12)
    noise = memorisation(train.x, test.x, torch.rand(300, *train.image_shape, generator=torch.Generator().manual_seed(0)))
    assert noise["share"] == 0.0
    with pytest.raises(ValueError, match="quantile"):
        memorisation(train.x, test.x, val.x, quantile=1.0)


def test_memorisation_threshold_is_the_quantile_of_brute_force_distances(digits_splits):
    train, test = digits_splits["train"], digits_splits["test"]
    flat_train = train.x.flatten(1).double().numpy()
    nearest = np.array([np.sqrt(((flat_train - t) ** 2).sum(1)).min() for t in test.x.flatten(1).double().numpy()])
    assert memorisation(train.x, test.x, test.x[:10])["threshold"] == pytest.approx(np.quantile(nearest, 0.5), rel=1e-9)


def test_cas_is_high_on_real_labelled_images_and_chance_on_shuffled_labels(digits_splits, evaluator):
    from genbench.evaluator import predict

    train, test = digits_splits["train"], digits_splits["test"]
    real_data_accuracy = float((predict(evaluator, test.x).argmax(1) == test.y).double().mean())
    settings = dict(image_shape=train.image_shape, num_classes=10, **EVALUATOR)
    with _one_thread():
        cas = classification_accuracy_score(train.x, train.y, test, **settings)
    assert cas["accuracy"] > 0.85
    assert cas["accuracy"] == pytest.approx(real_data_accuracy, abs=0.02)  # same architecture, data and seed
    assert cas["n_train_generated"] == len(train) and cas["epochs"] == EVALUATOR["epochs"]
    assert cas["correct"].shape == (len(test),) and cas["correct"].mean() == pytest.approx(cas["accuracy"])
    shuffled = train.y[torch.randperm(len(train), generator=torch.Generator().manual_seed(0))]
    with _one_thread():
        chance = classification_accuracy_score(train.x, shuffled, test, **settings)
    assert chance["accuracy"] < 0.25
    with pytest.raises(ValueError, match="CAS needs"):
        classification_accuracy_score(train.x[:, :, :4], train.y, test, **settings)


def test_samples_of_another_domain_are_judged_in_that_domain(digits_splits, evaluator, tmp_path):
    """cyclegan's samples are thickened digits: the evaluate stage maps the reference split and the
    training images through `sample_domain` first, so perfect translations get FID ~0, not a large one."""
    from genbench.models.cyclegan import thicken
    from types import SimpleNamespace

    from genbench.runner import sample_quality

    class Data:  # the PreparedData interface sample_quality reads
        def split(self, name):
            return digits_splits[name]

    class Translator:
        sample_domain_label = "thickened"

        def sample_domain(self, x):
            return thicken(x, 2)

    samples = thicken(digits_splits["test"].x, 2)
    params = {"protocol": {"fid_reference_split": "test", "prdc_k": 5}}
    info = {"sha256": "0" * 64, "feature_dim": EVALUATOR["feature_dim"]}
    job = SimpleNamespace(params=params, model_name="m", data=Data(), evaluator=(evaluator, info),
                          device=torch.device("cpu"))  # what sample_quality reads of genbench.runner.Job
    with _one_thread():
        mapped = sample_quality(job, Translator(), samples, None, seed=0)
        plain = sample_quality(job, None, samples, None, seed=0)
    assert mapped["fid"]["value"] < 1e-3 < 10 < plain["fid"]["value"]
    assert mapped["fid"]["reference_domain"] == "thickened" and "reference_domain" not in plain["fid"]
    assert mapped["prdc"]["precision"] > 0.99 and mapped["prdc"]["coverage"] > 0.99
    assert mapped["memorisation"]["reference_domain"] == "thickened"


def test_cas_reference_draws_real_images_with_the_samples_class_counts(digits_splits):
    from genbench.runner import matched_real_images

    train = digits_splits["train"]
    labels = torch.arange(50) % 10
    x, y = matched_real_images(train, labels, seed=3)
    assert torch.equal(torch.bincount(y, minlength=10), torch.bincount(labels, minlength=10))
    rows = {tuple(row.tolist()) for row in x.flatten(1)}
    assert len(rows) == len(x)  # without replacement (digits' training images are distinct)
    assert all(any(torch.equal(image, t) for t in train.x[train.y == c]) for image, c in zip(x[:5], y[:5]))
    again, _ = matched_real_images(train, labels, seed=3)
    assert torch.equal(x, again)
    with pytest.raises(ValueError, match="lower protocol.fid_samples"):
        matched_real_images(train, torch.zeros(10_000, dtype=torch.long), seed=0)

"""Two studies over a dataset's models, each a DVC stage per (dataset, model) with the seeds inside it:

* learning curves (`learning_curve`): a classifier fitted on stratified subsets of the training split,
  1% to 100%, test accuracy per size with a 95% interval over seeds and test images, for generative
  classifiers (Bayes' rule over p(x | y) p(y)) and discriminative ones alike, the comparison of Ng &
  Jordan (2002), "On discriminative vs. generative classifiers";
* augmentation (`augmentation`): one classifier (params.yaml's `studies.augmentation.classifier`, the
  CNN) fitted on a small real subset plus class-conditional samples of a generator trained on that
  same subset only, against the classifier on the real subset alone and on a real subset of the same
  total size (the `real_only` stage, which every generator's results are paired with).

Subsets: for each seed, one random permutation of each class's training images; a subset of a
fraction f takes the first max(min_per_class, floor(f n_c + 1/2)) images of class c, in their order in
the split. So a seed's smaller subsets are contained in its larger ones, every class keeps its share,
the subsets of a seed are the same for every model (the pairs compared in the report are paired), and
fraction 1 is the whole split in order: that fit is the model stage's own fit (tests check it).

Training length: with `equal_steps` a model with `epochs` (or `max_iter`) and `batch_size` is given as many
epochs as it takes to make about as many optimiser steps on a subset as on the full training split,
ceil(epochs * b(N) / b(n)) with b(n) = n // min(batch_size, n) batches per epoch (the shared training
loop drops the last partial batch; scikit-learn's MLP keeps it, so there it is within one batch an epoch).
Without it, a CNN on 1% of digits would make 30 steps where the full fit makes 600. Models without
those settings (closed-form fits, EM to convergence) are fitted as params.yaml says.

Outputs: `results/<dataset>/<model>/learning_curve.json`, `results/<dataset>/<model>/augmentation.json`
and `results/<dataset>/real_only/augmentation.json`; the report reads them (genbench.report.studies).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genbench.config import ConfigError, check_type, section
from genbench.data import Split
from genbench.data.prepare import PreparedData, cached_prepared
from genbench.io import write_json
from genbench.models.base import capabilities
from genbench.params import Paths, build_model, check_selection, dataset_params, device_of, seeds_of

STUDIES = ("learning_curve", "augmentation")
REAL_ONLY = "real_only"  # the augmentation stage that fits the classifier on real images only
DEFAULTS = {
    "learning_curve": {"models": "classifiers", "fractions": [0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0],
                       "min_per_class": 1, "equal_steps": True},
    "augmentation": {"generators": "conditional", "classifier": "cnn", "real_fractions": [0.02, 0.05, 0.1],
                     "generated_per_real": 1.0, "min_per_class": 1, "equal_steps": True},
}
EPOCH_KEYS = ("epochs", "max_iter")
# What a model's fit may raise on a subset too small for it (k-means with more clusters than images):
# the point is then recorded as not fitted, with the message, and the report says so.
TOO_SMALL = (ValueError, np.linalg.LinAlgError)


# --- settings and selection ---------------------------------------------------------------------------


def settings(params: dict[str, Any], study: str) -> dict[str, Any]:
    """`studies.<study>` of params.yaml (already merged with the dataset's overrides), checked, defaults filled."""
    given = (params.get("studies") or {}).get(study) or {}
    if not isinstance(given, dict):
        raise ConfigError(f"params.yaml: 'studies.{study}' must be a mapping")
    unknown = set(given) - set(DEFAULTS[study])
    if unknown:
        raise ConfigError(f"params.yaml: 'studies.{study}' has unknown keys {sorted(unknown)}; known: "
                          f"{', '.join(DEFAULTS[study])}")
    out = {**DEFAULTS[study], **given}
    key = "fractions" if study == "learning_curve" else "real_fractions"
    fractions = out[key]
    if not isinstance(fractions, list) or not fractions or len(set(fractions)) != len(fractions):
        raise ConfigError(f"params.yaml: 'studies.{study}.{key}' must be a list of distinct fractions in (0, 1]")
    for i, f in enumerate(fractions):
        check_type(f"studies.{study}.{key}[{i}]", f, float, low=1e-6, high=1.0)
    out[key] = sorted(float(f) for f in fractions)
    check_type(f"studies.{study}.min_per_class", out["min_per_class"], int, low=1)
    check_type(f"studies.{study}.equal_steps", out["equal_steps"], bool)
    if study == "augmentation":
        check_type("studies.augmentation.generated_per_real", out["generated_per_real"], float, low=0.01, high=100.0)
        check_type("studies.augmentation.classifier", out["classifier"], str)
    return out


def is_classifier(model: Any) -> bool:
    """Has predict_proba and, for a model that can be fitted either way, is class-conditional."""
    return "classify" in capabilities(model) and bool(getattr(model, "class_conditional", True))


def is_conditional_generator(model: Any) -> bool:
    """Samples a chosen class: `conditional` (cgan, naive Bayes), or fitted per class (`class_conditional`:
    gmm, kmeans, hmm, bayes_net, whose `conditional` is only known once fitted)."""
    return "generate" in capabilities(model) and bool(getattr(model, "conditional", False) or
                                                      getattr(model, "class_conditional", False))


def study_models(params: dict[str, Any], dataset: str, study: str) -> list[str]:
    """The models a dataset's `study` runs, in params.yaml's order: for the learning curve every classifier
    ("classifiers") or a list; for augmentation every class-conditional generator ("conditional") or a list,
    then REAL_ONLY (the real-data baselines), or nothing when no generator is selected."""
    params = dataset_params(params, dataset)
    config = settings(params, study)
    models = list(params.get("models") or {})
    key, auto, test, what = (("models", "classifiers", is_classifier, "a classifier (predict_proba)")
                             if study == "learning_curve" else
                             ("generators", "conditional", is_conditional_generator,
                              "a class-conditional generator (sample(n, y=...))"))
    chosen = config[key]
    if chosen == auto:
        return _with_baseline(study, [m for m in models if test(build_model(params, m))], config, params)
    if not isinstance(chosen, list) or not all(isinstance(m, str) for m in chosen):
        raise ConfigError(f"params.yaml: 'studies.{study}.{key}' must be '{auto}' or a list of model names")
    for m in chosen:
        if m not in models:
            raise ConfigError(f"params.yaml: 'studies.{study}.{key}' names '{m}', which is not under 'models:'")
        if not test(build_model(params, m)):
            raise ConfigError(f"params.yaml: 'studies.{study}.{key}' names '{m}', which is not {what}")
    return _with_baseline(study, list(chosen), config, params)


def _check_selected(params: dict, study: str, config: dict, model: str) -> None:
    """`model` is one of the study's models (built alone: a stage imports only the model files it runs)."""
    if study == "augmentation":
        _with_baseline(study, [REAL_ONLY], config, params)  # checks the classifier
        if model == REAL_ONLY:
            return
    key, auto, test = (("models", "classifiers", is_classifier) if study == "learning_curve" else
                       ("generators", "conditional", is_conditional_generator))
    chosen = config[key]
    if model not in (params.get("models") or {}) or (chosen != auto and model not in chosen) or (
            chosen == auto and not test(build_model(params, model))):
        raise ConfigError(f"'{model}' is not among the models of studies.{study}.{key} ({chosen!r}) in params.yaml")


def _with_baseline(study: str, chosen: list[str], config: dict, params: dict) -> list[str]:
    if study != "augmentation" or not chosen:
        return chosen
    classifier = config["classifier"]
    if classifier not in (params.get("models") or {}) or not is_classifier(build_model(params, classifier)):
        raise ConfigError(f"params.yaml: 'studies.augmentation.classifier' is '{classifier}', which must be a "
                          "classifier under 'models:' (e.g. cnn)")
    return [*chosen, REAL_ONLY]


# --- subsets and training length ----------------------------------------------------------------------


def class_counts(y: np.ndarray, num_classes: int, fraction: float, min_per_class: int = 1) -> np.ndarray:
    """Images per class in a stratified subset: max(min_per_class, floor(fraction n_c + 1/2)), at most n_c."""
    available = np.bincount(np.asarray(y), minlength=num_classes)
    wanted = np.maximum(min_per_class, np.floor(fraction * available + 0.5).astype(np.int64))
    return np.minimum(wanted, available)


def stratified_subset(y: np.ndarray, counts: np.ndarray, *, seed: int) -> np.ndarray:
    """Sorted indices of `counts[c]` images of each class c: the first of a seeded permutation of the class,
    so that for one seed a subset with smaller counts is contained in one with larger counts."""
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    chosen = []
    for c, k in enumerate(counts):
        members = np.flatnonzero(y == c)
        chosen.append(members[rng.permutation(len(members))[:k]])
    return np.sort(np.concatenate(chosen))


def equal_step_epochs(hyperparameters: dict[str, Any], n_full: int, n: int) -> dict[str, int]:
    """The epoch setting that gives a fit on n images about the optimiser steps of one on n_full ({} if none)."""
    key = next((k for k in EPOCH_KEYS if k in hyperparameters), None)
    batch = hyperparameters.get("batch_size")
    if key is None or not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        return {}

    def batches(m: int) -> int:
        return max(1, m // min(batch, m))

    epochs = math.ceil(hyperparameters[key] * batches(n_full) / batches(n))
    return {key: epochs} if epochs != hyperparameters[key] else {}


def fit_model(params: dict, name: str, train: Split, *, seed: int, n_full: int, equal_steps: bool) -> tuple[Any, dict, float]:
    """`name` built from params.yaml (epochs adjusted with equal_steps) and fitted on `train`: the model,
    the adjusted hyperparameters and the fit's seconds."""
    model = build_model(params, name)
    adjusted = equal_step_epochs(model.get_params(), n_full, len(train)) if equal_steps else {}
    if adjusted:
        hyper = {**(section(params, f"models.{name}") or {}), **adjusted}
        model = build_model({**params, "models": {**params["models"], name: hyper}}, name)
    start = time.perf_counter()
    model.fit(train, seed=seed)
    return model, adjusted, time.perf_counter() - start


def correct_on(model: Any, test: Split) -> np.ndarray:
    """1 where the predicted class (argmax of predict_proba) is the test label, else 0."""
    proba = np.asarray(model.predict_proba(test.x), dtype=np.float64)
    return (proba.argmax(1) == test.y.numpy()).astype(np.int8)


def _bits(correct: np.ndarray) -> str:
    return "".join("1" if c else "0" for c in correct)


# --- the tasks (on the engine's workers, as in genbench.runner) ----------------------------------------------


@dataclass(frozen=True)
class StudyJob:
    """What every task of a study stage reads: small, so that it travels to the workers with each task."""

    params: dict
    study: str
    model: str  # the classifier (learning curve), the generator, or REAL_ONLY
    config: dict
    data_dir: str
    counts: list[np.ndarray]  # per point: images per class
    totals: list[np.ndarray]  # augmentation: per point, images per class of the same total size

    @property
    def data(self) -> PreparedData:
        return cached_prepared(self.data_dir)


def _subset(job: StudyJob, counts: np.ndarray, seed: int, name: str) -> Split:
    train = job.data.split("train")
    index = torch.from_numpy(stratified_subset(train.y.numpy(), counts, seed=seed))
    return train.subset(index, name=name)


def _fit_and_score(job: StudyJob, name: str, train: Split, seed: int) -> dict:
    n_full = len(job.data.split("train"))
    try:
        model, adjusted, seconds = fit_model(job.params, name, train, seed=seed, n_full=n_full,
                                             equal_steps=job.config["equal_steps"])
    except TOO_SMALL as error:
        return {"seed": seed, "not_fitted": f"{type(error).__name__}: {error}"}
    correct = correct_on(model, job.data.split("test"))
    return {"seed": seed, "accuracy": float(correct.mean()), "correct": _bits(correct), "fit_seconds": seconds,
            "n_train": len(train), "adjusted": adjusted}


def _study_task(task: tuple, job: StudyJob) -> dict:
    """(kind, seed, point): kind 'fit' (learning curve, real-only at the real size), 'total' (real-only at
    the augmented total size) or 'augment' (generator on the real subset, then the classifier on both)."""
    kind, seed, point = task
    real = _subset(job, job.counts[point], seed, f"train subset {point}")
    if kind == "fit":
        name = job.model if job.study == "learning_curve" else job.config["classifier"]
        return {"task": task, **_fit_and_score(job, name, real, seed)}
    if kind == "total":
        return {"task": task, **_fit_and_score(job, job.config["classifier"], _subset(job, job.totals[point], seed,
                                                                                      f"train subset {point}, total"), seed)}
    n_full = len(job.data.split("train"))
    try:
        generator, adjusted, seconds = fit_model(job.params, job.model, real, seed=seed, n_full=n_full,
                                                 equal_steps=job.config["equal_steps"])
    except TOO_SMALL as error:
        return {"task": task, "seed": seed, "not_fitted": f"{job.model}: {type(error).__name__}: {error}"}
    per_class = np.floor(job.config["generated_per_real"] * job.counts[point] + 0.5).astype(np.int64)
    labels = torch.repeat_interleave(torch.arange(len(per_class)), torch.from_numpy(per_class))
    start = time.perf_counter()
    images = generator.sample(len(labels), y=labels, generator=torch.Generator().manual_seed(seed))
    sample_seconds = time.perf_counter() - start
    if images.shape[1:] != real.x.shape[1:] or not torch.isfinite(images).all() or images.min() < 0 or images.max() > 1:
        raise ValueError(f"{job.model}.sample returned images of shape {tuple(images.shape)} or outside [0, 1]")
    both = Split(torch.cat([real.x, images.float().cpu()]), torch.cat([real.y, labels]), real.levels, real.num_classes,
                 f"train subset {point} + {len(labels)} generated")
    result = _fit_and_score(job, job.config["classifier"], both, seed)
    return {"task": task, **result, "n_real": len(real), "n_generated": len(labels), "generator_fit_seconds": seconds,
            "generator_adjusted": adjusted, "sample_seconds": sample_seconds}


def _point(results: list[dict], fraction: float, counts: np.ndarray) -> dict:
    failed = [r["not_fitted"] for r in results if "not_fitted" in r]
    point = {"fraction": fraction, "n_train": int(counts.sum()), "class_counts": counts.tolist(),
             "per_seed": results}  # its interval: genbench.summary.accuracy_interval, downstream
    if failed:
        point["not_fitted"] = failed[0]
    return point


# --- the stages -------------------------------------------------------------------------------------------


def run_study(params: dict[str, Any], study: str, dataset: str, model: str, root: str | Path = ".",
              out: str | Path | None = None) -> dict:
    """One study stage: fit `model` (for augmentation: a generator, or REAL_ONLY) over every point and seed,
    write results/<dataset>/<model>/<study>.json (under `out`, default `root`) and return it."""
    from genbench.engine import map_tasks
    from genbench.params import model_device
    from genbench.provenance import provenance

    check_selection(params, dataset=dataset)
    start = time.perf_counter()
    params = dataset_params(params, dataset)
    config = settings(params, study)
    _check_selected(params, study, config, model)
    seeds = seeds_of(params)
    paths = Paths(root)
    data = PreparedData(paths.data(dataset))
    train_y = data.split("train").y.numpy()
    fractions = config["fractions" if study == "learning_curve" else "real_fractions"]
    counts = [class_counts(train_y, data.num_classes, f, config["min_per_class"]) for f in fractions]
    totals = []
    if study == "augmentation":
        available = np.bincount(train_y, minlength=data.num_classes)
        ratio = config["generated_per_real"]
        totals = [np.minimum(available, c + np.floor(ratio * c + 0.5).astype(np.int64)) for c in counts]
    if study == "learning_curve":
        kinds, fitted = ["fit"], model
    elif model == REAL_ONLY:
        kinds, fitted = ["fit", "total"], config["classifier"]
    else:
        kinds, fitted = ["augment"], model
    devices = {model_device(build_model(params, m), device_of(params)).type
               for m in {fitted, config.get("classifier", fitted)}}
    device = torch.device("cpu") if devices == {"cpu"} else device_of(params)
    # longest first: the largest subsets
    tasks = [(kind, seed, p) for p in reversed(range(len(fractions))) for kind in kinds for seed in seeds]
    job = StudyJob(params, study, model, config, str(paths.data(dataset)), counts, totals)
    results = map_tasks(_study_task, tasks, f"{dataset}/{study}/{model}", gpu=device.type == "cuda", job=job)
    by_task = {r.pop("task"): r for r in results}

    points = []
    for p, fraction in enumerate(fractions):
        point = _point([by_task[(kinds[0], s, p)] for s in seeds], fraction, counts[p])
        if study == "augmentation" and model != REAL_ONLY:
            point["n_generated"] = int(np.floor(config["generated_per_real"] * counts[p] + 0.5).sum())
        if "total" in kinds:
            point["same_total"] = _point([by_task[("total", s, p)] for s in seeds], fraction, totals[p])
        points.append(point)
    probe = build_model(params, fitted)
    record = {
        "dataset": dataset, "study": study, "model": model, "kind": probe.kind if study == "learning_curve" else None,
        "fitted": fitted, "hyperparameters": probe.get_params(), "seeds": seeds, "settings": config,
        "n_train_full": int(len(train_y)), "n_test": int(len(data.split("test"))), "split": "test",
        "points": points, "stage_seconds": time.perf_counter() - start, "device": str(device),
        "provenance": provenance(root),
    }
    if study == "augmentation":
        classifier = build_model(params, config["classifier"])
        record["classifier"] = {"model": config["classifier"], "hyperparameters": classifier.get_params()}
        if model != REAL_ONLY:
            record["kind"] = probe.kind
    write_json(Paths(root if out is None else out).study(dataset, study, model), record)
    return record


def run_learning_curve(params: dict[str, Any], dataset: str, model: str, root: str | Path = ".",
                       out: str | Path | None = None) -> dict:
    return run_study(params, "learning_curve", dataset, model, root=root, out=out)


def run_augmentation(params: dict[str, Any], dataset: str, model: str, root: str | Path = ".",
                     out: str | Path | None = None) -> dict:
    return run_study(params, "augmentation", dataset, model, root=root, out=out)

"""The per-(dataset, model) stage: for every seed in params.yaml, fit the model, draw samples, compute
every metric its capabilities allow and run the one-class anomaly protocol; then store, per seed, what
those metrics are computed from (`results/<dataset>/<model>/raw/`, see RAW below). Means over seeds and 95%
intervals are computed downstream from these files (`genbench.summary`, the `summary-<model>` stage),
so a new or changed statistic retrains nothing.

One stage per model, seeds inside it, keeps the DVC graph and lock small (dvc_pipelines.py says why).
The work is split into tasks of the engine (genbench.engine.map_tasks): one per seed (fit, sample,
evaluate) and one per (seed, normal class) of the anomaly protocol. Each runs on a single-threaded
worker: one thread per task makes a seed's numbers independent of the number of workers and cores, and
these small models gain little from a second thread (gan: 17.5 s with one, 17.1 s with two) while two
workers nearly halve the wall time. A task reads the job's files itself (`Job`: paths, not arrays).
"""

from __future__ import annotations

import csv
import inspect
import io
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genbench.config import ConfigError
from genbench.data.prepare import PreparedData, cached_prepared
from genbench.io import atomic_directory, write_json, write_text
from genbench.models.base import Model, capabilities
from genbench.params import Paths, build_model, check_selection, dataset_params, device_of, model_device, protocol, seeds_of
from genbench.provenance import model_size, provenance
from genbench.sampling import draw_samples


@dataclass(frozen=True)
class Job:
    """What every task of a model stage reads: small, so that it travels to the workers with each task."""

    params: dict
    dataset: str
    model_name: str
    data_dir: str
    evaluator_dir: str
    device_name: str
    model_dir: str  # temporary directories, renamed into place when every task succeeded
    samples_dir: str
    figure_seed: int  # the seed whose samples become the grid and figures

    @property
    def data(self) -> PreparedData:
        return cached_prepared(self.data_dir)

    @property
    def evaluator(self) -> tuple:  # (network, record)
        from genbench.evaluator import cached_evaluator

        return cached_evaluator(self.evaluator_dir)

    @property
    def device(self) -> torch.device:
        return torch.device(self.device_name)




# --- tasks ------------------------------------------------------------------------------------------


def _seed_task(seed: int, job: Job) -> dict:
    """Fit with `seed`, save, reload (as a later reader would), sample and evaluate."""
    model = build_model(job.params, job.model_name)
    train = job.data.split("train")
    # A fit that takes `val` logs held-out losses per epoch (the validation curve); it never learns from them.
    held_out = {"val": job.data.split("val")} if "val" in inspect.signature(model.fit).parameters else {}
    start = time.perf_counter()
    model.fit(train, seed=seed, **held_out)
    fit_seconds = time.perf_counter() - start
    history = model.history
    size = model_size(model)
    directory = Path(job.model_dir) / f"seed-{seed}"
    shutil.rmtree(directory, ignore_errors=True)  # left by a worker that died here: the task reruns
    model.save(directory)
    model = Model.load(directory)
    start = time.perf_counter()
    record, per_image, sample_info = evaluate_seed(job, model, seed)
    record["cost"] = {"fit_seconds": fit_seconds, "evaluate_seconds": time.perf_counter() - start,
                      "device": str(job.device)}
    record["size"] = size
    raw = sample_info.pop("raw", {})
    return {"task": "seed", "seed": seed, "record": record, "per_image": per_image, "history": history,
            "sample_info": sample_info, "raw": raw}


def _one_class_task(seed: int, normal: int, job: Job) -> dict:
    """One-class protocol (Ruff et al. 2018): a fresh model on class `normal` only, scores for the whole test split."""
    from genbench.metrics.likelihood import model_input

    start = time.perf_counter()
    train, test = job.data.split("train"), job.data.split("test")
    model = build_model(job.params, job.model_name).fit(train.subset(train.y == normal, name=f"train class {normal}"),
                                                         seed=seed)
    if hasattr(model, "anomaly_score"):
        scores, name = torch.as_tensor(model.anomaly_score(test.x)), "anomaly_score()"
    else:
        scores = -torch.as_tensor(model.log_prob(model_input(model, job.data, "test", seed=seed)))
        name = f"-log_prob() ({model.likelihood_space} space)"
    scores = scores.double().cpu().numpy()
    if not np.isfinite(scores).all():
        raise ValueError(f"{job.model_name}: anomaly scores for normal class {normal}, seed {seed} contain NaN or inf")
    return {"task": "one_class", "seed": seed, "class": normal, "scores": scores, "score": name,
            "seconds": time.perf_counter() - start}


def _run(task: tuple, job: Job) -> dict:
    return _seed_task(task[1], job) if task[0] == "seed" else _one_class_task(task[1], task[2], job)




# --- evaluation of one seed ---------------------------------------------------------------------------


def evaluate_seed(job: Job, model: Any, seed: int) -> tuple[dict, dict, dict]:
    """One seed's record (today's per-model record), its per-test-image values for the bootstrap, and
    what it sampled (grid and figures are drawn for `job.figure_seed` only)."""
    from genbench.evaluator import predict
    from genbench.metrics.classification import classification_record
    from genbench.metrics.fid import frechet_distance
    from genbench.metrics.likelihood import log_likelihood_per_image, model_input, nll_record
    from genbench.metrics.representation import linear_probe

    data = job.data
    test = data.split("test")
    caps = capabilities(model)
    record: dict[str, Any] = {"seed": seed}
    per_image: dict[str, np.ndarray] = {}
    raw: dict[str, np.ndarray] = {}
    if "classify" in caps:
        proba = torch.as_tensor(np.asarray(model.predict_proba(test.x)), dtype=torch.float64)
        record["classification"] = classification_record(proba, test.y, data.num_classes, split="test")
        proba = proba.clamp_min(0)
        proba = proba / proba.sum(1, keepdim=True)
        per_image["classification.accuracy"] = (proba.argmax(1) == test.y).double().numpy()
        true = proba[torch.arange(len(test.y)), test.y].clamp(np.finfo(np.float64).eps, 1.0)
        per_image["classification.log_loss"] = (-true.log()).numpy()
        raw["test_proba"] = proba.numpy()
    if "density" in caps:
        x = model_input(model, data, "test", seed=seed)
        common = dict(space=model.likelihood_space, dim=test.dim, levels=data.levels, split="test")
        log_prob = torch.as_tensor(model.log_prob(x))
        record["likelihood"] = nll_record(log_prob, info=model.likelihood_info, **common)
        nll = -log_likelihood_per_image(log_prob, model.likelihood_space, test.dim, data.levels).numpy()
        per_image["likelihood.nll_nats"] = nll
        per_image["likelihood.bits_per_dim"] = nll / (test.dim * math.log(2))
        if callable(getattr(model, "elbo", None)):
            record["likelihood_extra"] = [nll_record(torch.as_tensor(model.elbo(x)), info=model.elbo_info, **common)]
    if "represent" in caps:
        record["linear_probe"], per_image["linear_probe.accuracy"] = linear_probe(model, data.split("train"), test,
                                                                                  seed=seed)
    net, evaluator = job.evaluator
    sample_info: dict[str, Any] = {"capable": "generate" in caps}
    if "generate" in caps:
        from genbench.metrics.sample_quality import evaluator_features

        samples, labels, sample_info = draw_samples(job, model, seed)
        record.update(sample_quality(job, model, samples, labels, seed))
        if "cas" in record:
            per_image["cas.accuracy"] = record["cas"].pop("correct")
        raw["samples"] = torch.round(samples * (data.levels - 1)).to(torch.uint8).numpy()
        raw["sample_features"] = evaluator_features(net, samples).float().numpy()
        if labels is not None:
            raw["sample_labels"] = labels.numpy()
    if callable(getattr(model, "extra_metrics", None)):
        def classify(images: torch.Tensor) -> torch.Tensor:
            return predict(net, images).argmax(1)

        def fid(real: torch.Tensor, fake: torch.Tensor) -> float:
            return frechet_distance(net, evaluator["feature_dim"], real, fake)

        record["extra"] = model.extra_metrics(test, classify=classify, fid=fid)
    sample_info["raw"] = raw
    return record, per_image, sample_info


def sample_quality(job: Job, model: Any, samples: torch.Tensor, labels: torch.Tensor | None, seed: int) -> dict:
    """FID, precision/recall/density/coverage, memorisation, and CAS for conditional samples.

    A model whose samples live in another domain than the data (cyclegan: translated images)
    provides `sample_domain(x)`, mapping real images into that domain; the reference and training
    images are then compared in that domain."""
    from genbench.metrics.fid import frechet_distance
    from genbench.metrics.sample_quality import classification_accuracy_score, evaluator_features, memorisation, prdc

    proto = protocol(job.params)
    net, evaluator = job.evaluator
    data = job.data
    reference = data.split(proto["fid_reference_split"]).x
    train_x, test_x = data.split("train").x, data.split("test").x
    domain = getattr(model, "sample_domain", None)
    reference_domain = None  # the images as they are
    if callable(domain):
        reference, train_x, test_x = domain(reference), domain(train_x), domain(test_x)
        reference_domain = getattr(model, "sample_domain_label", f"{job.model_name}.sample_domain() of the images")
    features = {"features": "evaluator-cnn", "features_sha256": evaluator["sha256"], "feature_dim": evaluator["feature_dim"],
                "reference_split": proto["fid_reference_split"], "seed": seed}
    if reference_domain:
        features["reference_domain"] = reference_domain
    out = {"fid": {"value": frechet_distance(net, evaluator["feature_dim"], reference, samples),
                   "n_generated": len(samples), "n_reference": len(reference), **features}}
    out["prdc"] = {**prdc(evaluator_features(net, reference), evaluator_features(net, samples), k=proto["prdc_k"]),
                   "method": "Kynkäänniemi et al. 2019 (precision, recall); Naeem et al. 2020 (density, coverage)",
                   **features}
    out["memorisation"] = {**memorisation(train_x, test_x, samples), "space": "pixels (L2)", "seed": seed}
    if reference_domain:
        out["memorisation"]["reference_domain"] = reference_domain
    if labels is not None:
        recipe = evaluator.get("recipe") or {}
        settings = dict(test=data.split("test"), image_shape=tuple(samples.shape[1:]), num_classes=data.num_classes,
                        feature_dim=evaluator["feature_dim"], epochs=recipe.get("epochs", 30),
                        batch_size=recipe.get("batch_size", 64), lr=recipe.get("lr", 1e-3), seed=seed, device=job.device)
        cas = classification_accuracy_score(samples, labels, **settings)
        # The reference is the same classifier, recipe and number of steps on as many real training images
        # with the samples' class counts, so the gap measures the samples and not the training set's size.
        real_x, real_y = matched_real_images(data.split("train"), labels, seed)
        real = classification_accuracy_score(real_x, real_y, **settings)
        real.pop("correct")
        out["cas"] = {**cas, "real_accuracy": real["accuracy"], "gap": real["accuracy"] - cas["accuracy"],
                      "split": "test", "features_sha256": evaluator["sha256"],
                      "reference": f"the same classifier trained with the same recipe and steps on {len(real_y)} real "
                                   f"training images with the samples' class counts (drawn with seed {seed})",
                      "classifier": "the evaluator architecture and training recipe (Ravuri & Vinyals 2019)"}
    return out


def matched_real_images(train: Any, labels: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Real training images with the class counts of `labels`, drawn without replacement per class."""
    generator = torch.Generator().manual_seed(seed)
    picked = []
    for c, count in enumerate(torch.bincount(labels.long(), minlength=train.num_classes).tolist()):
        members = torch.nonzero(train.y == c).flatten()
        if count > len(members):
            raise ValueError(f"CAS reference: {count} samples of class {c} but only {len(members)} training images "
                             f"of it; lower protocol.fid_samples")
        picked.append(members[torch.randperm(len(members), generator=generator)[:count]])
    index = torch.cat(picked)
    return train.x[index], train.y[index]


# --- the stage ------------------------------------------------------------------------------------------


def run_model(params: dict[str, Any], dataset: str, model_name: str, root: str | Path = ".",
              out: str | Path | None = None) -> dict:
    """Train, sample and evaluate `model_name` on `dataset` once per seed; store the seeds' records and raw
    outputs (`write_raw`) for the summary stage, under `out` (default: `root`). Returns the stage record."""
    from genbench.engine import cluster_size, map_tasks
    from genbench.evaluator import check_fits, load_evaluator
    from genbench.metrics import anomaly as anomaly_metrics

    check_selection(params, dataset=dataset, model=model_name)
    params = dataset_params(params, dataset)
    stage_start = time.perf_counter()
    paths, written = Paths(root), Paths(root if out is None else out)
    seeds = seeds_of(params, model_name)
    proto = protocol(params)
    probe = build_model(params, model_name)  # checks the hyperparameters before any work
    device = model_device(probe, device_of(params))
    data = PreparedData(paths.data(dataset))
    check_fits(load_evaluator(paths.evaluator(dataset))[1], data, paths.evaluator(dataset))
    caps = capabilities(probe)
    normal = proto["anomaly"]["normal_classes"]
    classes = list(range(data.num_classes)) if normal == "all" else normal
    if not isinstance(classes, list) or not all(isinstance(c, int) and 0 <= c < data.num_classes for c in classes):
        raise ConfigError(f"params.yaml: 'protocol.anomaly.normal_classes' must be 'all' or a list of class indices "
                          f"in 0..{data.num_classes - 1}")
    not_applicable = {}
    if "classify" not in caps:
        not_applicable["classification"] = "no predict_proba()"
    if "density" not in caps:
        not_applicable["likelihood"] = "no log_prob()"
    if "generate" not in caps:
        for key in ("fid", "prdc", "memorisation"):
            not_applicable[key] = f"{model_name} has no sample() method"
    if probe.kind == "discriminative":
        not_applicable["anomaly"] = "a classifier needs two or more classes to train; the one-class protocol gives it one"
    elif "detect" not in caps and "density" not in caps:
        not_applicable["anomaly"] = f"{model_name} has neither anomaly_score() nor log_prob()"
    elif model_name in proto["anomaly"]["skip_models"]:
        not_applicable["anomaly"] = f"not run on {dataset}: listed in protocol.anomaly.skip_models (params.yaml says why)"
    one_class = "anomaly" not in not_applicable

    # longest first: the seeds' full fits, then the one-class fits
    tasks = [("seed", s) for s in seeds] + ([("one_class", s, c) for s in seeds for c in classes] if one_class else [])
    with atomic_directory(written.model(dataset, model_name)) as model_dir, \
            atomic_directory(written.samples(dataset, model_name)) as samples_dir:
        job = Job(params, dataset, model_name, str(paths.data(dataset)), str(paths.evaluator(dataset)), str(device),
                  str(model_dir), str(samples_dir), seeds[0])
        results = map_tasks(_run, tasks, f"{dataset}/{model_name}", gpu=device.type == "cuda", job=job)
        by_seed = {r["seed"]: r for r in results if r["task"] == "seed"}
        sample_info = by_seed[seeds[0]]["sample_info"]
        if not sample_info["capable"]:
            sample_info["reason"] = f"{model_name} has no sample() method"
        write_json(Path(samples_dir) / "info.json", sample_info)

    test_y = data.split("test").y.numpy()
    records = []
    scores = np.zeros((len(seeds), len(classes), len(test_y))) if one_class else None
    for i, seed in enumerate(seeds):
        record = by_seed[seed]["record"]
        if one_class:
            fits = {r["class"]: r for r in results if r["task"] == "one_class" and r["seed"] == seed}
            per_class = {}
            for j, c in enumerate(classes):
                scores[i, j] = fits[c]["scores"]
                per_class[str(c)] = anomaly_metrics.auroc(torch.from_numpy(fits[c]["scores"]), torch.from_numpy(test_y != c))
            record["anomaly"] = {"auroc_mean": float(np.mean(list(per_class.values()))), "auroc_per_class": per_class,
                                 "normal_classes": classes, "protocol": anomaly_metrics.PROTOCOL,
                                 "score": fits[classes[0]]["score"], "split": "test", "n": len(test_y)}
            record["cost"]["anomaly_seconds"] = sum(f["seconds"] for f in fits.values())
        cost = record["cost"]
        cost["total_seconds"] = sum(v for k, v in cost.items() if k.endswith("_seconds"))
        records.append(record)

    record = {
        "dataset": dataset, "model": model_name, "kind": probe.kind, "capabilities": caps,
        "hyperparameters": probe.get_params(), "seeds": seeds, "not_applicable": not_applicable,
        "per_seed": records,
        "stage_seconds": time.perf_counter() - stage_start,
        "workers": cluster_size(),
        "device": str(device),
        "provenance": provenance(root),
    }
    _write_curves(written.curve(dataset, model_name), [(s, by_seed[s]["history"]) for s in seeds])
    write_raw(written.raw(dataset, model_name), record, test_y, classes if one_class else None,
              {seed: {**by_seed[seed]["raw"], **{f"per_image.{k}": v for k, v in by_seed[seed]["per_image"].items()},
                      **({"anomaly_scores": scores[i]} if one_class else {})}
               for i, seed in enumerate(seeds)})
    return record


# What a model stage stores per seed in results/<dataset>/<model>/raw/seed-<s>/<name>.npy (np.save: the same bytes
# for the same arrays), besides stage.json (the per-seed records, protocol and cost) and test_labels.npy.
RAW = {
    "test_proba": "float64 (n_test, n_classes): predict_proba on the test split, clipped at 0 and renormalised",
    "per_image.classification.accuracy": "float64 (n_test,): 1 where the most probable class is the label",
    "per_image.classification.log_loss": "float64 (n_test,): -log p(label | image), nats",
    "per_image.likelihood.nll_nats": "float64 (n_test,): -log p(image) in the model's likelihood space, nats",
    "per_image.likelihood.bits_per_dim": "float64 (n_test,): nll_nats / (D log 2)",
    "per_image.cas.accuracy": "float64 (n_test,): 1 where the classifier trained on the samples predicts the label",
    "per_image.linear_probe.accuracy": "float64 (n_test,): 1 where the linear probe on encode(x) predicts the label",
    "samples": "uint8 (n, C, H, W): the protocol's generated samples at the dataset's intensity levels "
               "(round(x (levels - 1)))",
    "sample_labels": "int64 (n,): the classes a conditional model's samples were drawn for",
    "sample_features": "float32 (n, feature_dim): the pinned evaluator's features of the samples (FID, PRDC)",
    "anomaly_scores": "float64 (n_normal_classes, n_test): one-class scores (higher = more anomalous), a row "
                      "per normal class of stage.json's anomaly_classes",
}


def write_raw(directory: Path, record: dict, test_y: np.ndarray, anomaly_classes: list[int] | None,
              arrays: dict[int, dict[str, np.ndarray]]) -> None:
    """results/<dataset>/<model>/raw/, written atomically: stage.json, test_labels.npy and one folder per seed."""
    with atomic_directory(directory) as out:
        out = Path(out)
        names = sorted({name for seed_arrays in arrays.values() for name in seed_arrays})
        unknown = set(names) - set(RAW)
        if unknown:
            raise ValueError(f"raw outputs {sorted(unknown)} are not described in genbench.runner.RAW")
        write_json(out / "stage.json", {**record, "anomaly_classes": anomaly_classes,
                                        "files": {name: RAW[name] for name in names}})
        np.save(out / "test_labels.npy", np.asarray(test_y, dtype=np.int64))
        for seed, seed_arrays in arrays.items():
            (out / f"seed-{seed}").mkdir()
            for name, array in seed_arrays.items():
                np.save(out / f"seed-{seed}" / f"{name}.npy", np.ascontiguousarray(array))


def _write_curves(path: Path, histories: list[tuple[int, list[dict]]]) -> None:
    rows = [{"seed": seed, **row} for seed, history in histories for row in history]
    names = sorted({k for row in rows for k in row} - {"seed", "epoch"})
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["seed", "epoch", *(names or ["loss"])])
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buffer.getvalue())

"""The `compare` stage: paired verdicts for a dataset's ranked metrics, computed from the models' stored raw
outputs (`results/<dataset>/<model>/raw/`, genbench.runner.RAW) into `results/<dataset>/comparisons.json`.

Per metric (and per likelihood space for NLLs), every model that has it is compared with the best one on
the same test images (genbench.paired: one bootstrap whose image draws are shared by every model, each
model's seeds drawn from its own stream, Holm-corrected across the models compared). A model's interval is
the percentile interval of the same bootstrap, so it is never symmetric about a skewed metric nor clipped
into a tie. What is compared:

* per-image means over the test split: accuracy, log-loss, CAS and linear-probe accuracy (with a raw-pixel
  probe as a reference row), NLL and bits/dim (within one likelihood space; Parzen-window estimates are
  not likelihoods of the model and are left out), and the calibration error (ECE) of the stored class
  probabilities;
* mean one-class AUROC over normal classes;
* sample metrics of the stored samples in two feature spaces (genbench.metrics.feature_spaces): the pinned
  evaluator's bounded features (FID, KID, precision, recall, density, coverage) and the training set's
  pixel principal components (FID, KID), with the rank agreement between the spaces. FID, KID, precision
  and density draw each model's samples (from a stream of its own); recall and coverage are means over the
  reference images, so they draw the test images (drawing samples would bias them: a draw holds ~63% of the
  distinct samples);
* the data-copying test C_T (Meehan et al. 2020, genbench.metrics.copying) per seed, in the evaluator space:
  reported, not ranked (0 is ideal on both sides);
* models whose samples live in another domain (cyclegan's translations) are not ranked with unconditional
  generators.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from genbench import paired
from genbench.io import read_json, write_json
from genbench.params import Paths, check_selection, dataset_params, protocol

COMPARISONS = "comparisons.json"  # under results/<dataset>/
# metric -> (higher is better, per-image file under raw/seed-<s>/); each is also the leaderboard column
PER_IMAGE = {
    "accuracy": (True, "per_image.classification.accuracy"),
    "log_loss": (False, "per_image.classification.log_loss"),
    "nll_nats": (False, "per_image.likelihood.nll_nats"),
    "bits_per_dim": (False, "per_image.likelihood.bits_per_dim"),
    "cas": (True, "per_image.cas.accuracy"),
    "linear_probe_accuracy": (True, "per_image.linear_probe.accuracy"),
}
LIKELIHOOD = {"nll_nats", "bits_per_dim"}
# sample metric -> what its bootstrap draws: each model's generated samples, or the (shared) test images
SAMPLE_METRICS = {"fid": "generated samples", "kid": "generated samples", "precision": "generated samples",
                  "density": "generated samples", "recall": "test images", "coverage": "test images"}
LOWER_IS_BETTER = {"log_loss", "nll_nats", "bits_per_dim", "ece", "fid", "kid", "fid_pixels", "kid_pixels"}
RAW_PIXELS = "raw pixels"  # the reference row of the linear probe


def likelihood_group(likelihood: dict | None) -> str | None:
    """The group an NLL is ranked in: its likelihood space; None for a Parzen-window estimate (a kernel
    density of the samples, not the model's likelihood: never ranked with likelihoods)."""
    if not likelihood:
        return None
    return None if "parzen" in str(likelihood.get("method", "")).lower() else str(likelihood.get("space"))


def _seed_arrays(raw: Path, seeds: list[int], name: str) -> np.ndarray | None:
    files = [raw / f"seed-{s}" / f"{name}.npy" for s in seeds]
    return np.stack([np.load(f) for f in files]) if all(f.exists() for f in files) else None


@dataclass(frozen=True)
class CompareJob:
    """What every model's task reads (one object: Dask reads a task's loose arguments as graph keys)."""

    root: str
    dataset: str
    test_y: np.ndarray
    spaces: Any  # genbench.metrics.feature_spaces.SampleSpaces: the feature maps and the reference features
    copying: Any  # genbench.metrics.copying.CopyingTest in the evaluator space
    k: int
    n_resamples: int


def _point_and_draws(model: str, x: np.ndarray, job: CompareJob) -> dict:
    return {"point": float(np.mean(x)), "per_seed": x.mean(1).tolist(), "resamples": paired.image_bootstrap(
        lambda w: paired.weighted_means(x, w), model, x.shape[0], x.shape[1], job.n_resamples)}


def model_bootstraps(model: str, job: CompareJob) -> dict:
    """One model's ranked metrics under the shared image draws: {"values": {metric: {"group", "point",
    "per_seed", "resamples" (R,)}}, "skipped": {metric: why not ranked}, "copying": per-seed C_T}.
    Models are independent here, so each is a task."""
    raw = Paths(job.root).raw(job.dataset, model)
    stage = read_json(raw / "stage.json")
    seeds, first = stage["seeds"], stage["per_seed"][0]
    values: dict[str, dict] = {}
    skipped: dict[str, str] = {}
    for metric, (_, name) in PER_IMAGE.items():
        x = _seed_arrays(raw, seeds, name)
        if x is None:
            continue
        group = likelihood_group(first.get("likelihood")) if metric in LIKELIHOOD else "all"
        if group is None:
            skipped[metric] = "a Parzen-window estimate of the samples' density, not the model's likelihood"
            continue
        values[metric] = {"group": group, **_point_and_draws(model, x, job)}
    proba = _seed_arrays(raw, seeds, "test_proba")
    if proba is not None:
        bins = (first.get("classification") or {}).get("ece_bins", 15)
        ece = lambda w: np.stack([paired.weighted_ece(p, job.test_y, w, bins) for p in proba], axis=1)  # noqa: E731
        values["ece"] = {"group": "all", "point": float(ece(np.ones((1, len(job.test_y))))[0].mean()),
                         "per_seed": ece(np.ones((1, len(job.test_y))))[0].tolist(),
                         "resamples": paired.image_bootstrap(ece, model, len(seeds), len(job.test_y), job.n_resamples)}
    classes = stage.get("anomaly_classes")
    scores = _seed_arrays(raw, seeds, "anomaly_scores") if classes is not None else None
    if scores is not None:
        is_anomaly = np.stack([job.test_y != c for c in classes])
        full = paired.mean_auroc(scores, is_anomaly, np.ones((1, len(job.test_y))))[0]
        values["anomaly_auroc"] = {
            "group": "all", "point": float(full.mean()), "per_seed": full.tolist(),
            "resamples": paired.image_bootstrap(lambda w: paired.mean_auroc(scores, is_anomaly, w), model, len(seeds),
                                                len(job.test_y), job.n_resamples)}
    fid = first.get("fid")
    samples = _seed_arrays(raw, seeds, "samples") if fid is not None else None
    copying = None
    if samples is not None and fid.get("reference_domain"):
        skipped["fid"] = (f"its samples are {fid['reference_domain']}: a translation, judged in its own table, "
                          "not ranked with unconditional generators")
    elif samples is not None:
        images = [job.spaces.images(s) for s in samples]
        evaluator = [job.spaces.evaluator(x) for x in images]
        values |= _sample_bootstraps(model, np.stack(evaluator), job.spaces.reference["evaluator"], job.k,
                                     job.n_resamples)
        for space in job.spaces.second:
            features = np.stack([job.spaces.features(space, x) for x in images])
            values |= {f"{metric}_{space}": entry for metric, entry in _sample_bootstraps(
                model, features, job.spaces.reference[space], job.k, job.n_resamples, prdc=False).items()}
        copying = [job.copying(f) for f in evaluator]
    return {"seeds": seeds, "values": values, "skipped": skipped, "copying": copying}


def _sample_bootstraps(model: str, features: np.ndarray, reference: np.ndarray, k: int, n_resamples: int,
                       prdc: bool = True) -> dict:
    """FID, KID, precision and density of (n_seeds, n, d) sample features under draws of the samples (they
    are means over samples, or distances between sample distributions); recall and coverage are means over
    the reference images (is a real image inside some sample's ball, does a real image's ball hold a
    sample), so their units are the test images, drawn with the seeds. Drawing samples for these two would
    bias them (a draw holds about 63% of the distinct samples). `prdc=False`: FID and KID only."""
    frechet, kernel = paired.Frechet(reference), paired.KernelDistance(reference)
    outers = [paired.outer_products(f) for f in features]
    kernels = [kernel.parts(f) for f in features]
    parts = [_prdc_parts(reference, f, k) for f in features] if prdc else []
    names = [m for m, units in SAMPLE_METRICS.items() if units == "generated samples"][:4 if prdc else 2]

    def values(s: int, w: np.ndarray) -> np.ndarray:
        return np.stack([frechet(features[s], w, outers[s]), kernel(features[s], w, kernels[s]),
                         *(_prdc_value(metric, parts[s], w, k) for metric in names[2:])], axis=1)

    per_seed = np.stack([values(s, np.ones((1, features.shape[1])))[0] for s in range(len(features))])
    drawn = paired.sample_bootstrap(values, model, len(features), features.shape[1], n_resamples)
    out = {metric: {"group": "all", "point": float(per_seed[:, i].mean()), "per_seed": per_seed[:, i].tolist(),
                    "resamples": drawn[:, i]} for i, metric in enumerate(names)}
    for metric, ball in (("recall", "in_fake_ball"), ("coverage", "in_real_ball")) if prdc else ():
        x = np.stack([p[ball].any(1) for p in parts]).astype(np.float64)  # (n_seeds, n_reference)
        out[metric] = {"group": "all", "point": float(x.mean()), "per_seed": x.mean(1).tolist(),
                       "resamples": paired.image_bootstrap(lambda w, x=x: paired.weighted_means(x, w), model,
                                                           len(features), x.shape[1], n_resamples)}
    return out


def _prdc_parts(real: np.ndarray, fake: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """Per-sample pieces of precision, recall, density and coverage (genbench.metrics.sample_quality.prdc:
    same balls, strict inequalities) from which their value under sample multiplicities follows."""
    from scipy.spatial.distance import cdist

    def radii(x: np.ndarray) -> np.ndarray:
        return np.sort(cdist(x, x), axis=1)[:, k]  # the k-th neighbour, the point itself being the first

    distances = cdist(real, fake)  # (N, M)
    in_real_ball = distances < radii(real)[:, None]  # fake j inside B(X_i)
    return {"in_real_ball": in_real_ball, "in_fake_ball": distances < radii(fake)[None, :]}


def _prdc_value(metric: str, parts: dict[str, np.ndarray], w: np.ndarray, k: int) -> np.ndarray:
    """(B,) precision, recall, density or coverage of the samples drawn with multiplicities w (B, M)."""
    m = w.shape[1]
    if metric == "precision":
        return w @ parts["in_real_ball"].any(0).astype(np.float64) / m
    if metric == "density":
        return w @ parts["in_real_ball"].sum(0).astype(np.float64) / (k * m)
    if metric == "coverage":
        return ((w @ parts["in_real_ball"].T.astype(np.float64)) > 0).mean(1)
    return ((w @ parts["in_fake_ball"].T.astype(np.float64)) > 0).mean(1)  # recall


def compare_dataset(root: Path, dataset: str, models: list[str], job: CompareJob, references: dict | None = None,
                    map_models: Callable | None = None) -> dict:
    """Every ranked metric's paired verdicts among `models`, from their raw outputs under `root`.
    `references`: {metric: {row name: entry}} rows that are not models (the raw-pixel probe), compared as
    models are. `map_models(function, tasks, label, **shared)`: how the models' bootstraps run
    (genbench.engine.map_tasks in the stage; here, one after another)."""
    paths = Paths(root)
    for m in models:
        if not np.array_equal(np.load(paths.raw(dataset, m) / "test_labels.npy"), job.test_y):
            raise ValueError(f"{dataset}/{m}: its test labels differ from the prepared test split's: rerun its stage")
    tasks = [(m,) for m in models]
    found = (map_models(_model_task, tasks, f"{dataset}/compare", job=job) if map_models else
             [_model_task(task, job) for task in tasks])
    by_model = dict(zip(models, found))
    metrics = {}
    ranked = [*((m, h, "test images") for m, (h, _) in PER_IMAGE.items()), ("ece", False, "test images"),
              ("anomaly_auroc", True, "test images"), *((m, m not in LOWER_IS_BETTER, u) for m, u in SAMPLE_METRICS.items()),
              *((f"{m}_{space}", False, SAMPLE_METRICS[m]) for space in second_spaces(job) for m in ("fid", "kid"))]
    for metric, higher, units in ranked:
        groups: dict[str, dict[str, dict]] = {}
        for m in models:
            if metric in by_model[m]["values"]:
                entry = by_model[m]["values"][metric]
                groups.setdefault(entry["group"], {})[m] = entry
        for name, entry in ((references or {}).get(metric) or {}).items():
            groups.setdefault(entry["group"], {})[name] = entry
        if not groups:
            continue
        metrics[metric] = {"higher_is_better": higher, "units": units, "groups": {}}
        for group, entries in groups.items():
            verdict = paired.compare({m: e["point"] for m, e in entries.items()},
                                     {m: e["resamples"] for m, e in entries.items()}, higher, units)
            for m, e in entries.items():
                verdict["models"][m] |= {"n_seeds": len(e["per_seed"]), "per_seed": e["per_seed"]}
            metrics[metric]["groups"][group] = verdict
        if metric in SAMPLE_METRICS:
            metrics[metric]["space"] = "evaluator"
        elif metric.split("_", 1)[0] in ("fid", "kid") and "_" in metric:
            metrics[metric]["space"] = metric.split("_", 1)[1]
    copying = {m: _copying_summary(r["copying"], r["seeds"]) for m, r in by_model.items() if r["copying"]}
    skipped = {}
    for m, r in by_model.items():
        for metric, reason in r["skipped"].items():
            skipped.setdefault(metric, {})[m] = reason
    return {"dataset": dataset, "seeds": {m: r["seeds"] for m, r in by_model.items()}, "n_test": int(len(job.test_y)),
            "n_resamples": job.n_resamples, "confidence": paired.CONFIDENCE, "alpha": paired.ALPHA,
            "correction": "Holm (statsmodels multipletests)", "interval": "percentile interval of the same bootstrap",
            "feature_spaces": job.spaces.describe() if job.spaces is not None else {},
            "metrics": metrics, "rank_agreement": rank_agreement(metrics, second_spaces(job)),
            "copying": {"method": copying_method(job), "models": copying} if copying else {},
            "not_ranked": skipped}


def _copying_summary(per_seed: list[dict], seeds: list[int]) -> dict:
    ct = [r["ct"] for r in per_seed]
    return {"ct": float(np.mean(ct)), "per_seed": ct, "p_copying": [r["p_copying"] for r in per_seed],
            "cells_used": [r["cells_used"] for r in per_seed], "seeds": seeds,
            "samples_in_used_cells": float(np.mean([r["samples_in_used_cells"] for r in per_seed]))}


def copying_method(job: CompareJob) -> str:
    from genbench.metrics.copying import METHOD

    test = job.copying
    return (f"{METHOD}; {test.cells} cells, cells with fewer than {test.min_samples} samples left out, in the "
            f"evaluator space; per seed, then the mean over seeds")


def second_spaces(job: CompareJob) -> list[str]:
    return job.spaces.second if job.spaces is not None else []


def rank_agreement(metrics: dict, spaces: list[str] = ("pixels",)) -> list[dict]:
    """Kendall's tau (scipy.stats.kendalltau, tau-b) between the models' values of FID (and of KID) in the
    evaluator space and in each other space, over the models that have both."""
    from scipy.stats import kendalltau

    out = []
    for first, space in ((m, s) for s in spaces for m in ("fid", "kid")):
        second = f"{first}_{space}"
        a = (metrics.get(first) or {}).get("groups", {}).get("all", {}).get("models", {})
        b = (metrics.get(second) or {}).get("groups", {}).get("all", {}).get("models", {})
        both = sorted(set(a) & set(b))
        if len(both) < 3:
            continue
        tau = kendalltau([a[m]["value"] for m in both], [b[m]["value"] for m in both])
        out.append({"metric": first, "spaces": ["evaluator", space], "kendall_tau": float(tau.statistic),
                    "p": float(tau.pvalue), "n_models": len(both)})
    return out


def _model_task(task: tuple, job: CompareJob) -> dict:
    return model_bootstraps(task[0], job)


def raw_pixel_probe(train: Any, test: Any, n_resamples: int) -> dict:
    """The linear probe (genbench.metrics.representation: standardised inputs, logistic regression) on the
    pixels themselves: the row a model's representation has to beat. Deterministic: one seed."""
    from genbench.metrics.representation import linear_probe

    class Pixels:
        def encode(self, x):
            return x

    _, correct = linear_probe(Pixels(), train, test, seed=0)
    x = correct[None, :]
    return {"group": "all", "point": float(x.mean()), "per_seed": [float(x.mean())], "resamples": paired.image_bootstrap(
        lambda w: paired.weighted_means(x, w), RAW_PIXELS, 1, x.shape[1], n_resamples)}


def real_data_row(spaces: Any, copying: Any, train: Any, held_out: Any, n: int, job: CompareJob) -> dict:
    """The sample metrics of `n` real training images (drawn once, seed 0) in place of samples: the values
    real data reaches at the models' sample count, with the same intervals; and the copying test of held-out
    (validation) images, which no model trained on. Not ranked."""
    import torch

    index = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:n]
    images = train[index]
    evaluator = spaces.evaluator(images)
    rows = _sample_bootstraps("real data", evaluator[None], spaces.reference["evaluator"], job.k, job.n_resamples)
    for space in spaces.second:
        rows |= {f"{metric}_{space}": entry for metric, entry in _sample_bootstraps(
            "real data", spaces.features(space, images)[None], spaces.reference[space], job.k, job.n_resamples,
            prdc=False).items()}
    out = {}
    for metric, entry in rows.items():
        low, high = paired.percentile_interval(paired.centred(entry["resamples"], entry["point"]))
        out[metric] = {"value": entry["point"], "low": low, "high": high}
    return {"n": len(index), "split": "train", "metrics": out,
            "copying_ct": copying(spaces.evaluator(held_out), min_samples=5)["ct"], "copying_split": "val",
            "description": f"{len(index)} real training images in place of a model's samples; C_T of the "
                           f"{len(held_out)} validation images (cells with at least 5 of them)"}


def run_compare(params: dict[str, Any], dataset: str, root: str | Path = ".", out: str | Path | None = None,
                n_resamples: int = paired.N_RESAMPLES) -> dict:
    """The `compare` stage: results/<dataset>/comparisons.json from every model's raw/ folder."""
    from genbench.data.prepare import PreparedData
    from genbench.engine import map_tasks
    from genbench.evaluator import cached_evaluator
    from genbench.metrics.copying import CopyingTest
    from genbench.metrics.feature_spaces import SampleSpaces

    check_selection(params, dataset=dataset)
    params = dataset_params(params, dataset)
    paths = Paths(root)
    models = [m for m in params.get("models") or {} if (paths.raw(dataset, m) / "stage.json").exists()]
    missing = [m for m in params.get("models") or {} if m not in models]
    if missing:
        raise FileNotFoundError(f"{dataset}: no raw outputs for {', '.join(missing)}: run their stages first "
                                f"(`uv run dvc repro pipelines/{dataset}/dvc.yaml`)")
    net, _ = cached_evaluator(paths.evaluator(dataset))
    data = PreparedData(paths.data(dataset))
    train, test = data.split("train"), data.split("test")
    reference = data.split(protocol(params)["fid_reference_split"])
    spaces = SampleSpaces(net, train.x, reference.x, data.levels, networks=params.get("feature_networks") or {})
    copying = CopyingTest(spaces.train_evaluator, spaces.evaluator(test.x), cells=min(10, len(test) // 20), seed=0)
    job = CompareJob(str(root), dataset, test.y.numpy(), spaces, copying, protocol(params)["prdc_k"], n_resamples)
    references = {"linear_probe_accuracy": {RAW_PIXELS: raw_pixel_probe(train, test, n_resamples)}}
    result = compare_dataset(Path(root), dataset, models, job, references, map_models=map_tasks)
    result["real_data"] = real_data_row(spaces, copying, train.x, data.split("val").x, protocol(params)["fid_samples"],
                                        job)
    write_json(Paths(root if out is None else out).results(dataset) / COMPARISONS, result)
    return result

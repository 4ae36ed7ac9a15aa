"""The `compare` stage: paired verdicts for a dataset's ranked metrics, computed from the models' stored raw
outputs (`results/<dataset>/<model>/raw/`, genbench.runner.RAW) into `results/<dataset>/comparisons.json`.

Per metric (and per likelihood space for NLLs), every model that has it is compared with the best one on
the same seeds and the same test images (genbench.paired: one bootstrap whose draws are shared by every
model, Holm-corrected across the models compared). A model's interval is the percentile interval of the
same bootstrap, so it is never symmetric about a skewed metric nor clipped into a tie. What is compared:

* per-image means over the test split: accuracy, log-loss (classification), NLL and bits/dim (likelihood,
  within one likelihood space), with test images drawn together with the seeds;
* mean one-class AUROC over normal classes, with test images drawn together with the seeds;
* sample metrics on the pinned evaluator's features of the stored samples, against the test split's
  features: FID, KID, precision and density with each model's samples drawn (from a stream of its own)
  together with the seeds; recall and coverage, means over the reference images, with the test images drawn
  together with the seeds (drawing samples would bias them: a draw holds ~63% of the distinct samples);
* not compared (no per-image output is stored for them): CAS and the linear probe; models whose samples
  live in another domain (cyclegan's translations) are not ranked with unconditional generators.
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
# metric -> (higher is better, per-image file under raw/seed-<s>/, the leaderboard column)
PER_IMAGE = {
    "accuracy": (True, "per_image.classification.accuracy"),
    "log_loss": (False, "per_image.classification.log_loss"),
    "nll_nats": (False, "per_image.likelihood.nll_nats"),
    "bits_per_dim": (False, "per_image.likelihood.bits_per_dim"),
}
# metric -> what its bootstrap draws: each model's generated samples, or the (shared) reference test images
SAMPLE_METRICS = {"fid": "generated samples", "kid": "generated samples", "precision": "generated samples",
                  "density": "generated samples", "recall": "test images", "coverage": "test images"}
LOWER_IS_BETTER = {"fid", "kid"}
# Computed, with their paired comparison, but not ranked in the report, and why.
UNRANKED = {"kid": "on the pinned evaluator's unbounded features the cubic kernel is dominated by a few large "
                   "feature values (digits: estimates of order 100, negative for the best models), so KID is "
                   "kept here and not ranked until it is computed on bounded features"}
NOT_COMPARED = {
    "cas": "no per-image output is stored for CAS: shown without a paired verdict",
    "linear_probe_accuracy": "no per-image output is stored for the linear probe: shown without a paired verdict",
    "ece": "calibration error is shown without a paired verdict",
}


def _seed_arrays(raw: Path, seeds: list[int], name: str) -> np.ndarray | None:
    files = [raw / f"seed-{s}" / f"{name}.npy" for s in seeds]
    return np.stack([np.load(f) for f in files]) if all(f.exists() for f in files) else None


def model_bootstraps(model: str, raw: Path, seeds: list[int], test_y: np.ndarray, reference: np.ndarray | None,
                     sha: str | None, k: int, n_resamples: int) -> dict:
    """One model's ranked metrics under the shared draws: {"values": {metric: {"group", "point", "resamples"
    (R,)}}, "skipped": {metric: why it is not ranked}}. Models are independent here, so each is a task."""
    stage = read_json(raw / "stage.json")
    values: dict[str, dict] = {}
    for metric, (_, name) in PER_IMAGE.items():
        x = _seed_arrays(raw, seeds, name)
        if x is not None:
            space = (stage["per_seed"][0].get("likelihood") or {}).get("space") if "likelihood" in name else "all"
            values[metric] = {"group": str(space), "point": float(np.mean(x)), "resamples": paired.image_bootstrap(
                lambda w, x=x: paired.weighted_means(x, w), len(seeds), x.shape[1], n_resamples)}
    classes = stage.get("anomaly_classes")
    scores = _seed_arrays(raw, seeds, "anomaly_scores") if classes is not None else None
    if scores is not None:
        is_anomaly = np.stack([test_y != c for c in classes])
        values["anomaly_auroc"] = {
            "group": "all", "point": float(paired.mean_auroc(scores, is_anomaly, np.ones((1, len(test_y)))).mean()),
            "resamples": paired.image_bootstrap(lambda w: paired.mean_auroc(scores, is_anomaly, w), len(seeds),
                                                len(test_y), n_resamples)}
    skipped = {}
    fid = stage["per_seed"][0].get("fid")
    features = _seed_arrays(raw, seeds, "sample_features") if fid is not None and reference is not None else None
    if features is not None and fid.get("reference_domain"):
        skipped["fid"] = (f"its samples are {fid['reference_domain']}: a translation, judged in its own table, "
                          "not ranked with unconditional generators")
    elif features is not None and fid.get("features_sha256") != sha:
        skipped["fid"] = "its FID was computed on other features than the pinned evaluator's"
    elif features is not None:
        values |= _sample_bootstraps(model, features.astype(np.float64), reference, k, n_resamples)
    return {"values": values, "skipped": skipped}


def _sample_bootstraps(model: str, features: np.ndarray, reference: np.ndarray, k: int, n_resamples: int) -> dict:
    """FID, KID, precision and density of (n_seeds, n, d) sample features under one draw of the samples (they
    are means over samples, or distances between sample distributions); recall and coverage are means over
    the reference images (is a real image inside some sample's ball, does a real image's ball hold a
    sample), so their units are the test images, drawn with every model's seeds and images. Drawing samples
    for these two would bias them (a draw holds about 63% of the distinct samples)."""
    frechet, kernel = paired.Frechet(reference), paired.KernelDistance(reference)
    outers = [paired.outer_products(f) for f in features]
    kernels = [kernel.parts(f) for f in features]
    parts = [_prdc_parts(reference, f, k) for f in features]
    names = [m for m, units in SAMPLE_METRICS.items() if units == "generated samples"]

    def values(s: int, w: np.ndarray) -> np.ndarray:
        return np.stack([frechet(features[s], w, outers[s]), kernel(features[s], w, kernels[s]),
                         *(_prdc_value(metric, parts[s], w, k) for metric in names[2:])], axis=1)

    full = np.mean([values(s, np.ones((1, features.shape[1])))[0] for s in range(len(features))], axis=0)
    drawn = paired.sample_bootstrap(values, model, len(features), features.shape[1], n_resamples)
    out = {metric: {"group": "all", "point": float(full[i]), "resamples": drawn[:, i]} for i, metric in enumerate(names)}
    for metric, ball in (("recall", "in_fake_ball"), ("coverage", "in_real_ball")):
        x = np.stack([p[ball].any(1) for p in parts]).astype(np.float64)  # (n_seeds, n_reference)
        out[metric] = {"group": "all", "point": float(x.mean()), "resamples": paired.image_bootstrap(
            lambda w, x=x: paired.weighted_means(x, w), len(features), x.shape[1], n_resamples)}
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


def compare_dataset(root: Path, dataset: str, models: list[str], reference: np.ndarray | None, sha: str | None,
                    k: int, n_resamples: int = paired.N_RESAMPLES, map_models: Callable | None = None) -> dict:
    """Every ranked metric's paired verdicts among `models`, from their raw outputs under `root`.
    `map_models(function, tasks, label, **shared)`: how the models' bootstraps run (genbench.engine.map_tasks
    in the stage; here, one after another)."""
    paths = Paths(root)
    raws = {m: paths.raw(dataset, m) for m in models}
    seeds = sorted(set.intersection(*(set(read_json(raws[m] / "stage.json")["seeds"]) for m in models)))
    if not seeds:
        raise ValueError(f"{dataset}: the models share no seed, so nothing can be compared pairwise")
    test_y = np.load(raws[models[0]] / "test_labels.npy")
    for m in models:
        if not np.array_equal(np.load(raws[m] / "test_labels.npy"), test_y):
            raise ValueError(f"{dataset}/{m}: its test labels differ from {models[0]}'s: rerun its stage")
    job = CompareJob(str(root), dataset, seeds, test_y, reference, sha, k, n_resamples)
    tasks = [(m,) for m in models]
    found = (map_models(_model_task, tasks, f"{dataset}/compare", job=job) if map_models else
             [_model_task(task, job) for task in tasks])
    by_model = dict(zip(models, found))
    metrics = {}
    for metric, higher, units in [*((m, h, "test images") for m, (h, _) in PER_IMAGE.items()),
                                  ("anomaly_auroc", True, "test images"),
                                  *((m, m not in LOWER_IS_BETTER, u) for m, u in SAMPLE_METRICS.items())]:
        groups: dict[str, dict[str, dict]] = {}
        for m in models:
            if metric in by_model[m]["values"]:
                entry = by_model[m]["values"][metric]
                groups.setdefault(entry["group"], {})[m] = entry
        if groups:
            metrics[metric] = {"higher_is_better": higher, "units": units, "groups": {
                group: paired.compare({m: e["point"] for m, e in entries.items()},
                                      {m: e["resamples"] for m, e in entries.items()}, higher, units)
                for group, entries in groups.items()}}
    skipped = {m: r["skipped"]["fid"] for m, r in by_model.items() if "fid" in r["skipped"]}
    unranked = {metric: {**metrics.pop(metric), "reason": reason} for metric, reason in UNRANKED.items()
                if metric in metrics}
    return {"dataset": dataset, "seeds": seeds, "n_test": int(len(test_y)), "n_resamples": n_resamples,
            "confidence": paired.CONFIDENCE, "alpha": paired.ALPHA, "correction": "Holm (statsmodels multipletests)",
            "interval": "percentile interval of the same bootstrap", "metrics": metrics, "unranked": unranked,
            "not_ranked": {"fid": skipped, **{metric: reason for metric, reason in NOT_COMPARED.items()}}}


@dataclass(frozen=True)
class CompareJob:
    """What every model's task reads (one object: Dask reads a task's loose arguments as graph keys)."""

    root: str
    dataset: str
    seeds: list
    test_y: np.ndarray
    reference: np.ndarray | None
    sha: str | None
    k: int
    n_resamples: int


def _model_task(task: tuple, job: CompareJob) -> dict:
    return model_bootstraps(task[0], Paths(job.root).raw(job.dataset, task[0]), job.seeds, job.test_y, job.reference,
                            job.sha, job.k, job.n_resamples)


def run_compare(params: dict[str, Any], dataset: str, root: str | Path = ".", out: str | Path | None = None) -> dict:
    """The `compare` stage: results/<dataset>/comparisons.json from every model's raw/ folder."""
    import torch

    from genbench.data.prepare import PreparedData
    from genbench.evaluator import cached_evaluator
    from genbench.metrics.sample_quality import evaluator_features

    check_selection(params, dataset=dataset)
    params = dataset_params(params, dataset)
    paths = Paths(root)
    models = [m for m in params.get("models") or {} if (paths.raw(dataset, m) / "stage.json").exists()]
    missing = [m for m in params.get("models") or {} if m not in models]
    if missing:
        raise FileNotFoundError(f"{dataset}: no raw outputs for {', '.join(missing)}: run their stages first "
                                f"(`uv run dvc repro pipelines/{dataset}/dvc.yaml`)")
    net, record = cached_evaluator(paths.evaluator(dataset))
    with torch.no_grad():
        reference = evaluator_features(net, PreparedData(paths.data(dataset)).split(
            protocol(params)["fid_reference_split"]).x).double().numpy()
    from genbench.engine import map_tasks

    result = compare_dataset(Path(root), dataset, models, reference, record["sha256"], protocol(params)["prdc_k"],
                             map_models=map_tasks)
    write_json(Paths(root if out is None else out).results(dataset) / COMPARISONS, result)
    return result

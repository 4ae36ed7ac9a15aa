"""The `summary-<model>` stage: a model's means over seeds and 95% intervals, computed from what its model
stage stored (`results/<dataset>/<model>/raw/`: the seeds' records and per-image arrays, genbench.runner.RAW),
into `results/<dataset>/<model>/summary.json`. Its code is the statistics, not the model: editing `genbench.stats` or
this file reruns these stages and the report, and retrains nothing. The studies' intervals
(`accuracy_interval`) are likewise computed by the report from the studies' per-image outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from genbench.io import read_json, write_json
from genbench.params import Paths, check_selection

# Leaves of a record that count things or set the protocol: no interval, no average.
COUNT_KEYS = {"n", "ece_bins", "levels", "dim", "samples", "n_generated", "n_reference", "feature_dim", "seed",
              "k", "n_real", "n_fake", "n_train", "n_test", "n_samples", "n_train_generated", "epochs", "quantile",
              "reference_share", "nll_stderr_nats", "threshold", "parameters", "cores"}



def _numeric(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def mean_record(records: list[dict]) -> dict:
    """Numeric leaves averaged over the seeds' records; other leaves (estimator, method, hashes) must agree."""
    first = records[0]
    out: dict[str, Any] = {}
    for key, value in first.items():
        values = [r.get(key) for r in records]
        if key == "seed":
            continue
        if isinstance(value, dict):
            out[key] = mean_record([v if isinstance(v, dict) else {} for v in values])
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            out[key] = [mean_record([r[key][i] for r in records]) for i in range(len(value))]
        elif _numeric(value) and key not in COUNT_KEYS and all(_numeric(v) for v in values):
            out[key] = float(np.mean(values))
        else:
            out[key] = value
    return out


def _leaves(record: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in record.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_leaves(value, f"{path}."))
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for i, item in enumerate(value):
                out.update(_leaves(item, f"{path}.{i}."))
        elif _numeric(value) and key not in COUNT_KEYS:
            out[path] = value
    return out


# Natural ranges: a t interval of a bounded quantity can cross its bound, which no reader wants to see.
FRACTIONS = {"accuracy", "precision", "recall", "coverage", "share", "auroc_mean", "ece"}


def _clip(path: str, interval: dict) -> dict:
    leaf = path.rsplit(".", 1)[-1]
    low, high = (0.0, 1.0) if leaf in FRACTIONS or path.startswith("anomaly.auroc_per_class") else (None, None)
    if leaf in {"value", "log_loss", "nll_nats", "bits_per_dim", "density"} or leaf.endswith("_seconds"):
        low = 0.0  # FIDs, losses, NLLs of discrete data (a probability <= 1), densities, times
    if low is not None and interval["low"] is not None:
        interval["low"] = max(interval["low"], low)
    if high is not None and interval["high"] is not None:
        interval["high"] = min(interval["high"], high)
    return interval


def intervals(records: list[dict], per_image: list[dict], scores: np.ndarray | None,
              is_anomaly: np.ndarray | None) -> dict[str, dict]:
    """A 95% interval for every metric: across seeds, plus a bootstrap over test images where the
    metric is a mean over images (accuracy, log-loss, NLL, bits/dim) or an AUROC; clipped to the
    metric's range (e.g. [0, 1] for an accuracy)."""
    from genbench.stats import summarise

    leaves = [_leaves(r) for r in records]
    out = {}
    for path in leaves[0]:
        values = [leaf.get(path) for leaf in leaves]
        if not all(_numeric(v) for v in values):
            continue
        if path in per_image[0]:
            out[path] = summarise(values, np.stack([p[path] for p in per_image]), kind="mean")
        elif path == "anomaly.auroc_mean" and scores is not None:
            out[path] = summarise(values, scores, kind="auroc", is_anomaly=is_anomaly)
        else:
            out[path] = summarise(values)
        out[path] = _clip(path, out[path])
    return out


def load_raw(directory: Path) -> tuple[dict, list[dict], np.ndarray | None, np.ndarray | None]:
    """stage.json, the seeds' per-image arrays ({metric path: (n_test,)}), the one-class scores
    (n_seeds, n_classes, n_test) and the matching is-anomaly masks (n_classes, n_test), or None."""
    directory = Path(directory)
    if not (directory / "stage.json").exists():
        raise FileNotFoundError(f"{directory}/stage.json is missing: run the model's stage first "
                                f"(`uv run dvc repro pipelines/<dataset>/dvc.yaml:<model>`)")
    stage = read_json(directory / "stage.json")
    per_image = []
    for seed in stage["seeds"]:
        folder = directory / f"seed-{seed}"
        per_image.append({p.stem.removeprefix("per_image."): np.load(p) for p in sorted(folder.glob("per_image.*.npy"))})
    scores = is_anomaly = None
    if stage.get("anomaly_classes") is not None:
        scores = np.stack([np.load(directory / f"seed-{seed}" / "anomaly_scores.npy") for seed in stage["seeds"]])
        test_y = np.load(directory / "test_labels.npy")
        is_anomaly = np.stack([test_y != c for c in stage["anomaly_classes"]])
    return stage, per_image, scores, is_anomaly


def summary_record(stage: dict, per_image: list[dict], scores: np.ndarray | None,
                   is_anomaly: np.ndarray | None) -> dict:
    """The metrics record: the stage's record with the seeds' means and 95% intervals."""
    head = ("dataset", "model", "kind", "capabilities", "hyperparameters", "seeds", "not_applicable")
    tail = ("per_seed", "stage_seconds", "workers", "device", "provenance")
    records = stage["per_seed"]
    return {**{k: stage[k] for k in head}, "summary": mean_record(records),
            "intervals": intervals(records, per_image, scores, is_anomaly), **{k: stage[k] for k in tail}}


def run_summary(params: dict[str, Any], dataset: str, model_name: str, root: str | Path = ".",
                out: str | Path | None = None) -> dict:
    """The `summary-<model>` stage: results/<dataset>/<model>/summary.json from its raw/ folder."""
    check_selection(params, dataset=dataset, model=model_name)
    record = summary_record(*load_raw(Paths(root).raw(dataset, model_name)))
    write_json(Paths(root if out is None else out).metrics(dataset, model_name), record)
    return record


def accuracy_interval(results: list[dict]) -> dict | None:
    """Mean accuracy over the seeds with its 95% interval (seeds (+) bootstrap over test images, as the
    leaderboard's); None when a seed could not be fitted."""
    from genbench.io import correct_from_bits
    from genbench.stats import summarise

    if not results or any("not_fitted" in r for r in results):
        return None
    per_image = np.stack([correct_from_bits(r["correct"]) for r in results]).astype(np.float64)
    interval = summarise([r["accuracy"] for r in results], per_image, kind="mean")
    interval["low"], interval["high"] = max(interval["low"], 0.0), min(interval["high"], 1.0)
    return interval

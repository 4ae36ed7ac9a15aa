"""The report stages on a fake repository: per-seed metrics records built here (summary = means over
seeds, intervals of chosen widths), sample grids, curves, evaluator and meta."""

from __future__ import annotations

import copy
import json
import math
import os
from pathlib import Path

import pandas as pd
import pytest
import torch
from torchvision.utils import save_image

from genbench.report import build_dataset_report, build_index, run_index, run_report
from genbench.report.leaderboard import FIELDS, METRIC_COLUMNS

REQUIRED_COLUMNS = [
    "dataset", "model", "kind", "accuracy", "log_loss", "ece", "nll_nats", "nll_space", "nll_estimator",
    "nll_method", "bits_per_dim", "fid", "kid", "fid_pixels", "kid_pixels", "fid_n_generated", "precision", "recall", "density", "coverage",
    "copying_ct", "cas", "cas_real", "anomaly_auroc", "train_seconds", "total_seconds",
]
SHA = "f" * 64
OTHER_SHA = "e" * 64
SEEDS = [0, 1, 2]
METHOD = "95% interval: Student t over 3 seeds (+) percentile bootstrap over 360 test images, 1000 resamples"
SEED_METHOD = "95% interval: Student t over 3 seeds"
OFFSETS = [-1.0, 0.0, 1.0]  # seed s's value = mean + offset * spread: the mean over seeds is exact


def cost(fit: float) -> dict:
    return {"fit_seconds": fit, "evaluate_seconds": 1.0, "anomaly_seconds": None, "total_seconds": fit + 1.5,
            "device": "cpu"}


def likelihood(nll: float, space: str, estimator: str, method: str, samples: int | None = None) -> dict:
    return {"nll_nats": nll, "nll_stderr_nats": 0.5, "bits_per_dim": nll / (64 * math.log(2)), "space": space,
            "levels": 2 if space == "binary" else 17, "dim": 64, "estimator": estimator, "method": method,
            "samples": samples, "split": "test", "n": 360}


def fid(value: float, n_generated: int, sha: str = SHA) -> dict:
    return {"value": value, "features": "evaluator-cnn", "features_sha256": sha, "feature_dim": 64,
            "n_generated": n_generated, "n_reference": 360, "reference_split": "test", "seed": 0}


def classification(accuracy: float) -> dict:
    return {"accuracy": accuracy, "log_loss": 2.0 * (1 - accuracy), "ece": 0.1 * (1 - accuracy), "ece_bins": 15,
            "split": "test", "n": 360}


def leaves(data, prefix=""):
    """(dotted path, value) of every numeric leaf."""
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else []
    for key, value in items:
        path = f"{prefix}{key}"
        if isinstance(value, (dict, list)):
            yield from leaves(value, path + ".")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            yield path, value


def set_path(data, path, value):
    *parents, last = path.split(".")
    for part in parents:
        data = data[int(part)] if isinstance(data, list) else data[part]
    if isinstance(data, list):
        data[int(last)] = value
    else:
        data[last] = value


METRIC_PATHS = {FIELDS[c] for c in METRIC_COLUMNS} | {"likelihood_extra.0.nll_nats", "likelihood_extra.0.bits_per_dim"}


def record(model: str, kind: str, capabilities: list[str], sections: dict, half: dict | None = None,
           per_seed_sha: list[str] | None = None) -> dict:
    """A metrics record in the per-seed format. `sections` are the means; seed values spread around them
    (metrics only, by 1% of the mean); every metric path gets an interval of half-width `half[path]`
    (default 0.1% of the mean; cost paths use the seed-only method)."""
    half = half or {}
    per_seed = []
    for i, seed in enumerate(SEEDS):
        one = copy.deepcopy(sections)
        for path, value in leaves(sections):
            if path in METRIC_PATHS:
                set_path(one, path, value + OFFSETS[i] * 0.01 * abs(value))
        if "fid" in one:
            one["fid"]["seed"] = seed
            if per_seed_sha:
                one["fid"]["features_sha256"] = per_seed_sha[i]
        per_seed.append({"seed": seed, "dataset": "digits", "model": model, **one})
    intervals = {}
    for path, value in leaves(sections):
        if path in METRIC_PATHS:
            h = half.get(path, 0.001 * abs(value))
            intervals[path] = {"mean": value, "low": value - h, "high": value + h, "n_seeds": len(SEEDS),
                               "method": SEED_METHOD if path.startswith("cost.") else METHOD}
    return {"dataset": "digits", "model": model, "kind": kind, "capabilities": capabilities,
            "hyperparameters": {}, "seeds": SEEDS, "not_applicable": sections.pop("not_applicable", {}),
            "summary": sections, "intervals": intervals, "per_seed": per_seed,
            "stage_seconds": 2.0 * sections["cost"]["fit_seconds"] / 3 + 1.0, "workers": 3}


def records() -> dict[str, dict]:
    return {
        "vae": record("vae", "generative", ["generate", "density", "represent"], {
            "cost": cost(12.0),
            "likelihood": likelihood(30.0, "binary", "estimate", "IWAE bound, k=1000 importance samples", 1000),
            "likelihood_extra": [likelihood(32.5, "binary", "lower_bound", "ELBO, 1 sample", 1)],
            "fid": fid(12.5, 2000),
            "prdc": {"precision": 0.8, "recall": 0.6, "density": 0.9, "coverage": 0.7, "k": 5},
            "not_applicable": {"classification": "no predict_proba() method", "anomaly": "not run"},
        }, half={"fid.value": 1.0}),
        "gaussian_nb": record("gaussian_nb", "generative", ["generate", "density", "classify"], {
            "cost": cost(0.2),
            "classification": classification(0.81),
            "likelihood": likelihood(150.0, "discrete", "lower_bound", "exact Gaussian density; uniform dequantisation"),
            "fid": fid(80.0, 500),
        }, half={"classification.accuracy": 0.02}),
        # cnn 0.975 [0.97, 0.98]; mlp 0.968 [0.96, 0.976] overlaps it: tied; gaussian_nb 0.81 [0.79, 0.83]: not.
        "cnn": record("cnn", "discriminative", ["classify"], {
            "cost": cost(30.0), "classification": classification(0.975),
            "not_applicable": {"likelihood": "no log_prob() method", "fid": "no sample() method"},
        }, half={"classification.accuracy": 0.005}),
        "mlp": record("mlp", "discriminative", ["classify"], {
            "cost": cost(5.0), "classification": classification(0.968),
        }, half={"classification.accuracy": 0.008}),
        "ocsvm": record("ocsvm", "anomaly", ["detect"], {
            "cost": cost(3.0),
            "anomaly": {"auroc_mean": 0.85, "auroc_per_class": {"0": 0.9, "1": 0.8, "2": 0.85}, "normal_classes": [0, 1, 2],
                        "protocol": "one-class (Ruff et al. 2018): train on one class, score the whole test split",
                        "score": "anomaly_score", "split": "test"},
        }),
        # FID on another feature network (a stale record): the lowest FID, but never ranked with the others.
        "gan": record("gan", "generative", ["generate"], {
            "cost": cost(8.0), "fid": fid(5.0, 1000, OTHER_SHA),
            "prdc": {"precision": 0.95, "recall": 0.9, "density": 1.1, "coverage": 0.9, "k": 5},
        }, per_seed_sha=[OTHER_SHA] * 3),
        # On disk but not listed in params.yaml: ignored. Its record is not even valid.
        "knn": {"dataset": "digits", "model": "knn", "summary": "not a record"},
    }


MODELS = ["vae", "gaussian_nb", "cnn", "mlp", "ocsvm", "gan"]
PAIRED_METHOD = "95% interval: percentile bootstrap over seeds and test images drawn together, 1999 resamples"


def _verdict(value, low, high, diff=0.0, p_holm=1.0, tied=True):
    return {"value": value, "low": low, "high": high, "diff": diff, "diff_low": diff - 0.01, "diff_high": diff + 0.01,
            "p": p_holm, "p_holm": p_holm, "tied": tied, "n_seeds": 3, "per_seed": [value - 0.001, value, value + 0.001]}


def verdicts() -> dict:
    """results/digits/comparisons.json (genbench.comparisons): accuracy's mlp overlaps cnn's interval, yet the
    paired comparison separates them; log-loss cannot separate them."""
    def metric(units, **groups):
        return {"higher_is_better": True, "units": units,
                "groups": {name: {"best": next(m for m, v in models.items() if v["diff"] == 0.0), "rule": "paired",
                                  "models": models} for name, models in groups.items()}}

    return {"dataset": "digits", "seeds": {m: SEEDS for m in records()}, "n_test": 360, "n_resamples": 1999, "metrics": {
        "accuracy": metric("test images", all={
            "cnn": _verdict(0.975, 0.97, 0.98), "mlp": _verdict(0.968, 0.96, 0.976, -0.007, 0.004, False),
            "gaussian_nb": _verdict(0.81, 0.79, 0.83, -0.165, 0.001, False)}),
        "log_loss": metric("test images", all={
            "cnn": _verdict(0.05, 0.04, 0.06), "mlp": _verdict(0.064, 0.05, 0.08, 0.014, 0.3, True),
            "gaussian_nb": _verdict(0.38, 0.3, 0.45, 0.33, 0.001, False)}),
        "nll_nats": metric("test images", binary={"vae": _verdict(30.0, 29.97, 30.03)},
                           discrete={"gaussian_nb": _verdict(150.0, 149.85, 150.15)}),
        "fid": metric("generated samples", all={"vae": _verdict(12.5, 11.8, 14.1),
                                                "gaussian_nb": _verdict(80.0, 70.0, 95.0, 67.5, 0.001, False)}),
        "anomaly_auroc": metric("test images", all={"ocsvm": _verdict(0.85, 0.84, 0.86)}),
    }}


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def make_root(root: Path) -> None:
    for model, rec in records().items():
        write(root / "results" / "digits" / model / "summary.json", json.dumps(rec))
        capable = "generate" in rec.get("capabilities", [])
        write(root / "results" / "digits" / model / "samples" / "info.json", json.dumps({"capable": capable}))
        if capable:
            save_image(torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(0)),
                       root / "results" / "digits" / model / "samples" / "grid.png", nrow=4)
    write(root / "results" / "digits" / "vae" / "curve.csv",
          "seed,epoch,elbo,kl\n" + "".join(f"{s},{e},{60.0 - 10 * e + s},{3.0 + e}\n" for s in SEEDS for e in range(3)))
    write(root / "results" / "digits" / "cnn" / "curve.csv", "seed,epoch,loss\n0,0,1.2\n0,1,0.4\n1,0,1.1\n1,1,0.5\n")
    write(root / "results" / "digits" / "gaussian_nb" / "curve.csv", "seed,epoch,loss\n")  # closed form: header only
    write(root / "evaluators" / "digits" / "evaluator.json", json.dumps({
        "test_accuracy": 0.97, "sha256": SHA, "feature_dim": 64,
        "reference_fid": {"value": 1.75, "description": "FID of the train split against the test split"}}))
    write(root / "results" / "digits" / "comparisons.json", json.dumps(verdicts()))
    write(root / "results" / "digits" / "data" / "meta.json", json.dumps({
        "dataset": "digits", "levels": 17, "image_shape": [1, 8, 8], "num_classes": 10,
        "sizes": {"train": 1293, "val": 144, "test": 360}}))


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("repo")
    make_root(root)
    sibling = root / "reports" / "other_dataset"
    write(sibling / "README.md", "another dataset's report\n")
    write(sibling / "summary.json", json.dumps({"dataset": "other_dataset", "models": ["x"], "splits": None,
                                                 "seeds": [0], "best": [{"text": "best accuracy: x 0.5"}]}))
    os.utime(sibling / "README.md", (1_000_000, 1_000_000))
    summary = build_dataset_report(root, root / "reports" / "digits", "digits", MODELS)
    return root, root / "reports", summary


def sections(readme: str) -> dict[str, str]:
    """README.md split at its '## ' headings."""
    parts = readme.split("\n## ")[1:]
    return {part.splitlines()[0]: part for part in parts}


def row_of(text: str, model: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(f"| {model} "))


def test_leaderboard_means_intervals_and_seed_counts(report):
    _, out, _ = report
    board = pd.read_csv(out / "digits" / "leaderboard.csv")
    assert list(board.columns[: len(REQUIRED_COLUMNS)]) == REQUIRED_COLUMNS
    for column in ("n_seeds", "stage_seconds", "workers", "accuracy_ci_low", "accuracy_ci_high", "accuracy_n_seeds",
                   "accuracy_ci_method", "accuracy_tied_best", "nll_nats_tied_best", "fid_tied_best", "cas_tied_best",
                   "anomaly_auroc_tied_best", "train_seconds_ci_low"):
        assert column in board.columns, column
    assert sorted(board["model"]) == sorted(MODELS)  # knn (on disk, not listed) is ignored
    board = board.set_index("model")
    assert board.loc["cnn", "accuracy"] == pytest.approx(0.975)
    assert board.loc["cnn", "accuracy_ci_low"] == pytest.approx(0.97)
    assert board.loc["cnn", "accuracy_ci_high"] == pytest.approx(0.98)
    assert board.loc["cnn", "accuracy_n_seeds"] == 3 and board.loc["cnn", "accuracy_ci_method"] == PAIRED_METHOD
    assert board.loc["mlp", "accuracy_vs_best"] == pytest.approx(-0.007) and board.loc["mlp", "accuracy_p_holm"] == 0.004
    assert board.loc["vae", "fid_ci_high"] == pytest.approx(14.1)  # the bootstrap's own, asymmetric interval

    assert (board["n_seeds"] == 3).all() and (board["workers"] == 3).all()
    assert board.loc["cnn", "stage_seconds"] == pytest.approx(21.0)
    assert board.loc["vae", "nll_space"] == "binary" and board.loc["vae", "nll_nats"] == 30.0
    assert board.loc["vae", "nll_estimator"] == "estimate"
    assert board.loc["gaussian_nb", "nll_space"] == "discrete"
    assert board.loc["gaussian_nb", "fid"] == 80.0 and board.loc["gaussian_nb", "fid_n_generated"] == 500
    assert board.loc["vae", "precision"] == 0.8 and board.loc["vae", "coverage"] == 0.7
    assert board.loc["ocsvm", "anomaly_auroc"] == 0.85
    assert board.loc["cnn", "train_seconds"] == 30.0 and board.loc["cnn", "total_seconds"] == 31.5
    assert board.loc["cnn", "train_seconds_ci_method"] == SEED_METHOD
    # Missing capability or section -> empty cells, interval columns included.
    assert pd.isna(board.loc["vae", "accuracy"]) and pd.isna(board.loc["vae", "accuracy_ci_low"])
    assert pd.isna(board.loc["vae", "accuracy_tied_best"])
    assert pd.isna(board.loc["cnn", "nll_nats"]) and pd.isna(board.loc["cnn", "fid"])
    assert pd.isna(board.loc["gaussian_nb", "precision"])
    assert board["cas"].isna().all() and board["copying_ct"].isna().all()
    assert pd.isna(board.loc["ocsvm", "accuracy"]) and pd.isna(board.loc["ocsvm", "nll_space"])


def test_tied_best_is_the_paired_verdict_not_interval_overlap(report):
    _, out, summary = report
    board = pd.read_csv(out / "digits" / "leaderboard.csv").set_index("model")
    # cnn best; mlp's interval overlaps cnn's, but the paired comparison separates them: not tied.
    assert board.loc["cnn", "accuracy_tied_best"] == True  # noqa: E712 (read back from CSV)
    assert board.loc["mlp", "accuracy_tied_best"] == False  # noqa: E712
    assert board.loc["gaussian_nb", "accuracy_tied_best"] == False  # noqa: E712
    assert board.loc["mlp", "log_loss_tied_best"] == True  # noqa: E712 (its paired comparison cannot separate)
    # NLL: one model per space, each best of its own space (never ranked across spaces).
    assert board.loc["vae", "nll_nats_tied_best"] == True and board.loc["gaussian_nb", "nll_nats_tied_best"] == True  # noqa: E712
    assert board.loc["vae", "fid_tied_best"] == True and board.loc["gaussian_nb", "fid_tied_best"] == False  # noqa: E712
    # no paired verdict (ECE, CAS): no tie mark at all
    assert board["ece_tied_best"].isna().all() and board["cas_tied_best"].isna().all()

    classification = sections((out / "digits" / "README.md").read_text())["Classification"]
    assert "0.975 [0.970, 0.980] ★" in row_of(classification, "cnn")  # fixed decimals per column
    assert "0.968 [0.960, 0.976]" in row_of(classification, "mlp") and "★" not in row_of(classification, "mlp").split("|")[3]
    assert "0.810 [0.790, 0.830]" in row_of(classification, "gaussian_nb")
    assert "★" not in row_of(classification, "gaussian_nb").split("|")[3]
    assert "★ the best mean, and every model tied with it" in classification and "Holm-corrected" in classification
    assert "mean over 3 seeds [95% interval]" in classification
    assert PAIRED_METHOD.removeprefix("95% interval: ") in classification

    best = {b["metric"]: b for b in summary["best"]}
    assert best["accuracy"]["model"] == "cnn" and best["accuracy"]["tied"] == []
    assert best["accuracy"]["text"] == ("best accuracy: cnn 0.975 [0.970, 0.980]; no tie (the paired comparison "
                                        "separates every other model from it)")
    assert best["NLL, binary space (nats/image)"]["model"] == "vae"
    assert best["NLL, discrete space (nats/image)"]["model"] == "gaussian_nb"
    assert best["anomaly AUROC (mean)"]["model"] == "ocsvm" and best["anomaly AUROC (mean)"]["tied"] == []
    assert json.loads((out / "digits" / "summary.json").read_text()) == json.loads(json.dumps(summary))


def test_other_feature_network_is_left_out_of_the_fid_columns(report):
    _, out, summary = report
    board = pd.read_csv(out / "digits" / "leaderboard.csv").set_index("model")
    for column in ("fid", "fid_ci_low", "fid_ci_high", "precision", "recall", "density", "coverage", "fid_tied_best"):
        assert pd.isna(board.loc["gan", column]), column
    assert board.loc["gan", "fid_features_sha256"] == OTHER_SHA  # says why the cells are empty
    assert {b["metric"]: b["model"] for b in summary["best"]}["FID"] == "vae"  # gan's 5.0 is not ranked
    readme = sections((out / "digits" / "README.md").read_text())
    assert "| gan " not in readme["Sample quality: evaluator-cnn features (ffffffffffff)"]
    stale = readme["Sample quality: evaluator-cnn features (eeeeeeeeeeee)"]
    assert "| gan " in stale and "★" not in stale
    assert "**Warning:** These FIDs used feature network eeeeeeeeeeee" in stale
    assert "left out of leaderboard.csv" in stale
    per_seed = pd.read_csv(out / "digits" / "per_seed.csv")
    assert set(per_seed[per_seed["model"] == "gan"]["metric"]) == {"train_seconds", "evaluate_seconds", "total_seconds"}


def test_per_seed_csv_one_row_per_seed_and_metric(report):
    _, out, _ = report
    per_seed = pd.read_csv(out / "digits" / "per_seed.csv")
    assert list(per_seed.columns) == ["dataset", "model", "seed", "metric", "value"]
    assert not per_seed.duplicated(["dataset", "model", "seed", "metric"]).any()
    cnn = per_seed[per_seed["model"] == "cnn"]
    assert sorted(cnn["metric"].unique()) == sorted(["accuracy", "log_loss", "ece", "train_seconds",
                                                     "evaluate_seconds", "total_seconds"])
    assert len(cnn) == 6 * len(SEEDS) and sorted(cnn["seed"].unique()) == SEEDS
    accuracy = cnn[cnn["metric"] == "accuracy"].set_index("seed")["value"]
    assert accuracy[0] == pytest.approx(0.975 * 0.99) and accuracy[2] == pytest.approx(0.975 * 1.01)
    assert accuracy.mean() == pytest.approx(0.975)
    assert set(per_seed["model"]) == set(MODELS)


def test_readme_separates_likelihood_spaces_with_units(report):
    _, out, _ = report
    readme = (out / "digits" / "README.md").read_text()
    assert readme.startswith("# genbench: digits (train 1293 · val 144 · test 360 images)")
    assert "3 seeds (0, 1, 2)" in readme
    parts = sections(readme)
    binary = next(text for title, text in parts.items() if title.startswith("Likelihood: binary space"))
    discrete = next(text for title, text in parts.items() if title.startswith("Likelihood: discrete space"))
    assert "(2 levels, D = 64)" in binary and "(17 levels, D = 64)" in discrete
    assert "vae (ELBO)" in binary and "| vae " in binary and "gaussian_nb" not in binary
    assert "gaussian_nb" in discrete and "vae" not in discrete
    for text in (binary, discrete):
        assert "NLL ↓ (nats/image)" in text and "bits/dim ↓" in text and "estimator" in text
    # The IWAE estimate (30.0) ranks above its ELBO (32.5): NLL ascending; only the main estimate is marked.
    assert binary.index("| vae ") < binary.index("| vae (ELBO)")
    assert "30.00 [29.97, 30.03] ★" in row_of(binary, "vae") and "★" not in row_of(binary, "vae (ELBO)")

    classification = parts["Classification"]
    assert "log-loss ↓ (nats)" in classification and "ECE ↓ (15 bins)" in classification
    assert classification.index("| cnn ") < classification.index("| mlp ") < classification.index("| gaussian_nb ")
    assert "vae (no predict_proba() method)" in classification

    quality = parts["Sample quality: evaluator-cnn features (ffffffffffff)"]
    assert "real data (reference)" in quality and "1.75" in quality
    assert quality.index("| vae ") < quality.index("| gaussian_nb ")  # FID ascending
    assert "12.5 [11.8, 14.1] ★" in row_of(quality, "vae")
    assert "**Warning:** FID is biased upward" in quality and "gaussian_nb (n = 500)" in quality
    assert "vae (n =" not in quality

    anomaly = parts["Anomaly detection"]
    assert "mean AUROC ↑" in anomaly and "AUROC 2" in anomaly and "Ruff et al. 2018" in anomaly
    cost = parts["Cost"]
    assert "fit (s)" in cost and "stage wall (s)" in cost and "workers" in cost and "in parallel on its worker processes" in cost
    assert "Interval method: Student t over 3 seeds." in cost
    assert "![vae](samples/vae.svg)" in parts["Samples"] and "![cnn](curves/cnn.svg)" in parts["Training curves"]
    assert "band: the seeds' minimum to maximum" in parts["Training curves"]


def test_page_links_and_sibling_dataset_untouched(report):
    root, out, _ = report
    page = (out / "digits" / "index.html").read_text()
    assert 'href="../index.html"' in page and 'href="README.md"' in page and 'href="per_seed.csv"' in page
    assert 'src="samples/vae.svg"' in page and "<table" in page
    assert "best accuracy: cnn 0.975 [0.970, 0.980]; no tie" in page
    sibling = out / "other_dataset"
    assert sorted(p.name for p in sibling.iterdir()) == ["README.md", "summary.json"]
    assert (sibling / "README.md").read_text() == "another dataset's report\n"
    assert (sibling / "README.md").stat().st_mtime == 1_000_000
    assert not (out / "index.html").exists()  # the entry page is build_index's job


def test_images_for_the_right_models_and_no_temp_files(report):
    _, out, _ = report
    digits = out / "digits"
    assert sorted(p.name for p in (digits / "samples").iterdir()) == ["gan.svg", "gaussian_nb.svg", "vae.svg"]
    assert sorted(p.name for p in (digits / "curves").iterdir()) == ["cnn.svg", "vae.svg"]
    for svg in [*(digits / "curves").iterdir(), *(digits / "samples").iterdir(), *(digits / "figures").iterdir()]:
        text = svg.read_text()
        assert text.startswith("<?xml") and 'id="x-axis-label-0"' in text and 'id="y-axis-label-0"' in text, svg.name
    leftovers = [p for p in out.rglob("*") if p.name.startswith(".") or p.name.endswith(".tmp")]
    assert leftovers == []


def test_index_lists_only_the_given_datasets(report, tmp_path):
    root, out, _ = report
    reports = tmp_path / "reports"
    for dataset in ("digits", "other_dataset"):
        write(reports / dataset / "summary.json", (out / dataset / "summary.json").read_text())
    build_index(reports, ["digits"])
    entry = (reports / "index.html").read_text()
    assert 'href="digits/index.html"' in entry and 'href="digits/README.md"' in entry
    assert "other_dataset" not in entry
    assert f"{len(MODELS)} models" in entry and "3 seeds (0, 1, 2)" in entry
    assert "best accuracy: cnn 0.975 [0.970, 0.980]; no tie" in entry
    assert "★ the best mean" in entry

    with pytest.raises(FileNotFoundError, match=r"missing/summary.json .*dvc repro pipelines/missing/dvc.yaml:report"):
        build_index(reports, ["digits", "missing"])


def test_listed_model_without_record_names_file_and_stage(tmp_path):
    make_root(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"results/digits/svm/summary.json .*dvc repro pipelines/digits/dvc.yaml:summary-svm"):
        build_dataset_report(tmp_path, tmp_path / "reports" / "digits", "digits", ["cnn", "svm"])
    assert not (tmp_path / "reports" / "digits").exists()


def test_stage_functions_read_the_models_and_datasets_of_params(tmp_path):
    make_root(tmp_path)
    params = {"datasets": {"digits": {}}, "models": {"cnn": {}, "gaussian_nb": {}}}
    summary = run_report(params, "digits", root=tmp_path)
    assert summary["models"] == ["cnn", "gaussian_nb"]
    board = pd.read_csv(tmp_path / "reports" / "digits" / "leaderboard.csv")
    assert list(board["model"]) == ["cnn", "gaussian_nb"]
    run_index(params, root=tmp_path)
    assert 'href="digits/index.html"' in (tmp_path / "reports" / "index.html").read_text()
    (tmp_path / "results" / "digits" / "cnn" / "summary.json").write_text('{"dataset": "digits", "model": "cnn"}')
    with pytest.raises(ValueError, match=r"cnn/summary.json has no `summary`.*pipelines/digits/dvc.yaml:summary-cnn"):
        run_report(params, "digits", root=tmp_path)


def test_published_numbers_sit_beside_genbenchs_with_the_protocol_difference():
    from genbench.report.published import PUBLISHED, published_section

    board = pd.DataFrame([{"model": "svm", "accuracy": 0.9, "accuracy_ci_low": 0.89, "accuracy_ci_high": 0.91},
                          {"model": "knn", "accuracy": float("nan")}])
    table = published_section("fashion_mnist", board).table.set_index("method")
    assert table.loc["SVC, RBF kernel, C=10", "published"] == "0.897"
    assert table.loc["SVC, RBF kernel, C=10", "genbench (mean [95% interval])"] == "svm: 0.900 [0.890, 0.910]"
    assert table.loc["GaussianNB", "genbench (mean [95% interval])"] == "gaussian_nb: not run"
    assert "p: 1" not in table.loc["KNeighborsClassifier, k=5, p=1", "protocol difference"]  # no record: no hint
    assert all(row["protocol difference"] for row in table.reset_index().to_dict("records"))
    assert published_section("digits", board) is None
    assert {e.model for e in PUBLISHED["fashion_mnist"]} == {"logistic_regression", "svm", "random_forest", "knn",
                                                            "gaussian_nb", "mlp"}
    as_run = published_section("fashion_mnist", board, sizes={"train": 5000, "val": 6000, "test": 1000},
                               hyperparameters={"knn": {"n_neighbors": 5, "p": 2}, "svm": {"C": 10.0}}).table
    as_run = as_run.set_index("method")["protocol difference"]
    assert "trained on 5000 images" in as_run["GaussianNB"] and "tested on 1000" in as_run["GaussianNB"]
    assert "same n_neighbors=5" in as_run["KNeighborsClassifier, k=5, p=1"]
    assert "genbench's p=2, published 1: set models.knn.p: 1" in as_run["KNeighborsClassifier, k=5, p=1"]
    assert "same C=10.0" in as_run["SVC, RBF kernel, C=10"]
    mnist = published_section("mnist", pd.DataFrame([{"model": "rbm", "nll_nats": 90.0, "nll_space": "binary"}])).table
    assert "rbm: 90" in mnist.set_index("published").loc["86.34", "genbench (mean [95% interval])"]


def test_comparison_plots_for_dvc_and_the_page_carry_the_leaderboard_intervals(report):
    _, out, _ = report
    digits = out / "digits"
    board = pd.read_csv(digits / "leaderboard.csv").set_index("model")
    accuracy = pd.read_csv(digits / "plots" / "accuracy.csv").set_index("model")
    assert set(accuracy.index) == set(board.index[board["accuracy"].notna()])
    for model, row in accuracy.iterrows():
        assert row["mean"] == board.loc[model, "accuracy"] and row["low"] == board.loc[model, "accuracy_ci_low"]
        assert bool(row["tied_best"]) == bool(board.loc[model, "accuracy_tied_best"])
    page = (digits / "index.html").read_text()
    assert 'src="figures/compare-accuracy.svg"' in page and 'id="at-a-glance"' in page and 'href="#at-a-glance"' in page
    svg = (digits / "figures" / "compare-accuracy.svg").read_text()
    assert "test accuracy (higher is better)" in svg and "cnn ★" in svg  # tied-best models starred in the figure


def test_real_data_reference_row_reads_like_a_model_row_and_leaves_protocol_columns_to_a_note():
    """The compare stage's real-data row: formatted with the models' decimals, scaled x10^3 like them, not ranked,
    and its empty protocol cells do not keep a constant column (reference split, n) in the table."""
    from genbench.report.records import normalise
    from genbench.report.sections import metric_sections

    vae = copy.deepcopy(records()["vae"])
    gnb = copy.deepcopy(records()["gaussian_nb"])
    for rec, kid in ((vae, 0.0021), (gnb, 0.0087)):
        rec["summary"]["kid"] = {"value": kid}
        for one in rec["per_seed"]:
            one["kid"] = {"value": kid}
        rec["summary"]["fid"]["value"] /= 1000
        for one in rec["per_seed"]:
            one["fid"]["value"] /= 1000
        rec["intervals"].pop("fid.value", None)
    loaded = [normalise(rec, Path(f"results/digits/{rec['model']}/summary.json")) for rec in (vae, gnb)]
    comparisons = {"feature_spaces": {"evaluator": {"dim": 64, "description": "unit-norm ReLU features"}},
                   "real_data": {"n": 2000, "split": "train", "copying_ct": 0.1161,
                                 "metrics": {"fid": {"value": 0.0027731, "low": 0.0017761, "high": 0.0043532},
                                             "kid": {"value": -0.0000433, "low": -0.0000644, "high": 0.0000128}},
                                 "description": "2000 real training images in place of a model's samples"}}
    evaluator = {"sha256": SHA, "feature_dim": 64}
    quality = next(s for s in metric_sections(loaded, evaluator, reference_sha=SHA, comparisons=comparisons)
                   if s.title.startswith("Sample quality"))
    table = quality.table
    assert list(table["model"])[0] == "real data (reference)"  # on top, whatever its value
    real = table.iloc[0]
    assert real["FID ×10³ ↓"].startswith("2.8 [1.8, 4.4]")  # the models' one decimal, scaled by 1000
    assert real["KID ×10³ ↓"] == "-0.04 [-0.06, 0.01]"
    assert "reference split" not in table.columns and "n reference (images)" not in table.columns
    assert any(n.startswith("Every row:") and "reference split test" in n for n in quality.notes)
    assert any("Reference row (not ranked): 2000 real training images" in n for n in quality.notes)

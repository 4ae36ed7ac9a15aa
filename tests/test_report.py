"""The report stage on a fake repository: four metrics records, sample grids, curves, evaluator, meta."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch
from torchvision.utils import save_image

from genbench.report import build_report, collect

REQUIRED_COLUMNS = [
    "dataset", "model", "kind", "accuracy", "log_loss", "ece", "nll_nats", "nll_space", "nll_estimator",
    "nll_method", "bits_per_dim", "fid", "fid_n_generated", "precision", "recall", "density", "coverage",
    "memorisation", "cas", "anomaly_auroc", "train_seconds", "total_seconds",
]
SHA = "f" * 64


def cost(train: float) -> dict:
    return {"train_seconds": train, "sample_seconds": 0.5, "evaluate_seconds": 1.0, "anomaly_seconds": None,
            "total_seconds": train + 1.5, "device": "cpu"}


def likelihood(nll: float, space: str, estimator: str, method: str, samples: int | None = None) -> dict:
    return {"nll_nats": nll, "nll_stderr_nats": 0.5, "bits_per_dim": nll / (64 * math.log(2)), "space": space,
            "levels": 2 if space == "binary" else 17, "dim": 64, "estimator": estimator, "method": method,
            "samples": samples, "split": "test", "n": 360}


def fid(value: float, n_generated: int) -> dict:
    return {"value": value, "features": "evaluator-cnn", "features_sha256": SHA, "feature_dim": 64,
            "n_generated": n_generated, "n_reference": 360, "reference_split": "test", "seed": 0}


RECORDS = {
    "vae": {
        "kind": "generative", "capabilities": ["generate", "density", "represent"],
        "hyperparameters": {"latent_dim": 8},
        "cost": cost(12.0),
        "likelihood": likelihood(30.0, "binary", "estimate", "IWAE bound, k=1000 importance samples", 1000),
        "likelihood_extra": [likelihood(32.5, "binary", "lower_bound", "ELBO, 1 sample", 1)],
        "fid": fid(12.5, 2000),
        "prdc": {"precision": 0.8, "recall": 0.6, "density": 0.9, "coverage": 0.7, "k": 5},
        "not_applicable": {"classification": "no predict_proba() method", "anomaly": "not run"},
    },
    "gaussian_nb": {
        "kind": "generative", "capabilities": ["generate", "density", "classify"],
        "hyperparameters": {},
        "cost": cost(0.2),
        "classification": {"accuracy": 0.81, "log_loss": 2.3, "ece": 0.15, "ece_bins": 15, "split": "test", "n": 360},
        "likelihood": likelihood(150.0, "discrete", "lower_bound", "exact Gaussian density; uniform dequantisation"),
        "fid": fid(80.0, 500),
    },
    "cnn": {
        "kind": "discriminative", "capabilities": ["classify"],
        "hyperparameters": {"epochs": 3},
        "cost": cost(30.0),
        "classification": {"accuracy": 0.975, "log_loss": 0.09, "ece": 0.012, "ece_bins": 15, "split": "test", "n": 360},
        "not_applicable": {"likelihood": "no log_prob() method", "fid": "no sample() method"},
    },
    "ocsvm": {
        "kind": "anomaly", "capabilities": ["detect"],
        "hyperparameters": {"nu": 0.1},
        "cost": cost(3.0),
        "anomaly": {"auroc_mean": 0.85, "auroc_per_class": {"0": 0.9, "1": 0.8, "2": 0.85}, "normal_classes": [0, 1, 2],
                    "protocol": "one-class (Ruff et al. 2018): train on one class, score the whole test split",
                    "score": "anomaly_score", "split": "test"},
    },
}


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def make_root(root: Path) -> None:
    for model, record in RECORDS.items():
        write(root / "metrics" / "digits" / f"{model}.json", json.dumps({"dataset": "digits", "model": model, **record}))
        capable = "generate" in record["capabilities"]
        write(root / "samples" / "digits" / model / "info.json", json.dumps({"capable": capable}))
        if capable:
            save_image(torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(0)),
                       root / "samples" / "digits" / model / "grid.png", nrow=4)
    write(root / "curves" / "digits" / "vae.csv", "epoch,elbo,kl\n0,60.0,3.0\n1,40.0,4.0\n2,35.0,4.5\n")
    write(root / "curves" / "digits" / "cnn.csv", "epoch,loss\n0,1.2\n1,0.4\n")
    write(root / "curves" / "digits" / "gaussian_nb.csv", "epoch,loss\n")  # closed form: header only
    write(root / "evaluators" / "digits" / "evaluator.json", json.dumps({
        "test_accuracy": 0.97, "sha256": SHA, "feature_dim": 64,
        "reference_fid": {"value": 1.75, "description": "FID of the train split against the test split"}}))
    write(root / "data" / "digits" / "meta.json", json.dumps({
        "dataset": "digits", "levels": 17, "image_shape": [1, 8, 8], "num_classes": 10,
        "sizes": {"train": 1293, "val": 144, "test": 360}}))


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("repo")
    make_root(root)
    summary = build_report(root, root / "reports")
    return root, root / "reports", summary


def sections(readme: str) -> dict[str, str]:
    """README.md split at its '## ' headings."""
    parts = readme.split("\n## ")[1:]
    return {part.splitlines()[0]: part for part in parts}


def test_collect_flattens_one_row_per_record(report):
    root, _, _ = report
    frame = collect(root)
    assert len(frame) == 4
    assert frame.set_index("model").loc["ocsvm", "anomaly.auroc_per_class.1"] == 0.8


def test_leaderboard_columns_rows_and_values(report):
    _, out, _ = report
    board = pd.read_csv(out / "digits" / "leaderboard.csv")
    assert list(board.columns[: len(REQUIRED_COLUMNS)]) == REQUIRED_COLUMNS
    assert sorted(board["model"]) == sorted(RECORDS)
    board = board.set_index("model")
    assert board.loc["cnn", "accuracy"] == 0.975
    assert board.loc["gaussian_nb", "accuracy"] == 0.81
    assert board.loc["vae", "nll_space"] == "binary" and board.loc["vae", "nll_nats"] == 30.0
    assert board.loc["vae", "nll_estimator"] == "estimate"
    assert board.loc["gaussian_nb", "nll_space"] == "discrete"
    assert board.loc["gaussian_nb", "fid"] == 80.0 and board.loc["gaussian_nb", "fid_n_generated"] == 500
    assert board.loc["vae", "precision"] == 0.8 and board.loc["vae", "coverage"] == 0.7
    assert board.loc["ocsvm", "anomaly_auroc"] == 0.85
    assert board.loc["cnn", "train_seconds"] == 30.0 and board.loc["cnn", "total_seconds"] == 31.5
    # Missing capability or section -> empty cell.
    assert pd.isna(board.loc["vae", "accuracy"])
    assert pd.isna(board.loc["cnn", "nll_nats"]) and pd.isna(board.loc["cnn", "fid"])
    assert pd.isna(board.loc["gaussian_nb", "precision"])
    assert board["cas"].isna().all() and board["memorisation"].isna().all()
    assert pd.isna(board.loc["ocsvm", "accuracy"]) and pd.isna(board.loc["ocsvm", "nll_space"])


def test_readme_separates_likelihood_spaces_with_units(report):
    _, out, _ = report
    readme = (out / "digits" / "README.md").read_text()
    assert readme.startswith("# genbench: digits (train 1293 · val 144 · test 360 images)")
    parts = sections(readme)
    binary = next(text for title, text in parts.items() if title.startswith("Likelihood: binary space"))
    discrete = next(text for title, text in parts.items() if title.startswith("Likelihood: discrete space"))
    assert "vae (ELBO)" in binary and "| vae " in binary and "gaussian_nb" not in binary
    assert "gaussian_nb" in discrete and "vae" not in discrete
    for text in (binary, discrete):
        assert "NLL ↓ (nats/image)" in text and "bits/dim ↓" in text and "estimator" in text
    # The IWAE estimate (30.0) ranks above its ELBO (32.5): NLL ascending.
    assert binary.index("| vae ") < binary.index("| vae (ELBO)")

    classification = parts["Classification"]
    assert "log-loss ↓ (nats)" in classification and "ECE ↓ (15 bins)" in classification
    assert classification.index("cnn") < classification.index("gaussian_nb")  # accuracy descending
    assert "vae (no predict_proba() method)" in classification

    quality = parts["Sample quality"]
    assert "real data (reference)" in quality and "1.75" in quality
    assert quality.index("| vae ") < quality.index("| gaussian_nb ")  # FID ascending
    assert "ffffffffffff" in quality  # short feature-network hash
    assert "**Warning:** FID is biased upward" in quality and "gaussian_nb (n = 500)" in quality
    assert "vae (n =" not in quality

    anomaly = parts["Anomaly detection"]
    assert "mean AUROC ↑" in anomaly and "AUROC 2" in anomaly and "Ruff et al. 2018" in anomaly
    assert "train (s)" in parts["Cost"] and "total (s)" in parts["Cost"]
    assert "![vae](samples/vae.png)" in parts["Samples"] and "![cnn](curves/cnn.png)" in parts["Training curves"]


def test_pages_link_each_other(report):
    _, out, summary = report
    entry = (out / "index.html").read_text()
    assert 'href="digits/index.html"' in entry and 'href="digits/README.md"' in entry
    assert "4 models" in entry and "best accuracy: cnn 0.975" in entry
    page = (out / "digits" / "index.html").read_text()
    assert 'href="../index.html"' in page and 'href="README.md"' in page
    assert 'src="samples/vae.png"' in page and "<table" in page
    best = {b["metric"]: b["model"] for b in summary["datasets"]["digits"]["best"]}
    assert best["FID"] == "vae" and best["anomaly AUROC (mean)"] == "ocsvm"
    assert best["NLL, binary space (nats/image)"] == "vae" and best["NLL, discrete space (nats/image)"] == "gaussian_nb"


def test_images_for_the_right_models_and_no_temp_files(report):
    _, out, _ = report
    digits = out / "digits"
    assert sorted(p.name for p in (digits / "samples").iterdir()) == ["gaussian_nb.png", "vae.png"]
    assert sorted(p.name for p in (digits / "curves").iterdir()) == ["cnn.png", "vae.png"]
    assert (digits / "curves" / "vae.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    leftovers = [p for p in out.rglob("*") if p.name.startswith(".") or p.name.endswith(".tmp")]
    assert leftovers == []


def test_no_metrics_says_run_dvc_repro(tmp_path):
    with pytest.raises(FileNotFoundError, match="dvc repro"):
        build_report(tmp_path, tmp_path / "reports")

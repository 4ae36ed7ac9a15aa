"""`dvc repro` on a copy of the repository with a tiny profile (every model of params.yaml, each with
its `fast_params`): the leaderboard has every row and every metric the model's capabilities allow;
editing one model reruns only that model and the report; a second `dvc repro` with nothing changed
runs no stage."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from genbench.models import get_model_class

ROOT = Path(__file__).resolve().parents[1]
OUTPUTS = {"data", "downloads", "evaluators", "models", "curves", "samples", "anomaly", "metrics", "reports",
           "dvc.lock", ".venv", ".git", ".pytest_cache", "__pycache__"}

TINY = {
    "evaluator": {"epochs": 3},
    "protocol": {"fid_samples": 200, "grid_samples": 16, "anomaly": {"normal_classes": [0, 1]}},
}


def _merge(base: dict, update: dict) -> dict:
    for key, value in update.items():
        base[key] = _merge(base.get(key) or {}, value) if isinstance(value, dict) else value
    return base


def _dvc(repo: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "GENBENCH_PROGRESS": "0", "DVC_NO_ANALYTICS": "1"}
    result = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"dvc {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("genbench") / "repo"
    shutil.copytree(ROOT, repo, ignore=lambda d, names: [n for n in names if n in OUTPUTS and Path(d) == ROOT]
                    + [n for n in names if n in ("cache", "tmp") and Path(d).name == ".dvc"] + ["__pycache__"])
    params = _merge(yaml.safe_load((repo / "params.yaml").read_text()), TINY)
    # every model, each with its quick smoke-fit settings
    params["models"] = {k: {**(v or {}), **get_model_class(k).fast_params} for k, v in params["models"].items()}
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    _dvc(repo, "repro")
    return repo


def test_leaderboard_has_every_row_and_allowed_metric(repo):
    board = pd.read_csv(repo / "reports" / "digits" / "leaderboard.csv").set_index("model")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert set(board.index) == set(params["models"])
    assert {"gmm", "logistic_regression", "vae", "dcgan"} <= set(board.index)
    filled = board.notna()
    for model in board.index:
        record = json.loads((repo / "metrics" / "digits" / f"{model}.json").read_text())
        caps = set(record["capabilities"])
        assert filled.loc[model, "accuracy"] == ("classify" in caps), model
        assert filled.loc[model, ["nll_nats", "bits_per_dim", "nll_space", "nll_estimator"]].all() == ("density" in caps), model
        sample_columns = ["fid", "precision", "recall", "density", "coverage", "memorisation"]
        assert filled.loc[model, sample_columns].all() == ("generate" in caps), model
        assert filled.loc[model, "cas"] == ("generate" in caps and "cas" in record), model
        assert filled.loc[model, "linear_probe_accuracy"] == ("represent" in caps), model
        one_class = record["kind"] != "discriminative" and bool(caps & {"detect", "density"})
        assert filled.loc[model, "anomaly_auroc"] == one_class, model
        assert filled.loc[model, "train_seconds"] and board.loc[model, "total_seconds"] > 0, model
    # the conditional generative classifiers get a Classification Accuracy Score
    assert filled.loc["gmm", "cas"]
    assert board.loc["gmm", "nll_space"] == "discrete"
    if "vae" in board.index:
        assert board.loc["vae", "nll_space"] == "binary"
    for page in ("reports/index.html", "reports/digits/index.html", "reports/digits/README.md"):
        assert (repo / page).stat().st_size > 0, page
    assert (repo / "reports" / "digits" / "samples" / "dcgan.png").exists()


def test_editing_one_model_reruns_only_that_model_and_the_report(repo):
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["models"]["vae"]["latent_dim"] = 8
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    status = _dvc(repo, "status", "--json").stdout
    changed = set(json.loads(status))
    assert changed == {"train@digits-vae", "sample@digits-vae", "anomaly@digits-vae", "evaluate@digits-vae", "report"} or \
        changed == {"train@digits-vae", "anomaly@digits-vae"}, changed  # downstream shows once upstream reruns
    assert "train@digits-vae" in changed and all("vae" in s or s == "report" for s in changed)
    rerun = _dvc(repo, "repro").stdout
    ran = {line.split("'")[1] for line in rerun.splitlines() if line.startswith("Running stage")}
    assert ran == {"train@digits-vae", "sample@digits-vae", "anomaly@digits-vae", "evaluate@digits-vae", "report"}, ran


def test_noop_repro_runs_nothing(repo):
    output = _dvc(repo, "repro").stdout
    assert "Running stage" not in output, output

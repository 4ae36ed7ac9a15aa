"""The committed results agree with themselves and with params.yaml: the pinned evaluator hashes to its
record, every leaderboard FID used it, every metric has its interval columns, the per-seed CSV holds
every seed, and the reports list exactly the models and datasets of params.yaml."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from genbench.config import load_params
from genbench.evaluator import load_evaluator
from genbench.report.leaderboard import CI_SUFFIXES, METRIC_COLUMNS, RANKED

ROOT = Path(__file__).resolve().parents[1]
PARAMS = load_params(ROOT / "params.yaml")


@pytest.mark.parametrize("dataset", list(PARAMS["datasets"]))
def test_committed_report_matches_params_and_the_pinned_evaluator(dataset):
    _, evaluator = load_evaluator(ROOT / "evaluators" / dataset)  # raises if the weights do not hash to the record
    board = pd.read_csv(ROOT / "reports" / dataset / "leaderboard.csv")
    assert set(board["model"]) == set(PARAMS["models"])
    assert set(board["fid_features_sha256"].dropna()) == {evaluator["sha256"]}
    for metric in METRIC_COLUMNS:
        assert {f"{metric}_{suffix}" for suffix in CI_SUFFIXES} <= set(board.columns), metric
        filled = board[board[metric].notna()]
        assert (filled[f"{metric}_n_seeds"] == len(PARAMS["seeds"])).all(), metric
        assert (filled[f"{metric}_ci_low"] <= filled[metric] + 1e-12).all(), metric
        assert (filled[metric] <= filled[f"{metric}_ci_high"] + 1e-12).all(), metric
        if metric in RANKED and len(filled):
            assert filled[f"{metric}_tied_best"].any(), metric
    per_seed = pd.read_csv(ROOT / "reports" / dataset / "per_seed.csv")
    assert sorted(per_seed["seed"].unique()) == sorted(PARAMS["seeds"])
    assert set(per_seed["model"]) == set(PARAMS["models"])
    # the leaderboard's mean is the mean of the per-seed values
    accuracy = per_seed[per_seed["metric"] == "accuracy"].groupby("model")["value"].mean()
    assert board.set_index("model").loc[accuracy.index, "accuracy"].to_numpy() == pytest.approx(accuracy.to_numpy())


def test_entry_page_lists_only_the_datasets_of_params():
    page = (ROOT / "reports" / "index.html").read_text()
    for dataset in PARAMS["datasets"]:
        assert f"{dataset}/index.html" in page
    for other in {p.parent.name for p in (ROOT / "reports").glob("*/leaderboard.csv")} - set(PARAMS["datasets"]):
        assert f"{other}/index.html" not in page

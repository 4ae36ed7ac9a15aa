"""The committed results agree with themselves and with params.yaml: the pinned evaluator hashes to its
record, every leaderboard FID used it, every metric has its interval columns, the per-seed CSV holds
every seed, and the reports list exactly the models and datasets of params.yaml."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from genbench.config import load_params
from genbench.evaluator import load_evaluator
from genbench.params import Paths, dataset_params, enabled_datasets, index_datasets, seeds_of
from genbench.report.leaderboard import CI_SUFFIXES, METRIC_COLUMNS, RANKED

ROOT = Path(__file__).resolve().parents[1]
PARAMS = load_params(ROOT / "params.yaml")
# the datasets with committed results: those dvc repro builds, and those turned off whose reports are committed
COMMITTED = index_datasets(PARAMS, ROOT / "reports")


@pytest.mark.parametrize("dataset", COMMITTED)
def test_committed_report_matches_params_and_the_pinned_evaluator(dataset):
    _, evaluator = load_evaluator(ROOT / "evaluators" / dataset)  # raises if the weights do not hash to the record
    board = pd.read_csv(ROOT / "reports" / dataset / "leaderboard.csv")
    assert set(board["model"]) == set(PARAMS["models"])
    assert set(board["fid_features_sha256"].dropna()) == {evaluator["sha256"]}
    params = dataset_params(PARAMS, dataset)
    n_seeds = board["model"].map(lambda m: len(seeds_of(params, m)))
    for metric in METRIC_COLUMNS:
        assert {f"{metric}_{suffix}" for suffix in CI_SUFFIXES} <= set(board.columns), metric
        filled = board[board[metric].notna()]
        assert (filled[f"{metric}_n_seeds"] == n_seeds[filled.index]).all(), metric
        assert (filled[f"{metric}_ci_low"] <= filled[metric] + 1e-12).all(), metric
        assert (filled[metric] <= filled[f"{metric}_ci_high"] + 1e-12).all(), metric
        if metric in RANKED and len(filled):
            tied = filled[f"{metric}_tied_best"]
            if f"{metric}_p_holm" not in board.columns:  # a report from before the paired verdicts (Fashion-MNIST)
                assert tied.any(), metric
            else:  # the best, and whoever the Holm-corrected paired comparison cannot separate from it
                assert tied.fillna(False).astype(bool).any(), metric
                assert (filled.loc[tied.fillna(False).astype(bool), f"{metric}_p_holm"] >= 0.05).all(), metric
    per_seed = pd.read_csv(ROOT / "reports" / dataset / "per_seed.csv")
    assert sorted(per_seed["seed"].unique()) == sorted({s for m in PARAMS["models"] for s in seeds_of(params, m)})
    assert set(per_seed["model"]) == set(PARAMS["models"])
    # the leaderboard's mean is the mean of the per-seed values
    accuracy = per_seed[per_seed["metric"] == "accuracy"].groupby("model")["value"].mean()
    assert board.set_index("model").loc[accuracy.index, "accuracy"].to_numpy() == pytest.approx(accuracy.to_numpy())


def test_entry_page_lists_only_the_datasets_of_params():
    page = (ROOT / "reports" / "index.html").read_text()
    assert "digits" in enabled_datasets(PARAMS) and "fashion_mnist" in COMMITTED
    for dataset in COMMITTED:
        assert f"{dataset}/index.html" in page
        turned_off = f"{dataset} is turned off in params.yaml" in page
        assert turned_off == (dataset not in enabled_datasets(PARAMS))
    for other in {p.parent.name for p in (ROOT / "reports").glob("*/leaderboard.csv")} - set(COMMITTED):
        assert f"{other}/index.html" not in page


@pytest.mark.parametrize("dataset", COMMITTED)
def test_committed_studies_match_params_the_benchmark_and_each_other(dataset):
    """Every study file its pipeline lists is there with params.yaml's settings; each learning curve's 100%
    point is the leaderboard's own per-seed accuracy; the real-only augmentation baselines are the
    classifier's learning curve wherever the two share a subset size; the report shows both studies."""
    from genbench.io import read_json
    from genbench.params import dataset_params
    from genbench.report.studies import study_selection
    from genbench.studies import REAL_ONLY, settings

    from genbench.studies import STUDIES

    selection = study_selection(ROOT, dataset) or {  # a dataset turned off has no pipeline: its committed files
        study: sorted(p.parent.name for p in Paths(ROOT).results(dataset).glob(f"*/{study}.json")) for study in STUDIES}
    params = dataset_params(PARAMS, dataset)
    curves = {}
    for model in selection["learning_curve"]:
        curve = curves[model] = read_json(Paths(ROOT).study(dataset, "learning_curve", model))
        assert curve["settings"] == settings(params, "learning_curve") and curve["seeds"] == PARAMS["seeds"]
        full = curve["points"][-1]
        if full["fraction"] == 1.0:
            record = read_json(Paths(ROOT).metrics(dataset, model))
            benchmark = {s["seed"]: s["classification"]["accuracy"] for s in record["per_seed"]}
            # the curve runs the top-level seeds; a model with more seeds of its own has these among them
            assert [s["accuracy"] for s in full["per_seed"]] == pytest.approx(
                [benchmark[seed] for seed in curve["seeds"]], abs=1e-6), model
    report = (ROOT / "reports" / dataset / "README.md").read_text()
    if selection["learning_curve"]:
        assert "## Learning curves" in report and "## Where the curves cross" in report
        assert (ROOT / "reports" / dataset / "figures" / "learning-curves.svg").exists()
    if selection["augmentation"]:
        config = settings(params, "augmentation")
        real = read_json(Paths(ROOT).study(dataset, "augmentation", REAL_ONLY))
        assert real["settings"] == config
        shared = 0
        for point in real["points"]:
            same = [p for p in curves.get(config["classifier"], {}).get("points", []) if p["fraction"] == point["fraction"]]
            if same:  # the same subsets and seeds: the same fits, image by image
                assert [s["correct"] for s in same[0]["per_seed"]] == [s["correct"] for s in point["per_seed"]]
                shared += 1
        assert shared or config["classifier"] not in curves
        assert "## Augmentation with generated images" in report and "## Augmentation gains" in report
        assert (ROOT / "reports" / dataset / "figures" / "augmentation.svg").exists()


@pytest.mark.parametrize("dataset", enabled_datasets(PARAMS))
def test_committed_summaries_are_recomputed_from_the_stored_raw_outputs(dataset):
    """Every committed means-and-intervals record (metrics/<dataset>/<model>.json) is what the statistics
    give on the model stage's stored raw outputs (raw/<dataset>/<model>/), number for number.

    raw/ is DVC-cached, so a fresh clone has it only after `uv run dvc repro`; `.ci/run` runs the tests
    after it with GENBENCH_AFTER_REPRO=1, where missing raw outputs are a failure."""
    import os

    from genbench.io import read_json
    from genbench.summary import load_raw, summary_record

    missing = [m for m in PARAMS["models"] if not (Paths(ROOT).raw(dataset, m) / "stage.json").exists()]
    if missing:
        message = (f"results/{dataset}/<model>/raw/ is missing for {', '.join(missing)}: the raw outputs are DVC-cached, "
                   "run `uv run dvc repro` first")
        if os.environ.get("GENBENCH_AFTER_REPRO") == "1":
            pytest.fail(message)
        pytest.skip(message)
    for model in PARAMS["models"]:
        committed = read_json(Paths(ROOT).metrics(dataset, model))
        again = summary_record(*load_raw(Paths(ROOT).raw(dataset, model)))
        assert again["per_seed"] == committed["per_seed"], model
        assert again["summary"] == committed["summary"], model
        assert again["intervals"] == committed["intervals"], model

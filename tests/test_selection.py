"""`genbench select`: candidates scored on the validation split, never on the test split."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from genbench.config import ConfigError
from genbench.data.prepare import PreparedData, run_prepare
from genbench.io import read_json
from genbench.pinned_evaluator import run_evaluator
from genbench.selection import parse_grid, run_selection

ROOT = Path(__file__).resolve().parents[1]


def _params() -> dict:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["models"] = {"gmm": {"n_components": 1}}
    params["datasets"], params["overrides"] = {"digits": params["datasets"]["digits"]}, {}
    params["evaluator"]["epochs"] = 1
    params["protocol"]["fid_samples"] = 100
    return params


def test_grid_is_every_combination_and_bad_items_are_refused():
    assert parse_grid(["a=1,2", "b=x"]) == [{"a": 1, "b": "x"}, {"a": 2, "b": "x"}]
    assert parse_grid([]) == [{}]
    with pytest.raises(ConfigError, match="key=value"):
        parse_grid(["epochs"])


def test_selection_scores_on_validation_and_never_reads_the_test_split(tmp_path, monkeypatch):
    run_prepare(_params(), "digits", root=tmp_path)
    run_evaluator(_params(), "digits", root=tmp_path, retrain=True)
    split = PreparedData.split

    def no_test(self, name):
        assert name != "test", "model selection read the test split"
        return split(self, name)

    monkeypatch.setattr(PreparedData, "split", no_test)
    record = run_selection(_params(), "digits", "gmm", parse_grid(["n_components=1,2"]), [0], root=tmp_path)
    assert [r["candidate"] for r in record["rows"]] == [{"n_components": 1}, {"n_components": 2}]
    row = record["rows"][0]
    assert row["n_val"] == len(split(PreparedData(tmp_path / "results/digits/data"), "val"))
    assert {"nll_nats", "accuracy", "fid_val", "kid_val"} <= set(row)
    again = run_selection(_params(), "digits", "gmm", [{"n_components": 3}], [0], root=tmp_path)
    assert len(again["rows"]) == 3  # earlier candidates kept
    assert read_json(tmp_path / "benchmarks/selection/digits-gmm.json")["split"] == "val"

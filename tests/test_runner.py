"""The per-model stage over seeds, and the pinned evaluator, without DVC."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import yaml

from genbench.config import ConfigError
from genbench.data.prepare import run_prepare
from genbench.evaluator import load_evaluator
from genbench.pinned_evaluator import run_evaluator
from genbench.io import read_json
from genbench.runner import RAW, run_model
from genbench.summary import load_raw, mean_record, run_summary

ROOT = Path(__file__).resolve().parents[1]


def _run(params: dict, dataset: str, model: str, root: Path) -> dict:
    """The model stage, then its summary stage: the metrics record as the report reads it."""
    run_model(params, dataset, model, root=root)
    return run_summary(params, dataset, model, root=root)


def _params(**override) -> dict:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["models"] = {"gmm": {"n_components": 1}, "gaussian_nb": {}}
    params["datasets"], params["overrides"] = {"digits": params["datasets"]["digits"]}, {}
    params["evaluator"]["epochs"] = 1
    params["seeds"] = [0, 1]
    params["protocol"] |= {"fid_samples": 200, "anomaly": {"normal_classes": [0, 1]}}
    params.update(override)
    return params


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("root")
    run_prepare(_params(), "digits", root=root)
    run_evaluator(_params(), "digits", root=root, retrain=True)  # pinned for this recipe, as for a new dataset
    run_evaluator(_params(), "digits", root=root)
    return root


def test_pinned_evaluator_is_kept_checked_and_retrained_only_on_request(prepared, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(prepared, root)
    weights = root / "evaluators" / "digits" / "evaluator.pt"
    before = weights.read_bytes()
    floor = run_evaluator(_params(), "digits", root=root)
    assert weights.read_bytes() == before
    assert floor["fid"]["features_sha256"] == load_evaluator(weights.parent)[1]["sha256"]
    assert read_json(root / "results" / "digits" / "reference.json") == floor
    # another recipe: no silent retraining, a message saying how
    with pytest.raises(ConfigError, match=r"recipe .* now gives.*--retrain"):
        run_evaluator(_params(evaluator={"epochs": 2}), "digits", root=root)
    # other data: likewise
    run_prepare(_params(datasets={"digits": {"val_fraction": 0.2}}), "digits", root=root)
    with pytest.raises(ConfigError, match=r"trained on other splits.*--retrain"):
        run_evaluator(_params(), "digits", root=root)
    with pytest.raises(ConfigError, match=r"trained on other splits"):  # and no model stage uses it
        run_model(_params(), "digits", "gmm", root=root)
    # retraining is explicit and records the new data and recipe
    record = run_evaluator(_params(datasets={"digits": {"val_fraction": 0.2}}, evaluator={"epochs": 2}),
                           "digits", root=root, retrain=True)
    assert record["recipe"]["epochs"] == 2 and weights.read_bytes() != before


def test_changed_weights_are_refused(prepared, tmp_path):
    import torch

    root = tmp_path / "copy"
    shutil.copytree(prepared, root)
    weights = root / "evaluators" / "digits" / "evaluator.pt"
    saved = torch.load(weights, weights_only=True)
    saved["state"]["head.bias"] += 1e-3
    torch.save(saved, weights)
    with pytest.raises(ConfigError, match=r"hashes to .* records .*git checkout"):
        load_evaluator(weights.parent)


def test_seed_numbers_do_not_depend_on_the_number_of_workers(prepared, tmp_path):
    """The engine's spawned workers, one or two: the same records and raw outputs, bit for bit."""
    import numpy as np
    from distributed import Client, LocalCluster

    records = {}
    for workers in (1, 2):
        root = tmp_path / str(workers)
        shutil.copytree(prepared, root)
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                          worker_dashboard_address=None, preload=["genbench.engine"]) as cluster, \
                Client(cluster) as client, client.as_current():
            records[workers] = _run(_params(), "digits", "gmm", root=root)
        assert records[workers]["workers"] == workers
    for one, two in zip(records[1]["per_seed"], records[2]["per_seed"]):
        one, two = dict(one), dict(two)
        one.pop("cost"), two.pop("cost")
        assert one == two
    raw = [sorted((tmp_path / str(w) / "results" / "digits" / "gmm" / "raw").rglob("*.npy")) for w in (1, 2)]
    assert len(raw[0]) == len(raw[1]) > 10
    for one, two in zip(*raw):
        assert one.name == two.name and np.load(one).tobytes() == np.load(two).tobytes(), one
    record = records[2]
    assert [r["seed"] for r in record["per_seed"]] == [0, 1]
    assert record["per_seed"][0]["classification"] != record["per_seed"][1]["classification"]  # seeds differ
    accuracy = [r["classification"]["accuracy"] for r in record["per_seed"]]
    assert record["summary"]["classification"]["accuracy"] == pytest.approx(sum(accuracy) / 2)
    interval = record["intervals"]["classification.accuracy"]
    assert interval["low"] <= interval["mean"] <= interval["high"] <= 1 and interval["n_seeds"] == 2
    assert "bootstrap over 360 test images" in interval["method"]
    assert "bootstrap" in record["intervals"]["anomaly.auroc_mean"]["method"]
    assert "bootstrap" not in record["intervals"]["fid.value"]["method"]  # across seeds only
    gmm = tmp_path / "2" / "results" / "digits" / "gmm"
    assert read_json(gmm / "summary.json")["summary"] == record["summary"]
    assert sorted(p.name for p in (gmm / "model").iterdir()) == ["seed-0", "seed-1"]
    assert (gmm / "curve.csv").read_text().splitlines()[0].startswith("seed,epoch")


def test_mean_record_averages_numbers_and_keeps_text():
    records = [{"seed": 0, "fid": {"value": 1.0, "n_generated": 10, "features": "cnn"}, "extra": [{"nll_nats": 2.0}]},
               {"seed": 1, "fid": {"value": 3.0, "n_generated": 10, "features": "cnn"}, "extra": [{"nll_nats": 4.0}]}]
    assert mean_record(records) == {"fid": {"value": 2.0, "n_generated": 10, "features": "cnn"},
                                    "extra": [{"nll_nats": 3.0}]}


def test_the_model_stage_trains_with_its_datasets_overrides(prepared, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(prepared, root)
    params = _params(seeds=[0], overrides={"digits": {"models": {"gmm": {"n_components": 2}}}})
    params["protocol"]["anomaly"] = {"normal_classes": [0]}
    record = _run(params, "digits", "gmm", root=root)
    assert record["hyperparameters"]["n_components"] == 2
    assert params["models"]["gmm"]["n_components"] == 1  # params.yaml's own section is left as it was
    assert "anomaly" in record["summary"]


def test_a_model_listed_in_skip_models_has_no_one_class_fits_and_says_why(prepared, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(prepared, root)
    params = _params(seeds=[0], overrides={"digits": {"protocol": {"anomaly": {"skip_models": ["gmm"]}}}})
    params["protocol"]["anomaly"] = {"normal_classes": [0]}
    record = _run(params, "digits", "gmm", root=root)
    assert "anomaly" not in record["summary"] and "anomaly_seconds" not in record["per_seed"][0]["cost"]
    assert "skip_models" in record["not_applicable"]["anomaly"]
    params["overrides"]["digits"]["protocol"]["anomaly"]["skip_models"] = ["gmn"]
    with pytest.raises(ConfigError, match="skip_models"):
        run_model(params, "digits", "gmm", root=root)


def test_real_data_floor_is_at_the_models_sample_count_with_an_interval(prepared):
    import numpy as np
    import scipy.stats
    import torch

    from genbench.data.prepare import PreparedData
    from genbench.metrics.fid import frechet_distance

    net, evaluator = load_evaluator(prepared / "evaluators" / "digits")
    floor = read_json(prepared / "results" / "digits" / "reference.json")["fid"]
    data = PreparedData(prepared / "results" / "digits" / "data")
    train, test = data.split("train").x, data.split("test").x
    assert floor["n_generated"] == 200 == _params()["protocol"]["fid_samples"]  # the models' count, not the split's
    assert floor["n_reference"] == len(test) and floor["features_sha256"] == evaluator["sha256"]
    for seed in (0, 1):
        subset = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:200]
        assert floor["per_seed"][str(seed)] == pytest.approx(frechet_distance(net, evaluator["feature_dim"], test, train[subset]))
    values = list(floor["per_seed"].values())
    low, high = scipy.stats.t.interval(0.95, 1, loc=np.mean(values), scale=scipy.stats.sem(values))
    assert (floor["low"], floor["value"], floor["high"]) == pytest.approx((low, np.mean(values), high))
    assert "2 random training subsets" in floor["method"]


def test_cpu_models_compute_on_the_cpu_and_torch_models_on_the_configured_device():
    """On a GPU machine the scikit-learn models still run (in parallel workers) on the CPU, and say so."""
    from genbench.models import create_model
    from genbench.params import model_device

    gpu = torch.device("cuda")  # a device object needs no GPU
    assert model_device(create_model("svm", {}), gpu) == torch.device("cpu")
    assert model_device(create_model("gmm", {}), gpu) == torch.device("cpu")
    assert model_device(create_model("vae", {}, device="cpu"), gpu) == gpu


def test_records_say_what_produced_them_and_grids_carry_their_layout(prepared, tmp_path):
    """Provenance (commit, packages, machine), the model's size, and the class rows of a conditional grid."""
    from importlib.metadata import version

    root = tmp_path / "copy"
    shutil.copytree(prepared, root)
    params = _params(seeds=[0])
    params["protocol"]["anomaly"] = {"normal_classes": [0]}
    record = _run(params, "digits", "gmm", root=root)
    made = record["provenance"]
    assert made["packages"]["torch"] == version("torch") and made["packages"]["scikit-learn"] == version("scikit-learn")
    assert made["date_utc"].endswith("Z") and made["cores"] >= 1 and made["machine"]
    assert record["summary"]["size"]["parameters"] > 0
    info = read_json(root / "results" / "digits" / "gmm" / "samples" / "info.json")
    assert info["conditional"] and info["grid"]["row_labels"] == [f"y = {c}" for c in range(10)]
    assert info["grid"]["n"] == info["grid"]["per_row"] * 10


def test_the_model_stage_stores_what_its_metrics_are_computed_from(prepared, tmp_path):
    """results/<dataset>/<model>/raw/: per seed, the test-set probabilities, per-image values, samples at the
    data's intensity levels, their evaluator features and the one-class scores; the summary stage
    recomputes the seeds' means and intervals from these files alone."""
    import numpy as np

    from genbench.data.prepare import PreparedData
    from genbench.metrics.anomaly import auroc
    from genbench.metrics.sample_quality import prdc

    root = tmp_path / "copy"
    shutil.copytree(prepared, root)
    params = _params()
    stage = run_model(params, "digits", "gmm", root=root)
    raw = root / "results" / "digits" / "gmm" / "raw"
    assert not (root / "results" / "digits" / "gmm" / "summary.json").exists()  # the summary stage writes it
    data = PreparedData(root / "results" / "digits" / "data")
    test = data.split("test")
    seed = raw / "seed-0"
    proba, samples = np.load(seed / "test_proba.npy"), np.load(seed / "samples.npy")
    assert proba.dtype == np.float64 and proba.shape == (len(test.y), 10) and np.allclose(proba.sum(1), 1)
    accuracy = np.load(seed / "per_image.classification.accuracy.npy")
    assert accuracy.mean() == pytest.approx(stage["per_seed"][0]["classification"]["accuracy"], abs=1e-7)  # float32 there
    assert (accuracy == (proba.argmax(1) == test.y.numpy())).all()
    assert samples.dtype == np.uint8 and samples.shape == (200, 1, 8, 8) and samples.max() <= data.levels - 1
    assert (np.load(seed / "sample_labels.npy") == np.arange(200) % 10).all()  # class-balanced, conditional
    features = np.load(seed / "sample_features.npy")
    assert features.dtype == np.float32 and features.shape == (200, 64)
    net, _ = load_evaluator(root / "evaluators" / "digits")
    from genbench.metrics.sample_quality import evaluator_features

    reference = evaluator_features(net, test.x).numpy()
    again = prdc(torch.from_numpy(reference), torch.from_numpy(features), k=params["protocol"]["prdc_k"])
    assert again["precision"] == pytest.approx(stage["per_seed"][0]["prdc"]["precision"], abs=1e-6)
    scores = np.load(seed / "anomaly_scores.npy")
    assert scores.shape == (2, len(test.y))  # normal classes [0, 1]
    assert auroc(torch.from_numpy(scores[1]), torch.from_numpy(test.y.numpy() != 1)) == pytest.approx(
        stage["per_seed"][0]["anomaly"]["auroc_per_class"]["1"])
    described = read_json(raw / "stage.json")["files"]
    assert set(described) == {p.stem for p in seed.glob("*.npy")} and set(described) <= set(RAW)
    # the summary from the stored files equals the one computed from the stage's records in memory
    record = run_summary(params, "digits", "gmm", root=root)
    assert read_json(root / "results" / "digits" / "gmm" / "summary.json") == record
    loaded, per_image, scores, is_anomaly = load_raw(raw)
    assert scores.shape == (2, 2, len(test.y)) and (is_anomaly[0] == (test.y.numpy() != 0)).all()
    assert record["summary"] == mean_record(stage["per_seed"])
    assert record["intervals"]["classification.accuracy"]["mean"] == pytest.approx(
        np.mean([np.load(raw / f"seed-{s}" / "per_image.classification.accuracy.npy").mean() for s in (0, 1)]))


def test_the_summary_stage_says_how_to_get_its_inputs(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"results/digits/gmm/raw/stage.json is missing: run the model's stage"):
        run_summary(_params(), "digits", "gmm", root=tmp_path)


def test_a_model_section_may_set_its_own_seeds(prepared, tmp_path):
    from genbench.params import build_model, seeds_of

    params = _params(models={"gmm": {"n_components": 1, "seeds": [4, 5, 6]}, "gaussian_nb": {}})
    assert seeds_of(params, "gmm") == [4, 5, 6] and seeds_of(params, "gaussian_nb") == [0, 1] == seeds_of(params)
    assert "seeds" not in build_model(params, "gmm").get_params()
    with pytest.raises(ConfigError, match=r"models.gmm.seeds' has repeated values"):
        seeds_of(_params(models={"gmm": {"seeds": [1, 1]}}), "gmm")
    root = tmp_path / "copy"
    shutil.copytree(prepared, root)
    record = _run(params, "digits", "gmm", root)
    assert record["seeds"] == [4, 5, 6] and len(record["per_seed"]) == 3
    assert sorted(p.name for p in (root / "results" / "digits" / "gmm" / "raw").glob("seed-*")) == \
        ["seed-4", "seed-5", "seed-6"]

"""The `evaluator` stage: keep the pinned FID feature network of a dataset after checking it (or train one
for a new dataset), and measure the real-data FID floor in its features. Apart from `genbench.evaluator`
(the network, its loading and features), so that the model stages, which only load and apply the network,
do not depend on how it is pinned or on the statistics of the floor."""

from __future__ import annotations

import torch
from torch import nn

from genbench.evaluator import load_evaluator, predict, train_evaluator, weights_sha256

ARCHITECTURE = "3-layer CNN classifier (genbench.evaluator.EvaluatorNet), pre-activation penultimate features"


def recipe_of(params: dict) -> dict:
    """The training recipe from params.yaml, as recorded next to the weights."""
    from genbench.config import check_type
    from genbench.params import data_seed_of

    cfg = dict(params.get("evaluator") or {})
    return {
        "feature_dim": check_type("evaluator.feature_dim", cfg.get("feature_dim", 64), int, low=2),
        "epochs": check_type("evaluator.epochs", cfg.get("epochs", 30), int, low=1),
        "batch_size": check_type("evaluator.batch_size", cfg.get("batch_size", 64), int, low=1),
        "lr": float(check_type("evaluator.lr", cfg.get("lr", 1e-3), float, low=0.0)),
        "seed": data_seed_of(params),
    }


def _data_hashes(meta: dict) -> dict:
    return {key: meta["sha256"][key] for key in ("train_x", "train_y", "test_x", "test_y")}


def run_evaluator(params: dict, dataset: str, root=".", out=None, *, retrain: bool = False) -> dict:
    """The `evaluator` stage: check the pinned (committed) evaluator of `dataset` against the data and the
    recipe, and write the real-data FID floor in its features (results/<dataset>/reference.json, under `out`).

    FIDs are only comparable with the same feature network, and retraining it on another machine gives
    other weights: so the weights are committed in evaluators/<dataset>/ with their sha256, an input that
    no stage writes. Only `genbench evaluator <dataset> --retrain`, which a user runs deliberately (for a
    new dataset, or after changing the data or the recipe) and then commits, trains them.
    """
    from pathlib import Path

    from genbench.config import ConfigError
    from genbench.data.prepare import PreparedData
    from genbench.evaluator import check_fits
    from genbench.io import write_json
    from genbench.params import Paths, check_selection, dataset_params

    check_selection(params, dataset=dataset)
    params = dataset_params(params, dataset)
    paths = Paths(root)
    directory = paths.evaluator(dataset)
    data = PreparedData(paths.data(dataset))
    recipe = recipe_of(params)
    if retrain:
        return train_pinned(params, dataset, data, directory, recipe)
    net, record = load_evaluator(directory)
    check_fits(record, data, directory)
    if record.get("recipe") != recipe:
        raise ConfigError(
            f"the pinned evaluator {directory} (sha256 {record['sha256'][:12]}) was trained with the recipe "
            f"{record.get('recipe')}, and params.yaml now gives {recipe}. FIDs of other weights are not comparable "
            f"with the committed ones: retrain deliberately with `uv run genbench evaluator {dataset} --retrain`, "
            f"rerun `uv run dvc repro`, and commit {directory} with the new results")
    print(f"evaluator {dataset}: keeping the pinned weights (sha256 {record['sha256'][:12]})")
    floor = real_data_floor(net, record, data, params)
    write_json(Paths(root if out is None else out).reference(dataset), floor)
    return floor


def train_pinned(params: dict, dataset: str, data, directory, recipe: dict) -> dict:
    """`genbench evaluator <dataset> --retrain`: train the feature network and write it as the pinned one."""
    import time
    from pathlib import Path

    from genbench.io import atomic_directory, write_json
    from genbench.metrics.fid import frechet_distance
    from genbench.params import device_of

    start = time.perf_counter()
    device = device_of(params)
    train, test = data.split("train"), data.split("test")
    net, history = train_evaluator(train, feature_dim=recipe["feature_dim"], epochs=recipe["epochs"],
                                   batch_size=recipe["batch_size"], lr=recipe["lr"], seed=recipe["seed"], device=device)
    accuracy = float((predict(net, test.x).argmax(1) == test.y).double().mean())
    reference = frechet_distance(net, recipe["feature_dim"], test.x, train.x)
    record = {
        "dataset": dataset,
        "architecture": ARCHITECTURE,
        "feature_dim": recipe["feature_dim"],
        "epochs": recipe["epochs"],
        "recipe": recipe,
        "data_sha256": _data_hashes(data.meta),
        "test_accuracy": accuracy,
        "sha256": weights_sha256(net),
        "pinned": "weights committed with this sha256; retrain only with `genbench evaluator <dataset> --retrain`",
        "reference_fid": {
            "value": reference,
            "description": f"FID of the train split ({len(train)} images) against the test split "
                           f"({len(test)} images): real data, the floor a model can hope for at these sample counts",
            "n_generated": len(train),
            "n_reference": len(test),
        },
        "history": history,
        "seconds": time.perf_counter() - start,
        "device": str(device),
    }
    with atomic_directory(directory) as out:
        torch.save({"state": net.state_dict(), "image_shape": train.image_shape, "num_classes": train.num_classes,
                    "feature_dim": recipe["feature_dim"]}, Path(out) / "evaluator.pt")
        write_json(Path(out) / "evaluator.json", record)
    print(f"evaluator {dataset}: trained and pinned {directory} (sha256 {record['sha256'][:12]}); "
          f"now `uv run dvc repro` and commit {directory}")
    return record


def real_data_floor(net: nn.Module, record: dict, data, params: dict) -> dict:
    """The FID that real data reach under the models' protocol: protocol.fid_samples training images
    (a random subset per seed, without replacement) against the reference split, in the pinned features.
    At the same sample count as the models', since FID's bias depends on it (Chong & Forsyth 2020)."""
    from genbench.metrics.fid import frechet_distance
    from genbench.params import protocol, seeds_of
    from genbench.stats import seed_interval

    proto, seeds = protocol(params), seeds_of(params)
    train, reference = data.split("train").x, data.split(proto["fid_reference_split"]).x
    n = min(proto["fid_samples"], len(train))
    values = {}
    for seed in seeds:
        subset = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:n]
        values[str(seed)] = frechet_distance(net, record["feature_dim"], reference, train[subset])
    interval = seed_interval(list(values.values()))
    what = f"{n} training images" + (f" (all of them: the split has fewer than {proto['fid_samples']})"
                                      if n < proto["fid_samples"] else ", a random subset per seed")
    return {"fid": {
        "value": interval["mean"], "low": interval["low"], "high": interval["high"], "n_seeds": interval["n_seeds"],
        "method": f"95% interval: Student t over {len(seeds)} random training subsets (seeds {', '.join(values)})"
                  if len(seeds) > 1 and n < len(train) else interval["method"],
        "per_seed": values, "n_generated": n, "n_reference": len(reference), "generated_split": "train",
        "reference_split": proto["fid_reference_split"], "features_sha256": record["sha256"],
        "description": f"FID of {what} against the {proto['fid_reference_split']} split ({len(reference)} images): "
                       "real data at the models' sample count, the floor a model can hope for"}}

"""Choosing settings on the validation split: `uv run genbench select <dataset> <model> key=v1,v2 ...` fits
the model once per candidate setting on the training split and scores it on the validation split only: NLL
(the model's own estimator on the validation images, in its likelihood space), FID and KID of its samples
against the validation images (in the evaluator's bounded space, genbench.metrics.feature_spaces) and
accuracy, whichever the model has. The test split is never read, so a setting chosen here leaves the
benchmark's test numbers untouched by the choice (params.yaml's reasons quote these numbers).

Writes benchmarks/selection/<dataset>-<model>.json: every candidate's scores, seeds and seconds.
"""

from __future__ import annotations

import itertools
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genbench.config import ConfigError
from genbench.io import write_json
from genbench.params import Paths, build_model, check_selection, dataset_params, protocol


def parse_grid(items: list[str]) -> list[dict[str, Any]]:
    """["cd_k=1,10", "training=cd"] -> the candidates, every combination: [{cd_k: 1, training: cd}, ...]."""
    import yaml

    axes = []
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not key or not values:
            raise ConfigError(f"select: '{item}' is not key=value[,value...] (e.g. epochs=50,200)")
        axes.append([(key, yaml.safe_load(v)) for v in values.split(",")])
    return [dict(combo) for combo in itertools.product(*axes)] if axes else [{}]


def validation_scores(params: dict, dataset: str, model: Any, data: Any, seed: int, net: Any) -> dict:
    """The fitted model's scores on the validation split."""
    from genbench.metrics.feature_spaces import bounded_features
    from genbench.metrics.likelihood import log_likelihood_per_image, model_input
    from genbench.models.base import capabilities
    from genbench.paired import Frechet, KernelDistance

    val = data.split("val")
    caps, scores = capabilities(model), {}
    if "density" in caps:
        log_prob = torch.as_tensor(model.log_prob(model_input(model, data, "val", seed=seed)))
        nll = -log_likelihood_per_image(log_prob, model.likelihood_space, val.dim, data.levels).double()
        scores |= {"nll_nats": float(nll.mean()), "bits_per_dim": float(nll.mean() / (val.dim * math.log(2))),
                   "likelihood_space": model.likelihood_space, "estimator": model.likelihood_info.get("estimator")}
    if "classify" in caps:
        proba = torch.as_tensor(np.asarray(model.predict_proba(val.x)))
        scores["accuracy"] = float((proba.argmax(1) == val.y).double().mean())
    if "generate" in caps:
        n = protocol(params)["fid_samples"]
        generator = torch.Generator().manual_seed(seed)
        if getattr(model, "conditional", False):
            samples = model.sample(n, y=torch.arange(n) % data.num_classes, generator=generator)
        else:
            samples = model.sample(n, generator=generator)
        reference, fake = bounded_features(net, val.x), bounded_features(net, samples)
        scores |= {"fid_val": float(Frechet(reference)(fake)[0]), "kid_val": float(KernelDistance(reference)(fake)[0]),
                   "n_generated": n, "features": "evaluator (bounded)"}
    scores["n_val"] = len(val)
    return scores


def run_selection(params: dict[str, Any], dataset: str, model_name: str, candidates: list[dict[str, Any]],
                  seeds: list[int] | None = None, root: str | Path = ".", out: str | Path | None = None) -> dict:
    from genbench.data.prepare import PreparedData
    from genbench.engine import single_threaded
    from genbench.evaluator import load_evaluator
    from genbench.params import section

    check_selection(params, dataset=dataset, model=model_name)
    params = dataset_params(params, dataset)
    import os

    single_threaded()  # as the engine's workers run: the same numbers
    os.environ["GENBENCH_PROGRESS"] = "0"
    paths = Paths(root)
    data = PreparedData(paths.data(dataset))
    net, _ = load_evaluator(paths.evaluator(dataset))
    base = dict(section(params, f"models.{model_name}") or {})
    rows = []
    for candidate in candidates:
        setting = {**base, **candidate}
        for seed in seeds or [0]:
            model = build_model({**params, "models": {**params["models"], model_name: setting}}, model_name)
            start = time.perf_counter()
            model.fit(data.split("train"), seed=seed)
            fit_seconds = time.perf_counter() - start
            rows.append({"candidate": candidate, "seed": seed, "fit_seconds": fit_seconds,
                         **validation_scores(params, dataset, model, data, seed, net)})
            print(f"{dataset}/{model_name} {candidate} seed {seed}: "
                  + ", ".join(f"{k} {v:.4g}" for k, v in rows[-1].items() if isinstance(v, float)), flush=True)
    target = Path(out) if out else Path(root) / "benchmarks" / "selection" / f"{dataset}-{model_name}.json"
    if target.exists():  # earlier candidates stay; a candidate and seed run again replace their row
        from genbench.io import read_json

        done = {(repr(sorted(r["candidate"].items())), r["seed"]) for r in rows}
        rows = [r for r in read_json(target)["rows"]
                if (repr(sorted(r["candidate"].items())), r["seed"]) not in done] + rows
    record = {"dataset": dataset, "model": model_name, "base": base, "split": "val", "rows": rows,
              "description": "each candidate fitted on the training split, scored on the validation split only"}
    write_json(target, record)
    return record

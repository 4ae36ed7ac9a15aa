"""One function per DVC stage. Each reads params.yaml's sections it needs, writes its outputs
atomically, and records its own wall time. Stage scripts in `stages/` only parse arguments and
call these, so everything here is testable without DVC.

Outputs (relative to the repository root):
  data/<dataset>/              splits.pt, meta.json                       (prepare)
  evaluators/<dataset>/        evaluator.pt, evaluator.json               (evaluator)
  models/<dataset>/<model>/    model.pt, train.json                       (train)
  curves/<dataset>/<model>.csv training curve                             (train)
  samples/<dataset>/<model>/   samples.pt, grid.png, info.json            (sample)
  anomaly/<dataset>/<model>.json                                          (anomaly)
  metrics/<dataset>/<model>.json                                          (evaluate)
  reports/                                                                (report)
"""

from __future__ import annotations

import csv
import io
import math
import time
from pathlib import Path
from typing import Any

import torch

from genbench.config import ConfigError, check_type, section
from genbench.data import get_loader
from genbench.data.prepare import PreparedData, prepare
from genbench.io import atomic_directory, atomic_file, read_json, write_json, write_text
from genbench.models import create_model
from genbench.models.base import Model, capabilities, resolve_device

# Each stage is a fresh process, and torchvision, torchmetrics and scikit-learn take seconds to
# import on a small CPU: the stage functions import what they alone need.


class Paths:
    def __init__(self, root: str | Path = "."):
        self.root = Path(root)

    def data(self, dataset: str) -> Path:
        return self.root / "data" / dataset

    def evaluator(self, dataset: str) -> Path:
        return self.root / "evaluators" / dataset

    def model(self, dataset: str, model: str) -> Path:
        return self.root / "models" / dataset / model

    def curve(self, dataset: str, model: str) -> Path:
        return self.root / "curves" / dataset / f"{model}.csv"

    def samples(self, dataset: str, model: str) -> Path:
        return self.root / "samples" / dataset / model

    def anomaly(self, dataset: str, model: str) -> Path:
        return self.root / "anomaly" / dataset / f"{model}.json"

    def metrics(self, dataset: str, model: str) -> Path:
        return self.root / "metrics" / dataset / f"{model}.json"


# --- params ------------------------------------------------------------------------------------


def check_selection(params: dict[str, Any], dataset: str | None = None, model: str | None = None) -> None:
    """Fail at once, listing registered names, on an unknown dataset or model anywhere in params.yaml."""
    from genbench.data import dataset_names
    from genbench.models import model_names

    for key, known in (("datasets", dataset_names()), ("models", model_names())):
        entries = section(params, key) or {}
        if not isinstance(entries, dict):
            raise ConfigError(f"params.yaml: '{key}' must be a mapping of names to settings")
        unknown = sorted(set(entries) - set(known))
        if unknown:
            raise ConfigError(f"params.yaml: unknown {key[:-1]} name(s) {unknown} under '{key}:'; registered: {', '.join(known)}")
    if dataset is not None and dataset not in params["datasets"]:
        raise ConfigError(f"dataset '{dataset}' is not under 'datasets:' in params.yaml")
    if model is not None and model not in params["models"]:
        raise ConfigError(f"model '{model}' is not under 'models:' in params.yaml")


def seed_of(params: dict[str, Any]) -> int:
    return check_type("seed", params.get("seed", 0), int, low=0)


def device_of(params: dict[str, Any]) -> torch.device:
    device = check_type("device", params.get("device", "auto"), str)
    return resolve_device(device)


def protocol(params: dict[str, Any]) -> dict[str, Any]:
    p = dict(params.get("protocol") or {})
    check_type("protocol.fid_samples", p.setdefault("fid_samples", 1000), int, low=2)
    check_type("protocol.grid_samples", p.setdefault("grid_samples", 100), int, low=1)
    check_type("protocol.fid_reference_split", p.setdefault("fid_reference_split", "test"), str, choices=("test", "val"))
    anomaly = dict(p.get("anomaly") or {})
    anomaly.setdefault("normal_classes", "all")
    p["anomaly"] = anomaly
    return p


def build_model(params: dict[str, Any], model: str) -> Model:
    return create_model(model, section(params, f"models.{model}") or {}, device=str(params.get("device", "auto")))


# --- stages ------------------------------------------------------------------------------------


def run_prepare(params: dict[str, Any], dataset: str, root: str | Path = ".") -> dict:
    check_selection(params, dataset=dataset)
    config = dict(section(params, f"datasets.{dataset}") or {})
    config.setdefault("root", str(Path(root) / "downloads"))  # raw files, outside the DVC outputs
    # No timing in the output: the same data must hash the same, or every downstream stage reruns.
    with atomic_directory(Paths(root).data(dataset)) as out:
        return prepare(dataset, config, out, seed=seed_of(params))


def run_evaluator(params: dict[str, Any], dataset: str, root: str | Path = ".") -> dict:
    from genbench.evaluator import predict, train_evaluator, weights_sha256
    from genbench.metrics.fid import frechet_distance

    check_selection(params, dataset=dataset)
    start = time.perf_counter()
    cfg = dict(params.get("evaluator") or {})
    feature_dim = check_type("evaluator.feature_dim", cfg.get("feature_dim", 64), int, low=2)
    epochs = check_type("evaluator.epochs", cfg.get("epochs", 30), int, low=1)
    batch_size = check_type("evaluator.batch_size", cfg.get("batch_size", 64), int, low=1)
    lr = check_type("evaluator.lr", cfg.get("lr", 1e-3), float, low=0.0)
    seed, device = seed_of(params), device_of(params)
    paths = Paths(root)
    data = PreparedData(paths.data(dataset))
    train, test = data.split("train"), data.split("test")
    net, history = train_evaluator(train, feature_dim=feature_dim, epochs=epochs, batch_size=batch_size,
                                   lr=lr, seed=seed, device=device)
    accuracy = float((predict(net, test.x).argmax(1) == test.y).double().mean())
    reference = frechet_distance(net, feature_dim, test.x, train.x)
    record = {
        "dataset": dataset,
        "architecture": "3-layer CNN classifier (genbench.evaluator.EvaluatorNet), pre-activation penultimate features",
        "feature_dim": feature_dim,
        "epochs": epochs,
        "test_accuracy": accuracy,
        "sha256": weights_sha256(net),
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
    with atomic_directory(paths.evaluator(dataset)) as out:
        torch.save({"state": net.state_dict(), "image_shape": train.image_shape, "num_classes": train.num_classes,
                    "feature_dim": feature_dim}, out / "evaluator.pt")
        write_json(out / "evaluator.json", record)
    return record


def load_evaluator(directory: Path) -> tuple[Any, dict]:
    from genbench.evaluator import EvaluatorNet

    saved = torch.load(directory / "evaluator.pt", weights_only=True)
    net = EvaluatorNet(tuple(saved["image_shape"]), int(saved["num_classes"]), int(saved["feature_dim"]))
    net.load_state_dict(saved["state"])
    return net.eval(), read_json(directory / "evaluator.json")


def run_train(params: dict[str, Any], dataset: str, model_name: str, root: str | Path = ".") -> dict:
    check_selection(params, dataset=dataset, model=model_name)
    paths = Paths(root)
    model = build_model(params, model_name)
    data = PreparedData(paths.data(dataset))
    train = data.split("train")
    seed = seed_of(params)
    with atomic_directory(paths.model(dataset, model_name)) as out:
        start = time.perf_counter()
        model.fit(train, seed=seed)
        seconds = time.perf_counter() - start
        record = {
            "dataset": dataset, "model": model_name, "kind": model.kind,
            "capabilities": capabilities(model), "hyperparameters": model.get_params(),
            "train_seconds": seconds, "device": str(device_of(params)), "n_train": len(train), "seed": seed,
        }
        model.save(out)
        write_json(out / "train.json", record)
        _write_curve(paths.curve(dataset, model_name), model.history)
    return record


def _write_curve(path: Path, history: list[dict[str, float]]) -> None:
    columns = ["epoch"] + sorted({k for row in history for k in row if k != "epoch"}) if history else ["epoch", "loss"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(history)
    write_text(path, buffer.getvalue())


def _load_model(paths: Paths, dataset: str, model_name: str) -> Model:
    directory = paths.model(dataset, model_name)
    if not (directory / "model.pt").exists():
        raise FileNotFoundError(f"{directory}/model.pt is missing: run `dvc repro train@{dataset}-{model_name}` first")
    return Model.load(directory)


def run_sample(params: dict[str, Any], dataset: str, model_name: str, root: str | Path = ".") -> dict:
    from torchvision.utils import make_grid, save_image

    check_selection(params, dataset=dataset, model=model_name)
    paths = Paths(root)
    model = _load_model(paths, dataset, model_name)
    proto, seed = protocol(params), seed_of(params)
    with atomic_directory(paths.samples(dataset, model_name)) as out:
        if "generate" not in capabilities(model):
            info = {"capable": False, "reason": f"{model_name} has no sample() method"}
        else:
            start = time.perf_counter()
            generator = torch.Generator().manual_seed(seed)
            conditional = bool(getattr(model, "conditional", False))
            meta = read_json(paths.data(dataset) / "meta.json")
            classes = meta["num_classes"]
            n = proto["fid_samples"]
            # Conditional models draw balanced classes, and keep the labels for CAS.
            labels = torch.arange(n) % classes if conditional else None
            samples = model.sample(n, y=labels, generator=generator) if conditional else model.sample(n, generator=generator)
            _check_images(model_name, samples, n)
            seconds = time.perf_counter() - start
            torch.save(samples, out / "samples.pt")
            if labels is not None:
                torch.save(labels, out / "labels.pt")
            if conditional:  # one row per class
                per_row = max(1, proto["grid_samples"] // classes)
                y = torch.arange(classes).repeat_interleave(per_row)
                grid = model.sample(len(y), y=y, generator=torch.Generator().manual_seed(seed))
                nrow = per_row
            else:
                grid, nrow = samples[: proto["grid_samples"]], int(math.sqrt(proto["grid_samples"]))
            with atomic_file(out / "grid.png") as tmp:
                save_image(make_grid(grid, nrow=nrow, padding=1, pad_value=0.5), tmp, format="png")
            figures = {}
            if callable(getattr(model, "figures", None)):
                test = PreparedData(paths.data(dataset)).split("test")
                for name, (images, per_row_fig) in model.figures(test, generator=torch.Generator().manual_seed(seed)).items():
                    with atomic_file(out / f"figure-{name}.png") as tmp:
                        save_image(make_grid(images.clamp(0, 1), nrow=per_row_fig, padding=1, pad_value=0.5), tmp, format="png")
                    figures[name] = f"figure-{name}.png"
            info = {"capable": True, "n": len(samples), "seed": seed, "sample_seconds": seconds,
                    "conditional": conditional, "image_shape": list(samples.shape[1:]), "figures": figures}
        write_json(out / "info.json", info)
    return info


def _check_images(model_name: str, images: torch.Tensor, n: int) -> None:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or len(images) != n:
        raise ValueError(f"{model_name}.sample({n}) must return an (n, C, H, W) tensor, got {getattr(images, 'shape', type(images))}")
    if not torch.isfinite(images).all() or images.min() < 0 or images.max() > 1:
        raise ValueError(f"{model_name}.sample returned values outside [0, 1] or non-finite")


def run_anomaly(params: dict[str, Any], dataset: str, model_name: str, root: str | Path = ".") -> dict:
    """One-class protocol: a fresh model per normal class, scored on the whole test split."""
    from genbench.metrics import anomaly as anomaly_metrics
    from genbench.metrics.likelihood import model_input

    check_selection(params, dataset=dataset, model=model_name)
    paths = Paths(root)
    start = time.perf_counter()
    probe = build_model(params, model_name)
    data = PreparedData(paths.data(dataset))
    train, test = data.split("train"), data.split("test")
    normal = protocol(params)["anomaly"]["normal_classes"]
    classes = list(range(data.num_classes)) if normal == "all" else normal
    if not isinstance(classes, list) or not all(isinstance(c, int) and 0 <= c < data.num_classes for c in classes):
        raise ConfigError(f"params.yaml: 'protocol.anomaly.normal_classes' must be 'all' or a list of class indices in 0..{data.num_classes - 1}")
    caps = capabilities(probe)
    if probe.kind == "discriminative":
        record = {"skipped": "a classifier needs two or more classes to train; the one-class protocol gives it one"}
    elif "detect" not in caps and "density" not in caps:
        record = {"skipped": f"{model_name} has neither anomaly_score() nor log_prob()"}
    else:
        per_class, score_name = {}, None
        seed = seed_of(params)
        for c in classes:
            model = build_model(params, model_name).fit(train.subset(train.y == c, name=f"train class {c}"), seed=seed)
            if hasattr(model, "anomaly_score"):
                scores, score_name = torch.as_tensor(model.anomaly_score(test.x)), "anomaly_score()"
            else:
                scores = -torch.as_tensor(model.log_prob(model_input(model, data, "test", seed=seed)))
                score_name = f"-log_prob() ({model.likelihood_space} space)"
            per_class[str(c)] = anomaly_metrics.auroc(scores, test.y != c)
        record = {
            "auroc_mean": sum(per_class.values()) / len(per_class),
            "auroc_per_class": per_class,
            "normal_classes": classes,
            "protocol": anomaly_metrics.PROTOCOL,
            "score": score_name,
            "split": "test",
            "n": len(test),
        }
    record["anomaly_seconds"] = time.perf_counter() - start
    write_json(paths.anomaly(dataset, model_name), record)
    return record


def run_evaluate(params: dict[str, Any], dataset: str, model_name: str, root: str | Path = ".") -> dict:
    from genbench.evaluator import predict
    from genbench.metrics.classification import classification_record
    from genbench.metrics.fid import frechet_distance
    from genbench.metrics.likelihood import model_input, nll_record
    from genbench.metrics.representation import linear_probe

    check_selection(params, dataset=dataset, model=model_name)
    paths = Paths(root)
    start = time.perf_counter()
    model = _load_model(paths, dataset, model_name)
    data = PreparedData(paths.data(dataset))
    proto, seed = protocol(params), seed_of(params)
    test = data.split("test")
    trained = read_json(paths.model(dataset, model_name) / "train.json")
    caps = capabilities(model)
    record: dict[str, Any] = {
        "dataset": dataset, "model": model_name, "kind": model.kind, "capabilities": caps,
        "hyperparameters": trained["hyperparameters"], "not_applicable": {},
    }
    if "classify" in caps:
        record["classification"] = classification_record(model.predict_proba(test.x), test.y, data.num_classes, split="test")
    else:
        record["not_applicable"]["classification"] = "no predict_proba()"
    if "density" in caps:
        x = model_input(model, data, "test", seed=seed)
        common = dict(space=model.likelihood_space, dim=test.dim, levels=data.levels, split="test")
        record["likelihood"] = nll_record(torch.as_tensor(model.log_prob(x)), info=model.likelihood_info, **common)
        if callable(getattr(model, "elbo", None)):
            record["likelihood_extra"] = [nll_record(torch.as_tensor(model.elbo(x)), info=model.elbo_info, **common)]
    else:
        record["not_applicable"]["likelihood"] = "no log_prob()"
    if "represent" in caps:
        record["linear_probe"] = linear_probe(model, data.split("train"), test, seed=seed)
    net, evaluator = load_evaluator(paths.evaluator(dataset))
    samples_info = read_json(paths.samples(dataset, model_name) / "info.json")
    if samples_info["capable"]:
        record.update(sample_quality(params, paths, dataset, model_name, data, net, evaluator, model))
    else:
        for key in ("fid", "prdc", "memorisation"):
            record["not_applicable"][key] = samples_info["reason"]
    if callable(getattr(model, "extra_metrics", None)):
        def classify(images: torch.Tensor) -> torch.Tensor:
            return predict(net, images).argmax(1)

        def fid(real: torch.Tensor, fake: torch.Tensor) -> float:
            return frechet_distance(net, evaluator["feature_dim"], real, fake)

        record["extra"] = model.extra_metrics(test, classify=classify, fid=fid)
    anomaly = read_json(paths.anomaly(dataset, model_name))
    if "skipped" in anomaly:
        record["not_applicable"]["anomaly"] = anomaly["skipped"]
    else:
        record["anomaly"] = {k: v for k, v in anomaly.items() if k != "anomaly_seconds"}
    cost = {
        "train_seconds": trained["train_seconds"],
        "sample_seconds": samples_info.get("sample_seconds"),
        "anomaly_seconds": anomaly["anomaly_seconds"],
        "evaluate_seconds": time.perf_counter() - start,
        "device": trained["device"],
    }
    cost["total_seconds"] = sum(v for k, v in cost.items() if k.endswith("_seconds") and v is not None)
    record["cost"] = cost
    write_json(paths.metrics(dataset, model_name), record)
    return record


def sample_quality(params: dict[str, Any], paths: Paths, dataset: str, model_name: str, data: PreparedData,
                   net: torch.nn.Module, evaluator: dict, model: Any = None) -> dict[str, dict]:
    """FID, precision/recall/density/coverage, memorisation, and CAS for conditional samples.

    A model whose samples live in another domain than the data (cyclegan: translated images)
    provides `sample_domain(x)`, mapping real images into that domain; the reference and training
    images are then compared in that domain."""
    from genbench.metrics.fid import frechet_distance
    from genbench.metrics.sample_quality import classification_accuracy_score, evaluator_features, memorisation, prdc

    proto, seed = protocol(params), seed_of(params)
    directory = paths.samples(dataset, model_name)
    samples = torch.load(directory / "samples.pt", weights_only=True)
    reference = data.split(proto["fid_reference_split"]).x
    train_x, test_x = data.split("train").x, data.split("test").x
    domain = getattr(model, "sample_domain", None)
    reference_domain = None  # the images as they are
    if callable(domain):
        reference, train_x, test_x = domain(reference), domain(train_x), domain(test_x)
        reference_domain = getattr(model, "sample_domain_label", f"{model_name}.sample_domain() of the images")
    features = {"features": "evaluator-cnn", "features_sha256": evaluator["sha256"], "feature_dim": evaluator["feature_dim"],
                "reference_split": proto["fid_reference_split"], "seed": seed}
    if reference_domain:
        features["reference_domain"] = reference_domain
    out = {"fid": {"value": frechet_distance(net, evaluator["feature_dim"], reference, samples),
                   "n_generated": len(samples), "n_reference": len(reference), **features}}
    k = check_type("protocol.prdc_k", proto.get("prdc_k", 5), int, low=1)
    out["prdc"] = {**prdc(evaluator_features(net, reference), evaluator_features(net, samples), k=k),
                   "method": "Kynkäänniemi et al. 2019 (precision, recall); Naeem et al. 2020 (density, coverage)",
                   **features}
    out["memorisation"] = {**memorisation(train_x, test_x, samples),
                           "space": "pixels (L2)", "seed": seed}
    if reference_domain:
        out["memorisation"]["reference_domain"] = reference_domain
    if (directory / "labels.pt").exists():
        cfg = dict(params.get("evaluator") or {})
        cas = classification_accuracy_score(
            samples, torch.load(directory / "labels.pt", weights_only=True), data.split("test"),
            image_shape=tuple(samples.shape[1:]), num_classes=data.num_classes,
            feature_dim=evaluator["feature_dim"], epochs=cfg.get("epochs", 30), batch_size=cfg.get("batch_size", 64),
            lr=cfg.get("lr", 1e-3), seed=seed, device=device_of(params))
        out["cas"] = {**cas, "real_data_accuracy": evaluator["test_accuracy"], "split": "test",
                      "classifier": "the evaluator architecture and training recipe (Ravuri & Vinyals 2019)"}
    return out


def run_report(params: dict[str, Any], root: str | Path = ".") -> dict:
    from genbench.report import build_report

    return build_report(Path(root), Path(root) / "reports")

"""What the stages share: where outputs go, and reading params.yaml's common sections with errors that
name the key. The stage functions live next to what they run: `genbench.data.prepare.run_prepare`,
`genbench.pinned_evaluator.run_evaluator`, `genbench.runner.run_model`, `genbench.summary.run_summary`,
`genbench.studies.run_learning_curve` and
`run_augmentation`, `genbench.report.run_report` and
`run_index` (the CLI's table `genbench.cli.STAGES`). Each writes its outputs atomically.

Every generated output of a dataset lies under results/<dataset>/ (relative to the repository root);
the committed inputs and the pages people read lie apart:
  evaluators/<dataset>/                 evaluator.pt, evaluator.json: the pinned FID network, committed
                                        (trained only by `genbench evaluator <dataset> --retrain`)
  results/<dataset>/data/               splits.pt, meta.json                     (prepare)
  results/<dataset>/reference.json      the real-data FID floor                  (evaluator)
  results/<dataset>/<model>/model/      seed-<s>/model.pt                        (model stage)
  results/<dataset>/<model>/samples/    grid.png, figure-*.png, info.json        (model stage)
  results/<dataset>/<model>/curve.csv   training curves, one per seed            (model stage)
  results/<dataset>/<model>/raw/        per seed: what every metric is computed from, stage.json  (model stage)
  results/<dataset>/<model>/summary.json  per-seed records, means, 95% intervals (summary stage, from raw/)
  results/<dataset>/<model>/<study>.json  learning_curve, augmentation           (the study stages)
  reports/<dataset>/, reports/index.html                                         (report, index)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from genbench.config import ConfigError, check_type, section


class Paths:
    """Where things are under a root: the repository (what a stage reads) or, for what a stage writes, the
    folder the engine stages its outputs in (genbench.engine), which mirrors the repository's layout."""

    def __init__(self, root: str | Path = "."):
        self.root = Path(root)

    def evaluator(self, dataset: str) -> Path:
        return self.root / "evaluators" / dataset

    def results(self, dataset: str) -> Path:
        return self.root / "results" / dataset

    def data(self, dataset: str) -> Path:
        return self.results(dataset) / "data"

    def reference(self, dataset: str) -> Path:
        return self.results(dataset) / "reference.json"

    def model(self, dataset: str, model: str) -> Path:
        return self.results(dataset) / model / "model"

    def curve(self, dataset: str, model: str) -> Path:
        return self.results(dataset) / model / "curve.csv"

    def samples(self, dataset: str, model: str) -> Path:
        return self.results(dataset) / model / "samples"

    def raw(self, dataset: str, model: str) -> Path:
        return self.results(dataset) / model / "raw"

    def metrics(self, dataset: str, model: str) -> Path:
        return self.results(dataset) / model / "summary.json"

    def study(self, dataset: str, study: str, model: str) -> Path:
        return self.results(dataset) / model / f"{study}.json"

    def report(self, dataset: str) -> Path:
        return self.root / "reports" / dataset


def check_selection(params: dict[str, Any], dataset: str | None = None, model: str | None = None) -> None:
    """Fail at once, listing registered names, on an unknown dataset or model anywhere in params.yaml."""
    from genbench.data import dataset_names
    from genbench.models import model_names

    for key, known in (("datasets", dataset_names()), ("models", model_names())):
        entries = params.get(key) or {}
        if not isinstance(entries, dict):
            raise ConfigError(f"params.yaml: '{key}' must be a mapping of names to settings")
        unknown = sorted(set(entries) - set(known))
        if unknown:
            raise ConfigError(f"params.yaml: unknown {key[:-1]} name(s) {unknown} under '{key}:'; registered: {', '.join(known)}")
    overrides_of(params)
    if dataset is not None and dataset not in (params.get("datasets") or {}):
        raise ConfigError(f"dataset '{dataset}' is not under 'datasets:' in params.yaml")
    if model is not None and model not in (params.get("models") or {}):
        raise ConfigError(f"model '{model}' is not under 'models:' in params.yaml")


def enabled_datasets(params: dict[str, Any]) -> list[str]:
    """The datasets `dvc repro` builds: those under `datasets:` without `enabled: false`. A dataset that is
    turned off keeps its committed results (the entry page still links them) and gets no pipeline."""
    datasets = params.get("datasets") or {}
    if not isinstance(datasets, dict):
        raise ConfigError("params.yaml: 'datasets' must be a mapping of names to settings")
    names = []
    for name, settings in datasets.items():
        if settings is not None and not isinstance(settings, dict):
            raise ConfigError(f"params.yaml: 'datasets.{name}' must be a mapping of settings (or {{}}), got {settings!r}")
        enabled = (settings or {}).get("enabled", True)
        check_type(f"datasets.{name}.enabled", enabled, bool)
        if enabled:
            names.append(name)
    return names


def dataset_settings(params: dict[str, Any], dataset: str) -> dict[str, Any]:
    """`datasets.<dataset>` as its prepare stage reads it: the settings that make the data, without `enabled`
    (turning a dataset off and on again changes no data, so it reruns nothing)."""
    return {key: value for key, value in (section(params, f"datasets.{dataset}") or {}).items() if key != "enabled"}


def index_datasets(params: dict[str, Any], reports_dir: str | Path) -> list[str]:
    """The datasets the entry page shows: every enabled one, and every one turned off whose report is
    committed (`reports_dir/<dataset>/summary.json`), so its results stay browsable without its data."""
    enabled = enabled_datasets(params)
    return [name for name in params.get("datasets") or {}
            if name in enabled or (Path(reports_dir) / name / "summary.json").exists()]


# What `overrides.<dataset>` may set: the same model needs other epochs or widths on 28x28 or 32x32x3
# images than on 8x8 digits, and the feature network and protocol may need other settings too.
OVERRIDABLE = ("models", "evaluator", "protocol", "studies")


def overrides_of(params: dict[str, Any], dataset: str | None = None) -> dict[str, Any]:
    """`overrides:` checked (datasets and models it names must be under `datasets:` and `models:`, its
    sections among OVERRIDABLE); the section of `dataset`, or the whole mapping when `dataset` is None."""
    overrides = params.get("overrides") or {}
    if not isinstance(overrides, dict):
        raise ConfigError("params.yaml: 'overrides' must map dataset names to settings, e.g. "
                          "{fashion_mnist: {models: {vae: {epochs: 50}}}}")
    datasets, models = params.get("datasets") or {}, params.get("models") or {}
    for name, settings in overrides.items():
        if name not in datasets:
            raise ConfigError(f"params.yaml: 'overrides.{name}': '{name}' is not under 'datasets:' "
                              f"({', '.join(datasets) or 'none'}); remove the override or add the dataset")
        if not isinstance(settings, dict) or set(settings) - set(OVERRIDABLE):
            raise ConfigError(f"params.yaml: 'overrides.{name}' may hold only {', '.join(OVERRIDABLE)}, "
                              f"got {sorted(settings) if isinstance(settings, dict) else settings!r}")
        for key, value in settings.items():
            if not isinstance(value, dict):
                raise ConfigError(f"params.yaml: 'overrides.{name}.{key}' must be a mapping")
        for model, hyper in (settings.get("models") or {}).items():
            if model not in models:
                raise ConfigError(f"params.yaml: 'overrides.{name}.models.{model}': '{model}' is not under 'models:'")
            if not isinstance(hyper, dict):
                raise ConfigError(f"params.yaml: 'overrides.{name}.models.{model}' must map hyperparameters to values")
    return overrides if dataset is None else dict(overrides.get(dataset) or {})


def _merged(base: Any, update: dict) -> dict:
    out = dict(base or {})
    for key, value in update.items():
        out[key] = _merged(out.get(key), value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def dataset_params(params: dict[str, Any], dataset: str) -> dict[str, Any]:
    """params.yaml as `dataset`'s stages see it: `overrides.<dataset>` merged over `models:`,
    `evaluator:` and `protocol:` (a model's override replaces single hyperparameters, not its section)."""
    overrides = overrides_of(params, dataset)
    if not overrides:
        return params
    return {**params, **{key: _merged(params.get(key), value) for key, value in overrides.items()}}


def data_seed_of(params: dict[str, Any]) -> int:
    """The seed of the data splits, the test-set binarisation and the evaluator: the same for every model seed."""
    if "seed" in params and "data_seed" not in params:
        raise ConfigError("params.yaml: 'seed' is now 'data_seed' (the splits' seed); model seeds are the list 'seeds'")
    return check_type("data_seed", params.get("data_seed", 0), int, low=0)


def seeds_of(params: dict[str, Any], model: str | None = None) -> list[int]:
    """The model seeds: every model is trained, sampled and evaluated once per seed. `models.<model>.seeds`,
    where set, replaces the top-level list for that model (more seeds where a seed costs seconds)."""
    where = "seeds"
    seeds = params.get("seeds", [0])
    if model is not None and "seeds" in (section(params, f"models.{model}") or {}):
        where, seeds = f"models.{model}.seeds", section(params, f"models.{model}")["seeds"]
    if not isinstance(seeds, list) or not seeds:
        raise ConfigError(f"params.yaml: '{where}' must be a non-empty list of integers, e.g. [0, 1, 2]; got {seeds!r}")
    for i, seed in enumerate(seeds):
        check_type(f"{where}[{i}]", seed, int, low=0)
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"params.yaml: '{where}' has repeated values {seeds}: each seed must be distinct")
    return list(seeds)


def device_of(params: dict[str, Any]):
    from genbench.models.base import resolve_device

    return resolve_device(check_type("device", params.get("device", "auto"), str))


def model_device(model: Any, configured: Any) -> Any:
    """Where `model` computes: the configured device for a model with a `device` setting (the torch
    models), else the CPU (scikit-learn and numpy models), whose tasks then run on CPU workers even on a
    GPU machine, and whose cost records say cpu."""
    import torch

    return configured if "device" in model.get_params() else torch.device("cpu")


def protocol(params: dict[str, Any]) -> dict[str, Any]:
    p = dict(params.get("protocol") or {})
    check_type("protocol.fid_samples", p.setdefault("fid_samples", 1000), int, low=2)
    check_type("protocol.grid_samples", p.setdefault("grid_samples", 100), int, low=1)
    check_type("protocol.fid_reference_split", p.setdefault("fid_reference_split", "test"), str, choices=("test", "val"))
    check_type("protocol.prdc_k", p.setdefault("prdc_k", 5), int, low=1)
    anomaly = dict(p.get("anomaly") or {})
    anomaly.setdefault("normal_classes", "all")
    skip = anomaly.setdefault("skip_models", [])
    unknown = set(skip) - set(params.get("models") or {}) if isinstance(skip, list) else None
    if unknown is None or unknown:
        raise ConfigError(f"params.yaml: 'protocol.anomaly.skip_models' must list model names under 'models:'; "
                          f"got {skip!r}")
    p["anomaly"] = anomaly
    return p


def build_model(params: dict[str, Any], model: str):
    from genbench.models import create_model

    hyperparameters = {k: v for k, v in (section(params, f"models.{model}") or {}).items() if k != "seeds"}
    return create_model(model, hyperparameters, device=str(params.get("device", "auto")))

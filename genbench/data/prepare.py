"""The `prepare` stage: load a dataset, cut fixed seeded splits, store them with checksums."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genbench.config import ConfigError, check_type
from genbench.data import RawDataset, Split, binarize, get_loader, sha256
from genbench.io import atomic_file, read_json, write_json

SPLITS = ("train", "val", "test")
_KNOWN_KEYS = {"val_fraction", "test_fraction", "max_train", "max_test", "data_dir", "download", "root"}


def check_dataset_config(name: str, config: dict[str, Any] | None) -> dict[str, Any]:
    config = dict(config or {})
    unknown = set(config) - _KNOWN_KEYS
    if unknown:
        raise ConfigError(f"params.yaml: datasets.{name} has unknown keys {sorted(unknown)}; known: {sorted(_KNOWN_KEYS)}")
    check_type(f"datasets.{name}.val_fraction", config.setdefault("val_fraction", 0.1), float, low=0.0, high=0.5)
    check_type(f"datasets.{name}.test_fraction", config.setdefault("test_fraction", 0.2), float, low=0.05, high=0.5)
    for key in ("max_train", "max_test"):
        if config.get(key) is not None:
            check_type(f"datasets.{name}.{key}", config[key], int, low=10)
    return config


def prepare(name: str, config: dict[str, Any] | None, out_dir: str | Path, *, seed: int,
            downloads: str | Path | None = None) -> dict[str, Any]:
    """Write `out_dir/splits.pt` and `out_dir/meta.json`; return the metadata. `downloads`: where a loader
    keeps raw files when `config` names no `root`; not recorded, so the data hash the same in every clone."""
    config = check_dataset_config(name, config)
    loader_kwargs = {k: config[k] for k in ("data_dir", "download", "root") if k in config}
    if downloads is not None:
        loader_kwargs.setdefault("root", str(downloads))
    raw = get_loader(name)(**loader_kwargs)
    splits = make_splits(raw, config, seed=seed)

    gen = torch.Generator().manual_seed(seed + 1)
    binary = {
        f"{s}_binary": binarize(splits[f"{s}_x"].float() / (raw.levels - 1), gen).to(torch.uint8) for s in ("val", "test")
    }
    payload = {**splits, **binary, "levels": raw.levels}
    out_dir = Path(out_dir)
    with atomic_file(out_dir / "splits.pt") as tmp:
        torch.save(payload, tmp)
    meta = {
        "dataset": name,
        "levels": raw.levels,
        "image_shape": list(splits["train_x"].shape[1:]),
        "num_classes": len(raw.class_names),
        "class_names": raw.class_names,
        "seed": seed,
        "config": config,
        "source": raw.source,
        "sizes": {s: int(len(splits[f"{s}_y"])) for s in SPLITS},
        "sha256": {key: sha256(value) for key, value in payload.items() if isinstance(value, torch.Tensor)},
        "binarisation": "fixed stochastic binarisation of val/test (Bernoulli(intensity), seed + 1); "
        "dynamic binarisation for training",
    }
    write_json(out_dir / "meta.json", meta)
    return meta


def make_splits(raw: RawDataset, config: dict[str, Any], *, seed: int) -> dict[str, torch.Tensor]:
    from sklearn.model_selection import train_test_split  # slow to import: only the prepare stage needs it

    x, y = raw.train_images, raw.train_labels
    if raw.test_images is None:
        x, x_test, y, y_test = train_test_split(x, y, test_size=config["test_fraction"], random_state=seed, stratify=y)
    else:
        x_test, y_test = raw.test_images, raw.test_labels
    x_train, x_val, y_train, y_val = train_test_split(x, y, test_size=config["val_fraction"], random_state=seed, stratify=y)
    # stratified subsamples for quicker CPU runs; the sizes are in meta.json and the report's title
    if config.get("max_train") and len(x_train) > config["max_train"]:
        x_train, _, y_train, _ = train_test_split(
            x_train, y_train, train_size=config["max_train"], random_state=seed, stratify=y_train
        )
    if config.get("max_test") and len(x_test) > config["max_test"]:
        x_test, _, y_test, _ = train_test_split(
            x_test, y_test, train_size=config["max_test"], random_state=seed, stratify=y_test
        )
    out = {}
    for split, (xs, ys) in {"train": (x_train, y_train), "val": (x_val, y_val), "test": (x_test, y_test)}.items():
        out[f"{split}_x"] = torch.from_numpy(np.ascontiguousarray(xs, dtype=np.uint8))
        out[f"{split}_y"] = torch.from_numpy(np.asarray(ys, dtype=np.int64))
    return out


class PreparedData:
    """The prepared splits of one dataset, as the later stages read them."""

    def __init__(self, directory: str | Path):
        directory = Path(directory)
        if not (directory / "splits.pt").exists():
            raise FileNotFoundError(f"{directory}/splits.pt is missing: run `uv run dvc repro` first (its prepare stage writes it)")
        self.meta = read_json(directory / "meta.json")
        self._payload = torch.load(directory / "splits.pt", weights_only=True)
        self.levels: int = int(self._payload["levels"])
        self.num_classes: int = int(self.meta["num_classes"])
        self.name: str = self.meta["dataset"]

    def split(self, name: str) -> Split:
        x = self._payload[f"{name}_x"].float() / (self.levels - 1)
        return Split(x, self._payload[f"{name}_y"], self.levels, self.num_classes, name)

    def binary(self, name: str) -> Split:
        """The fixed stochastic binarisation of the val or test split."""
        x = self._payload[f"{name}_binary"].float()
        return Split(x, self._payload[f"{name}_y"], 2, self.num_classes, f"{name}_binary")


def run_prepare(params: dict[str, Any], dataset: str, root: str | Path = ".", out: str | Path | None = None) -> dict:
    """The prepare stage: results/<dataset>/data/ (under `out`, default `root`) from params.yaml's datasets.<dataset> and data_seed."""
    from genbench.io import atomic_directory
    from genbench.params import Paths, check_selection, data_seed_of, dataset_settings

    check_selection(params, dataset=dataset)
    config = dataset_settings(params, dataset)
    # No timing and no path of this clone in the output: the same data must hash the same, or every
    # downstream stage reruns. Raw files go under downloads/, outside the DVC outputs.
    with atomic_directory(Paths(root if out is None else out).data(dataset)) as directory:
        return prepare(dataset, config, directory, seed=data_seed_of(params), downloads=Path(root) / "downloads")


def fingerprint(directory: str | Path) -> tuple:
    """(name, mtime, size) of a folder's files: changes whenever a stage rewrites them."""
    return tuple((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(Path(directory).iterdir()))


def cached_prepared(directory: str | Path) -> PreparedData:
    """PreparedData read once per process while its files are unchanged: an engine worker serves many tasks."""
    return _cached(str(directory), fingerprint(directory))


@functools.lru_cache(maxsize=2)
def _cached(directory: str, _fingerprint: tuple) -> PreparedData:
    return PreparedData(directory)

"""Metrics records -> the dicts every report table reads.

A record, `metrics/<dataset>/<model>.json`, covers all seeds of one model: `summary` has one seed's
shape (`classification`, `likelihood`, `fid`, `cost`, ...) holding means over seeds, `intervals` maps a
dotted path in `summary` ("classification.accuracy", "likelihood_extra.0.nll_nats") to
{mean, low, high, n_seeds, method}, and `per_seed` lists each seed's own record. `load_records` lifts the
summary's sections to the top level, next to the record's identity, so a table reads
`record["classification"]["accuracy"]` and `interval(record, "classification.accuracy")`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

from genbench.io import read_json
from genbench.params import Paths

# The stage that writes metrics/<dataset>/<model>.json, named in the error for a missing record: the
# model's stage in the dataset's generated pipeline (genbench.dvc_pipelines).
RECORD_STAGE = "pipelines/{dataset}/dvc.yaml:{model}"
IDENTITY = ("dataset", "model", "kind", "capabilities", "hyperparameters", "not_applicable")


def _stage(path: Path) -> str:
    """The DVC stage that writes results/<dataset>/<model>/summary.json."""
    return RECORD_STAGE.format(dataset=path.parent.parent.name, model=f"summary-{path.parent.name}")


def lookup(data: Any, path: str) -> Any:
    """`data` at a dotted path ("fid.value", "likelihood_extra.0.nll_nats"); None where absent."""
    for part in path.split("."):
        if isinstance(data, dict):
            data = data.get(part)
        elif isinstance(data, list) and part.isdigit() and int(part) < len(data):
            data = data[int(part)]
        else:
            return None
        if data is None:
            return None
    return data


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _integral(value: Any) -> Any:
    """Means of counts (n, levels, bins: equal over seeds) come back as ints, so they print as such."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _integral(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integral(v) for v in value]
    return value


def interval(record: dict, path: str) -> dict | None:
    """The record's interval for a summary path, or None."""
    found = (record.get("intervals") or {}).get(path)
    return found if isinstance(found, dict) else None


def normalise(raw: dict, path: Path) -> dict[str, Any]:
    """One record file's content -> summary sections at the top level plus identity, seeds, intervals."""
    if not isinstance(raw, dict) or not isinstance(raw.get("summary"), dict):
        raise ValueError(f"{path} has no `summary` section: it predates per-seed records (or is not a metrics "
                         f"record); rerun its stage, `dvc repro {_stage(path)}`")
    per_seed = [s for s in raw.get("per_seed") or [] if isinstance(s, dict)]
    seeds = list(raw.get("seeds") or [s.get("seed") for s in per_seed])
    record = _integral(raw["summary"])
    record.update({key: raw.get(key) for key in IDENTITY})
    record["dataset"] = record["dataset"] or path.parent.name
    record["model"] = record["model"] or path.stem
    record.update(seeds=seeds, n_seeds=len(seeds) or len(per_seed), stage_seconds=raw.get("stage_seconds"),
                  workers=raw.get("workers"), intervals=raw.get("intervals") or {}, per_seed=per_seed,
                  provenance=raw.get("provenance"))
    return record


def load_records(root: str | Path, dataset: str, models: Iterable[str]) -> list[dict[str, Any]]:
    """The records of `models` on `dataset`, sorted by model. Records of other models are not read;
    a listed model without a record is an error naming the files and the stage that writes them."""
    root = Path(root)
    models = sorted(dict.fromkeys(models))
    if not models:
        raise ValueError(f"no models listed for dataset {dataset!r}: add some under `models:` in params.yaml")
    paths = {model: Paths(root).metrics(dataset, model) for model in models}
    missing = [model for model, path in paths.items() if not path.exists()]
    if missing:
        listed = "; ".join(f"{paths[m].relative_to(root)} (run `dvc repro {_stage(paths[m])}`)" for m in missing)
        raise FileNotFoundError(f"missing metrics record for {len(missing)} model(s) listed in params.yaml: {listed}")
    records = []
    for model, path in paths.items():
        try:
            raw = read_json(path)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not valid JSON ({error}): rerun its stage, `dvc repro {_stage(path)}`") from error
        records.append(normalise(raw, path))
    return records

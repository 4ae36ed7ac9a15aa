"""params.yaml: loading it and checking the values a stage reads, with errors that name the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A value in params.yaml is missing, of the wrong type or out of range."""


def load_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path} not found: run the stage from the repository root, where params.yaml lives")
    with open(path) as f:
        params = yaml.safe_load(f) or {}
    if not isinstance(params, dict):
        raise ConfigError(f"{path} must hold a mapping at the top level")
    return params


def section(params: dict[str, Any], key: str) -> Any:
    """params[key] for a dotted key, with an error naming the missing key."""
    node: Any = params
    walked = []
    for part in key.split("."):
        walked.append(part)
        if not isinstance(node, dict) or part not in node:
            raise ConfigError(f"params.yaml has no '{'.'.join(walked)}' (needed as '{key}')")
        node = node[part]
    return node


def check_type(key: str, value: Any, kind: type | tuple[type, ...], *, low: float | None = None,
               high: float | None = None, choices: tuple | None = None) -> Any:
    """Validate one hyperparameter; `key` is its full params.yaml path for the message."""
    kinds = kind if isinstance(kind, tuple) else (kind,)
    # YAML reads 1 as int where a float is meant: accept ints for floats, never bools for numbers.
    ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
    if float in kinds and isinstance(value, int) and not isinstance(value, bool):
        ok = True
    if not ok:
        names = " or ".join(k.__name__ for k in kinds)
        raise ConfigError(f"params.yaml: '{key}' must be {names}, got {value!r} ({type(value).__name__})")
    if choices is not None and value not in choices:
        raise ConfigError(f"params.yaml: '{key}' must be one of {list(choices)}, got {value!r}")
    if low is not None and value < low:
        raise ConfigError(f"params.yaml: '{key}' must be >= {low}, got {value!r}")
    if high is not None and value > high:
        raise ConfigError(f"params.yaml: '{key}' must be <= {high}, got {value!r}")
    return value

"""The model registry. Each model is one file `genbench/models/<name>.py` whose class is decorated
with `@register("<name>")`; the file name equals the canonical name, so `dvc.yaml` can make each
model's stages depend on its own file."""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from genbench.config import ConfigError

_REGISTRY: dict[str, type] = {}
_NOT_MODELS = {"base", "nets", "ais", "parzen", "adversarial"}  # shared building blocks, not models


def register(name: str):
    def wrap(cls: type) -> type:
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def model_names() -> list[str]:
    import genbench.models as pkg

    names = {m.name for m in pkgutil.iter_modules(pkg.__path__) if m.name not in _NOT_MODELS and not m.name.startswith("_")}
    return sorted(names)


def get_model_class(name: str) -> type:
    if name not in _REGISTRY:
        if name not in model_names():
            raise ConfigError(
                f"unknown model '{name}' in params.yaml; registered models: {', '.join(model_names())}"
            )
        importlib.import_module(f"genbench.models.{name}")
        if name not in _REGISTRY:
            raise ConfigError(f"genbench/models/{name}.py does not register a model named '{name}' (@register('{name}'))")
    return _REGISTRY[name]


def create_model(name: str, hyperparameters: dict[str, Any] | None = None, **runtime: Any):
    """Build a model from its params.yaml section, checking every key and type.

    `runtime` holds settings that are not hyperparameters (for example `device`); they are passed
    only to models whose constructor accepts them.
    """
    cls = get_model_class(name)
    return cls.from_params(hyperparameters or {}, **runtime)

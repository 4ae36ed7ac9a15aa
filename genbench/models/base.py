"""What every model shares: construction from params.yaml with checked hyperparameters, save/load,
and capability discovery by duck typing (DESIGN.md, "Models")."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import torch

from genbench.config import ConfigError, check_type

CAPABILITIES = {
    "generate": "sample",
    "density": "log_prob",
    "classify": "predict_proba",
    "detect": "anomaly_score",
    "represent": "encode",
}


def capabilities(model: Any) -> list[str]:
    return [cap for cap, method in CAPABILITIES.items() if callable(getattr(model, method, None))]


class Model:
    """Base class. Subclasses put hyperparameters in `__init__` (with defaults), learn in `fit`.

    Optional class attributes:
      kind: "generative", "discriminative" or "anomaly" (the report groups by it)
      constraints: {hyperparameter: dict(low=..., high=..., choices=...)}
      likelihood_space: "binary" or "discrete", for models with `log_prob`
      fast_params: hyperparameter overrides for a quick smoke fit (the contract tests and the
        end-to-end test use them; the defaults are tuned for quality)
    """

    name: str = "?"
    kind: str = "generative"
    constraints: dict[str, dict[str, Any]] = {}
    fast_params: dict[str, Any] = {}
    runtime_keys = ("device",)

    @classmethod
    def from_params(cls, hyperparameters: dict[str, Any], **runtime: Any) -> "Model":
        signature = inspect.signature(cls.__init__)
        accepted = {k: p for k, p in signature.parameters.items() if k != "self" and p.kind == p.KEYWORD_ONLY or
                    (k != "self" and p.kind == p.POSITIONAL_OR_KEYWORD)}
        hyper = {k: v for k, v in accepted.items() if k not in cls.runtime_keys}
        if not isinstance(hyperparameters, dict):
            raise ConfigError(f"params.yaml: 'models.{cls.name}' must be a mapping of hyperparameters, got {hyperparameters!r}")
        unknown = set(hyperparameters) - set(hyper)
        if unknown:
            raise ConfigError(
                f"params.yaml: models.{cls.name} has unknown hyperparameter(s) {sorted(unknown)}; "
                f"{cls.name} accepts: {', '.join(hyper)}"
            )
        for key, value in hyperparameters.items():
            default = hyper[key].default
            if default is not None and default is not inspect.Parameter.empty and value is not None:
                kind = float if isinstance(default, float) else type(default)
                check_type(f"models.{cls.name}.{key}", value, kind, **cls.constraints.get(key, {}))
            elif key in cls.constraints and value is not None:
                c = cls.constraints[key]
                check_type(f"models.{cls.name}.{key}", value, (int, float, str, list), **c)
        kwargs = dict(hyperparameters)
        kwargs.update({k: v for k, v in runtime.items() if k in accepted})
        return cls(**kwargs)

    def get_params(self) -> dict[str, Any]:
        signature = inspect.signature(type(self).__init__)
        return {k: getattr(self, k) for k in signature.parameters if k != "self" and hasattr(self, k)}

    # --- persistence: the whole object, tensors moved to the CPU (sklearn models pickle as usual) ---
    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for module in _modules(self):
            module.to("cpu")
        torch.save(self, directory / "model.pt")

    @classmethod
    def load(cls, directory: str | Path, *, device: str | None = None) -> "Model":
        """The saved model, its networks on `device` (default: its own `device` setting, so "auto" is the
        GPU when this machine has one): a model trained on a GPU samples and is evaluated there too."""
        model = torch.load(Path(directory) / "model.pt", weights_only=False, map_location="cpu")
        if not isinstance(model, cls):
            raise TypeError(f"{directory}/model.pt holds a {type(model).__name__}, not a {cls.__name__}")
        target = device or getattr(model, "device", None)
        if target is not None:
            target = resolve_device(str(target))
            for module in _modules(model):
                module.to(target)
        return model

    @property
    def history(self) -> list[dict[str, float]]:
        """Training curve: one dict per epoch (`epoch` plus loss names). Empty for closed-form fits."""
        return getattr(self, "history_", [])


def _modules(obj: Any) -> list[torch.nn.Module]:
    """The model's networks: attributes that are modules, or lists/tuples of modules."""
    found = []
    for value in vars(obj).values():
        items = value if isinstance(value, (list, tuple)) else [value]
        found += [v for v in items if isinstance(v, torch.nn.Module)]
    return found


def check_fitted(model: Any, attribute: str) -> None:
    if not hasattr(model, attribute):
        raise RuntimeError(f"{type(model).__name__} is not fitted yet: call fit(train, seed=...) first")


def flat(x: torch.Tensor) -> "Any":
    """(N, C, H, W) tensor -> (N, D) float64 numpy array for scikit-learn."""
    return x.reshape(len(x), -1).double().cpu().numpy()


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("params.yaml: device is 'cuda' but no CUDA GPU is visible; use device: auto or cpu")
    return torch.device(device)

"""What produced a record, and what it cost to store: the code's commit, the machine and packages
(`provenance`), and how many numbers a fitted model holds (`model_size`)."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch


def model_size(model: Any) -> dict:
    """How many numbers a fitted model holds: the elements of its torch modules' parameters, else (numpy
    and scikit-learn models) of the arrays among its fitted attributes (names ending in '_'), so kNN counts
    its stored training images and a random forest its tree arrays."""
    modules = [v for k, v in vars(model).items() if k.endswith("_") and isinstance(v, torch.nn.Module)]
    if modules:
        unique = {id(p): p for m in modules for p in m.parameters()}
        return {"parameters": int(sum(p.numel() for p in unique.values())), "counted": "torch parameters"}
    seen: set[int] = set()

    def count(value: Any, depth: int = 0) -> int:
        if id(value) in seen or depth > 8:
            return 0
        seen.add(id(value))
        if isinstance(value, (np.ndarray, torch.Tensor)) and value.dtype != object:
            return int(value.size if isinstance(value, np.ndarray) else value.numel())
        if isinstance(value, np.ndarray):
            return sum(count(v, depth + 1) for v in value.ravel())
        if isinstance(value, (list, tuple)):
            return sum(count(v, depth + 1) for v in value)
        if isinstance(value, dict):
            return sum(count(v, depth + 1) for v in value.values())
        if type(value).__name__ == "Tree" and hasattr(value, "node_count"):  # sklearn's compiled tree:
            return int(value.value.size) + 4 * int(value.node_count)  # leaf values; feature, threshold, children
        if hasattr(value, "__dict__") and type(value).__module__.split(".")[0] in ("sklearn", "hmmlearn"):
            return sum(count(v, depth + 1) for v in vars(value).values())
        return 0

    total = sum(count(v) for k, v in vars(model).items() if k.endswith("_"))
    return {"parameters": total, "counted": "elements of fitted arrays"}


def provenance(root: str | Path = ".") -> dict:
    """What produced a record: the code's commit (and whether genbench/, stages/ or params.yaml differed
    from it), the time, the machine and the versions of the packages that compute the numbers."""
    from importlib.metadata import PackageNotFoundError, version

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    changed = git("status", "--porcelain", "--untracked-files=no", "--", "genbench", "stages", "params.yaml")
    packages = {}
    for name in ("torch", "torchvision", "torchmetrics", "scikit-learn", "numpy", "scipy", "hmmlearn", "dvc"):
        try:
            packages[name] = version(name)
        except PackageNotFoundError:
            packages[name] = None
    return {"commit": commit, "code_modified": bool(changed) if changed is not None else None,
            "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "python": platform.python_version(),
            "packages": packages, "machine": _cpu_name(), "cores": len(os.sched_getaffinity(0)),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()

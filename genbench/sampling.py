"""A model stage's samples: the protocol's draw (class-balanced for conditional models) and, for the
figure seed, the sample grid and the model's own figures as PNGs with their layouts for the report."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch

from genbench.io import atomic_file
from genbench.params import protocol

GRID_PADDING = 1  # pixels between the images of a saved grid


def draw_samples(job: Any, model: Any, seed: int) -> tuple[torch.Tensor, torch.Tensor | None, dict]:
    """protocol.fid_samples samples (class-balanced for conditional models); for the figure seed also
    the sample grid (one row per class when conditional) and the model's own figures."""
    from torchvision.utils import make_grid, save_image

    proto = protocol(job.params)
    n, classes = proto["fid_samples"], job.data.num_classes
    conditional = bool(getattr(model, "conditional", False))
    start = time.perf_counter()
    labels = torch.arange(n) % classes if conditional else None
    generator = torch.Generator().manual_seed(seed)
    samples = model.sample(n, y=labels, generator=generator) if conditional else model.sample(n, generator=generator)
    _check_images(job.model_name, samples, n)
    info = {"capable": True, "n": n, "seed": seed, "sample_seconds": time.perf_counter() - start,
            "conditional": conditional, "image_shape": list(samples.shape[1:])}
    if seed == job.figure_seed:
        out = Path(job.samples_dir)
        if conditional:
            per_row = max(1, proto["grid_samples"] // classes)
            y = torch.arange(classes).repeat_interleave(per_row)
            grid, nrow = model.sample(len(y), y=y, generator=torch.Generator().manual_seed(seed)), per_row
            names = job.data.meta.get("class_names") or [str(c) for c in range(classes)]
            grid_labels = {"row_labels": [f"y = {c}: {names[c]}" if names[c] != str(c) else f"y = {c}"
                                          for c in range(classes)]}
        else:
            grid, nrow = samples[: proto["grid_samples"]], int(math.sqrt(proto["grid_samples"]))
            grid_labels = {}
        with atomic_file(out / "grid.png") as tmp:
            save_image(make_grid(grid, nrow=nrow, padding=GRID_PADDING, pad_value=0.5), tmp, format="png")
        # what the report needs to label the grid's rows and columns and upscale it by whole pixels
        info["grid"] = {"file": "grid.png", "per_row": nrow, "n": len(grid), "padding": GRID_PADDING, **grid_labels}
        figures, layouts = {}, {}
        if callable(getattr(model, "figures", None)):
            test = job.data.split("test")
            for name, figure in model.figures(test, generator=torch.Generator().manual_seed(seed)).items():
                images, per_row_fig, figure_labels = (*figure, {})[:3]
                with atomic_file(out / f"figure-{name}.png") as tmp:
                    save_image(make_grid(images.clamp(0, 1), nrow=per_row_fig, padding=GRID_PADDING, pad_value=0.5),
                               tmp, format="png")
                figures[name] = f"figure-{name}.png"
                layouts[name] = {"file": figures[name], "per_row": per_row_fig, "n": len(images),
                                 "padding": GRID_PADDING, **figure_labels}
        info["figures"] = figures
        info["figure_layouts"] = layouts
    return samples, labels, info


def _check_images(model_name: str, images: torch.Tensor, n: int) -> None:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or len(images) != n:
        raise ValueError(f"{model_name}.sample({n}) must return an (n, C, H, W) tensor, got {getattr(images, 'shape', type(images))}")
    if not torch.isfinite(images).all() or images.min() < 0 or images.max() > 1:
        raise ValueError(f"{model_name}.sample returned values outside [0, 1] or non-finite")

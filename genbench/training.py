"""The one shared training loop for every torch model.

A model supplies `step(batch, state) -> {loss_name: 0-d tensor}` that does its own optimiser
updates (GANs need two), and the loop does the rest: seeding, the device, shuffled batches drawn
from in-memory tensors on that device (no per-sample Python transforms), a tqdm progress bar, NaN
checks, per-epoch loss curves and checkpoints. The losses stay on the device until the epoch ends:
one host sync per epoch, not one per step, so a GPU never waits for the CPU to read a loss.
A model may also pass `validation=(losses, tensors)`: `losses(batch, generator) -> {name: 0-d tensor}`
is evaluated after every epoch on the first VALIDATION_IMAGES held-out examples in `tensors`, with the
modules in eval mode, without gradients and with its own generator (seeded alike every epoch), so the
training trajectory is the same with or without it; the history records the means as `val_<name>`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm


VALIDATION_IMAGES = 1000  # enough for a smooth held-out curve; one forward pass over them per epoch
VALIDATION_SEED = 987_654  # the held-out losses' random draws (binarisation, noise): the same every epoch

Losses = Callable[[tuple[torch.Tensor, ...], torch.Generator], dict[str, torch.Tensor]]


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite."""


@dataclass
class StepState:
    epoch: int
    step: int  # global step, counted from 0
    generator: torch.Generator  # on the training device: use it for every random draw in `step`


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def train_loop(
    model_name: str,
    step: Callable[[tuple[torch.Tensor, ...], StepState], dict[str, torch.Tensor | float]],
    tensors: tuple[torch.Tensor, ...],
    *,
    epochs: int,
    batch_size: int,
    seed: int,
    device: torch.device,
    modules: dict[str, torch.nn.Module] | None = None,
    checkpoint_path: str | Path | None = None,
    drop_last: bool = True,
    validation: tuple[Losses, tuple[torch.Tensor, ...]] | None = None,
) -> list[dict[str, float]]:
    """Run `epochs` passes over `tensors` (moved to `device` once) and return the per-epoch history."""
    seed_everything(seed)
    tensors = tuple(t.to(device) for t in tensors)
    n = len(tensors[0])
    batch_size = min(batch_size, n)
    generator = torch.Generator(device=device).manual_seed(seed)
    shuffle_gen = torch.Generator().manual_seed(seed)
    if validation is not None:
        val_losses, val_tensors = validation[0], tuple(t[:VALIDATION_IMAGES].to(device) for t in validation[1])
    history: list[dict[str, float]] = []
    global_step = 0
    batches_per_epoch = n // batch_size if drop_last else math.ceil(n / batch_size)
    checkpoint_path = checkpoint_path or os.environ.get("GENBENCH_CHECKPOINT")
    bar = tqdm(total=epochs * batches_per_epoch, desc=f"train {model_name}", unit="step",
               disable=os.environ.get("GENBENCH_PROGRESS", "1") == "0", mininterval=1.0)
    for epoch in range(1, epochs + 1):
        order = torch.randperm(n, generator=shuffle_gen).to(device)
        per_step: dict[str, list] = {}
        first_step = global_step
        for b in range(batches_per_epoch):
            index = order[b * batch_size:(b + 1) * batch_size]
            losses = step(tuple(t[index] for t in tensors), StepState(epoch, global_step, generator))
            for key, value in losses.items():
                per_step.setdefault(key, []).append(value.detach() if torch.is_tensor(value) else value)
            global_step += 1
            bar.update(1)
        sums: dict[str, float] = {}
        for key, values in per_step.items():
            values = _host_floats(values)  # the epoch's one sync
            for b, value in enumerate(values):
                if not math.isfinite(value):
                    bar.close()
                    raise TrainingDiverged(
                        f"{model_name}: loss '{key}' became {value} at epoch {epoch}, step {first_step + b} "
                        f"(batch {b + 1} of {batches_per_epoch}); lower the learning rate or check the data"
                    )
            sums[key] = sum(values)  # in step order, in float64: the same curve as summing as it went
        record = {"epoch": epoch, **{k: v / batches_per_epoch for k, v in sums.items()}}
        if validation is not None:
            record |= held_out_losses(val_losses, val_tensors, batch_size, list((modules or {}).values()), device)
        history.append(record)
        bar.set_postfix({k: f"{v:.4g}" for k, v in record.items() if k != "epoch"})
        if checkpoint_path and modules:
            save_checkpoint(checkpoint_path, modules, epoch, history)
    bar.close()
    return history


def held_out_losses(losses: Losses, tensors: tuple[torch.Tensor, ...], batch_size: int,
                    modules: list[torch.nn.Module], device: torch.device) -> dict[str, float]:
    """{"val_<name>": mean over the held-out examples} of `losses`, in eval mode; modes restored after."""
    generator = torch.Generator(device=device).manual_seed(VALIDATION_SEED)
    modes = [m.training for m in modules]
    for m in modules:
        m.eval()
    sums: dict[str, torch.Tensor] = {}
    n = len(tensors[0])
    try:
        with torch.no_grad():
            for start in range(0, n, batch_size):
                batch = tuple(t[start:start + batch_size] for t in tensors)
                for key, value in losses(batch, generator).items():
                    sums[key] = sums.get(key, 0.0) + value.detach().double() * len(batch[0])
    finally:
        for m, mode in zip(modules, modes):
            m.train(mode)
    return {f"val_{key}": value for key, value in zip(sums, _host_floats([s / n for s in sums.values()]))}


def _host_floats(values: list) -> list[float]:
    """Per-step losses (0-d tensors on one device, or numbers) as Python floats, copied in one transfer."""
    tensors = [v for v in values if torch.is_tensor(v)]
    if len(tensors) < len(values):
        return [float(v) for v in values]
    return torch.stack([v.reshape(()).double() for v in tensors]).cpu().tolist()


def save_checkpoint(path: str | Path, modules: dict[str, torch.nn.Module], epoch: int, history: list) -> None:
    from genbench.io import atomic_file

    with atomic_file(path) as tmp:
        torch.save({"epoch": epoch, "history": history,
                    "state": {k: m.state_dict() for k, m in modules.items()}}, tmp)

"""The evaluator: a small CNN classifier trained once per dataset. Its penultimate layer gives the
features for FID (and the other sample metrics), so they work offline on any image size; its weights
hash goes into every record that uses it. Trained with the shared loop."""

from __future__ import annotations

import functools
import hashlib
import io

import torch
from torch import nn
from torch.nn import functional as F

from genbench.data import Split
from genbench.training import train_loop


class EvaluatorNet(nn.Module):
    def __init__(self, image_shape: tuple[int, int, int], num_classes: int, feature_dim: int = 64, width: int = 32):
        super().__init__()
        channels, height, width_px = image_shape
        self.conv = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1), nn.ReLU(),
        )
        reduced = ((height + 1) // 2 + 1) // 2, ((width_px + 1) // 2 + 1) // 2
        self.embed = nn.Linear(2 * width * reduced[0] * reduced[1], feature_dim)
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-activation penultimate features: dense (no ReLU zeros), so their covariance is well-conditioned."""
        return self.embed(self.conv(x).flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.relu(self.features(x)))


def train_evaluator(train: Split, *, feature_dim: int, epochs: int, batch_size: int, lr: float,
                    seed: int, device: torch.device) -> tuple[EvaluatorNet, list[dict]]:
    torch.manual_seed(seed)
    net = EvaluatorNet(train.image_shape, train.num_classes, feature_dim).to(device)
    optimiser = torch.optim.Adam(net.parameters(), lr=lr)

    def step(batch, state):
        x, y = batch
        loss = F.cross_entropy(net(x), y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        return {"loss": loss.detach()}

    net.train()
    history = train_loop("evaluator", step, (train.x, train.y), epochs=epochs, batch_size=batch_size,
                         seed=seed, device=device, modules={"evaluator": net})
    return net.cpu().eval(), history


@torch.no_grad()
def predict(net: nn.Module, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    net.eval()
    return torch.cat([net(x[i:i + batch_size]).softmax(1) for i in range(0, len(x), batch_size)])


def weights_sha256(net: nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(net.state_dict().items()):
        digest.update(name.encode())
        buffer = io.BytesIO()
        buffer.write(tensor.cpu().contiguous().numpy().tobytes())
        digest.update(buffer.getvalue())
    return digest.hexdigest()


def load_evaluator(directory) -> tuple[EvaluatorNet, dict]:
    """The pinned evaluator and its record; its weights must hash to the recorded sha256."""
    from pathlib import Path

    from genbench.config import ConfigError
    from genbench.io import read_json

    directory = Path(directory)
    if not (directory / "evaluator.pt").exists():
        raise FileNotFoundError(f"{directory}/evaluator.pt is missing: `git checkout {directory}` restores the pinned "
                                f"one; for a new dataset, train one with `uv run genbench evaluator {directory.name} "
                                f"--retrain` and commit it")
    saved = torch.load(directory / "evaluator.pt", weights_only=True)
    net = EvaluatorNet(tuple(saved["image_shape"]), int(saved["num_classes"]), int(saved["feature_dim"]))
    net.load_state_dict(saved["state"])
    record = read_json(directory / "evaluator.json")
    actual = weights_sha256(net)
    if actual != record.get("sha256"):
        raise ConfigError(f"{directory}/evaluator.pt hashes to {actual[:12]}, its evaluator.json records "
                          f"{str(record.get('sha256'))[:12]}: the pinned weights were changed. Restore them with "
                          f"`git checkout {directory}` or retrain with `uv run genbench evaluator {directory.name} --retrain`")
    return net.eval(), record


def check_fits(record: dict, data, directory) -> None:
    """The pinned evaluator must have been trained on these splits: FIDs in other features are not comparable."""
    from pathlib import Path

    from genbench.config import ConfigError

    hashes = {key: data.meta["sha256"][key] for key in ("train_x", "train_y", "test_x", "test_y")}
    if record.get("data_sha256") != hashes:
        raise ConfigError(
            f"the pinned evaluator {directory} (sha256 {str(record.get('sha256'))[:12]}) was trained on other splits "
            f"than results/{data.meta.get('dataset', Path(directory).name)}/data (datasets.<name> or data_seed changed?). "
            f"Retrain it deliberately with `uv run genbench evaluator {Path(directory).name} --retrain`, rerun "
            f"`uv run dvc repro`, and commit {directory} with the new results")


def cached_evaluator(directory) -> tuple[EvaluatorNet, dict]:
    """load_evaluator, once per process while the files are unchanged: an engine worker serves many tasks."""
    from genbench.data.prepare import fingerprint

    return _cached(str(directory), fingerprint(directory))


@functools.lru_cache(maxsize=2)
def _cached(directory: str, _fingerprint: tuple) -> tuple[EvaluatorNet, dict]:
    return load_evaluator(directory)

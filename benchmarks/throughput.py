"""Training throughput (images/s) of every torch model, and genbench's VAE against the pytorch/examples loop.

1. Per model: `fit` on a prepared dataset's training split (data/<dataset>, from `dvc repro`) with the
   model's params.yaml hyperparameters and dataset overrides, `--epochs` epochs instead of its own;
   images/s = training images x epochs / fit seconds (one seed; includes each model's per-fit set-up).
2. VAE: genbench's VAE at the pytorch/examples architecture (784-400-20, one hidden layer per network,
   batch 128, Adam 1e-3) beside that example's own training loop (torchvision dataset with ToTensor,
   a shuffling DataLoader, BCE + KL), on the same 28x28 training images, same epochs and device, in one
   run. The ratio is genbench's images/s over the reference's. genbench's loop binarises each batch
   dynamically; the reference trains on the grey levels: the arithmetic per step is otherwise the same.

    uv run python benchmarks/throughput.py --dataset digits --epochs 3 \\
        --vae-data /usr/share/datasets/fashion-mnist --out benchmarks/results/throughput_cpu.md
"""

from __future__ import annotations

import argparse
import gzip
import platform
import shutil
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F

from genbench.config import load_params
from genbench.data import Split
from genbench.data.prepare import PreparedData
from genbench.models import get_model_class
from genbench.models.base import resolve_device
from genbench.params import Paths, build_model, dataset_params

ROOT = Path(__file__).resolve().parents[1]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def model_throughput(dataset: str, epochs: int, device: torch.device, params_file: Path = ROOT / "params.yaml",
                     root: Path = ROOT) -> pd.DataFrame:
    params = dataset_params(load_params(params_file), dataset)
    params["device"] = str(device)
    train = PreparedData(Paths(root).data(dataset)).split("train")
    rows = []
    for name in params["models"]:
        if "epochs" not in get_model_class(name)().get_params():
            continue  # closed-form or scikit-learn fits: no epochs to time
        model = build_model({**params, "models": {**params["models"], name: {**(params["models"][name] or {}),
                                                                            "epochs": epochs}}}, name)
        _sync(device)
        start = time.perf_counter()
        model.fit(train, seed=0)
        _sync(device)
        seconds = time.perf_counter() - start
        rows.append({"model": name, "device": str(device), "epochs": epochs, "train images": len(train),
                     "fit (s)": round(seconds, 2), "images/s": round(len(train) * epochs / seconds, 1)})
        print(rows[-1], flush=True)
    return pd.DataFrame(rows)


class ReferenceVAE(nn.Module):
    """pytorch/examples vae/main.py, as published: 784-400-20, ReLU, sigmoid output."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc21, self.fc22 = nn.Linear(784, 400), nn.Linear(400, 20), nn.Linear(400, 20)
        self.fc3, self.fc4 = nn.Linear(20, 400), nn.Linear(400, 784)

    def forward(self, x):
        h = F.relu(self.fc1(x.view(-1, 784)))
        mu, logvar = self.fc21(h), self.fc22(h)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return torch.sigmoid(self.fc4(F.relu(self.fc3(z)))), mu, logvar


def reference_loop(data_dir: Path, epochs: int, device: torch.device) -> tuple[float, int]:
    """The example's loop over torchvision's FashionMNIST (same idx files): seconds, images."""
    from torchvision import datasets, transforms

    root = Path(tempfile.mkdtemp())
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for path in data_dir.glob("*-ubyte*"):  # torchvision reads the decompressed idx files
        if path.suffix == ".gz":
            with gzip.open(path) as source, open(raw / path.stem, "wb") as target:
                shutil.copyfileobj(source, target)
        else:
            (raw / path.name).symlink_to(path.resolve())
    dataset = datasets.FashionMNIST(root, train=True, download=False, transform=transforms.ToTensor())
    loader = torch.utils.data.DataLoader(dataset, batch_size=128, shuffle=True)
    torch.manual_seed(0)
    model = ReferenceVAE().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    _sync(device)
    start = time.perf_counter()
    for _ in range(epochs):
        for data, _ in loader:
            data = data.to(device)
            optimizer.zero_grad()
            recon, mu, logvar = model(data)
            bce = F.binary_cross_entropy(recon, data.view(-1, 784), reduction="sum")
            kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
            (bce + kld).backward()
            optimizer.step()
    _sync(device)
    seconds = time.perf_counter() - start
    shutil.rmtree(root)
    return seconds, len(dataset) * epochs


def vae_ratio(data_dir: Path, epochs: int, device: torch.device) -> pd.DataFrame:
    from genbench.data.torchvision_datasets import load_fashion_mnist

    raw = load_fashion_mnist(data_dir=data_dir, download=False)
    x = torch.as_tensor(raw.train_images).float() / (raw.levels - 1)  # as ToTensor: grey levels / 255
    train = Split(x, torch.as_tensor(raw.train_labels).long(), raw.levels, len(raw.class_names), "train")
    genbench_vae = get_model_class("vae")(latent_dim=20, hidden_dim=400, hidden_layers=1, batch_size=128,
                                          lr=1e-3, epochs=epochs, device=str(device))
    _sync(device)
    start = time.perf_counter()
    genbench_vae.fit(train, seed=0)
    _sync(device)
    ours = time.perf_counter() - start
    reference_seconds, images = reference_loop(data_dir, epochs, device)
    rows = [{"loop": "genbench VAE (train_loop)", "images": len(train) * epochs, "seconds": round(ours, 2),
             "images/s": round(len(train) * epochs / ours, 1)},
            {"loop": "pytorch/examples vae/main.py", "images": images, "seconds": round(reference_seconds, 2),
             "images/s": round(images / reference_seconds, 1)}]
    table = pd.DataFrame(rows)
    table["ratio to reference"] = (table["images/s"] / table["images/s"].iloc[1]).round(3)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="digits", help="a prepared dataset under data/ (default: digits)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parser.add_argument("--root", type=Path, default=ROOT, help="where data/<dataset> lies (default: the checkout)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--vae-data", type=Path, help="directory of the Fashion-MNIST idx files, for the VAE ratio")
    parser.add_argument("--vae-epochs", type=int, default=2)
    parser.add_argument("--out", type=Path, help="write the tables as Markdown here")
    args = parser.parse_args()
    device = resolve_device(args.device)
    header = (f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else platform.processor() or platform.machine()}), "
              f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    parts = [f"# Training throughput\n\n{header}\n\nCommand: `uv run python benchmarks/throughput.py "
             f"--dataset {args.dataset} --epochs {args.epochs}"
             + (f" --params {args.params} --root {args.root}" if args.root != ROOT else "")
             + (f" --vae-data {args.vae_data} --vae-epochs {args.vae_epochs}" if args.vae_data else "") + "`\n",
             f"## Torch models on {args.dataset} ({args.epochs} epochs, seed 0)\n",
             model_throughput(args.dataset, args.epochs, device, args.params, args.root).to_markdown(index=False)]
    if args.vae_data:
        parts += [f"\n## VAE 784-400-20, batch 128, on Fashion-MNIST's 60,000 training images ({args.vae_epochs} epochs)\n",
                  vae_ratio(args.vae_data, args.vae_epochs, device).to_markdown(index=False)]
    text = "\n".join(parts) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()

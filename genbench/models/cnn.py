"""A small LeNet-style convolutional classifier (LeCun et al. 1998, "Gradient-based learning applied
to document recognition"), with ReLU, max-pooling and dropout (Srivastava et al. 2014) in place of
LeNet-5's sigmoids and subsampling, trained by cross-entropy with Adam through the shared
`genbench.training.train_loop`.

Sized from the image shape (C, H, W): two blocks "3x3 convolution (padding 1) -> ReLU -> 2x2
max-pool" with `width` and 2 * `width` channels (a block skips its pooling once the feature map is
a single pixel), then a hidden fully connected layer of `hidden_dim` ReLU units and a linear layer
to the class logits. 8x8 digits -> 4x4 -> 2x2; 28x28 -> 14x14 -> 7x7; 32x32x3 -> 16x16 -> 8x8.
Written by hand: torchvision ships no LeNet, and the network is a dozen lines.

`encode(x)` returns the hidden layer (the penultimate features); `predict_proba` the softmax.
Dropout masks are drawn from the training step's generator, so a fit depends on the seed alone.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from genbench.data import Split
from genbench.models import register
from genbench.models.base import Model, check_fitted, resolve_device
from genbench.training import seed_everything, train_loop

EVAL_BATCH = 512  # images per inference batch


class LeNet(nn.Module):
    """(N, C, H, W) images in [0, 1] -> (N, num_classes) logits; `features` gives the hidden layer."""

    def __init__(self, image_shape: tuple[int, int, int], num_classes: int, width: int, hidden_dim: int,
                 dropout: float):
        super().__init__()
        channels, height, width_px = image_shape
        layers: list[nn.Module] = []
        ch_in = channels
        for ch_out in (width, 2 * width):
            layers += [nn.Conv2d(ch_in, ch_out, 3, padding=1), nn.ReLU(inplace=True)]
            if min(height, width_px) >= 2:
                layers.append(nn.MaxPool2d(2))
                height, width_px = height // 2, width_px // 2
            ch_in = ch_out
        self.conv = nn.Sequential(*layers)
        self.hidden = nn.Linear(ch_in * height * width_px, hidden_dim)
        self.out = nn.Linear(hidden_dim, num_classes)
        self.dropout = dropout

    def features(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        h = self.conv(2.0 * x - 1.0).flatten(1)
        if generator is not None:
            h = _dropout(h, self.dropout, generator)
        return F.relu(self.hidden(h))

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Logits; with a `generator` (training), dropout before each fully connected layer."""
        h = self.features(x, generator)
        if generator is not None:
            h = _dropout(h, self.dropout, generator)
        return self.out(h)


def _dropout(h: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    """Inverted dropout with a mask from `generator` (torch's dropout draws from the global RNG)."""
    if p <= 0.0:
        return h
    keep = torch.rand(h.shape, generator=generator, device=h.device) >= p
    return h * keep / (1.0 - p)


@register("cnn")
class CNN(Model):
    """Hyperparameters: width (channels of the first convolution; the second has twice as many),
    hidden_dim (fully connected layer), dropout (rate before both fully connected layers), epochs,
    batch_size, lr and weight_decay (Adam; weight decay as an L2 term in the gradient). `device` is a
    runtime setting."""

    kind = "discriminative"
    constraints = {
        "width": {"low": 1},
        "hidden_dim": {"low": 1},
        "dropout": {"low": 0.0, "high": 0.99},
        "epochs": {"low": 1},
        "batch_size": {"low": 1},
        "lr": {"low": 0.0},
        "weight_decay": {"low": 0.0},
    }
    fast_params = {"width": 8, "hidden_dim": 32, "epochs": 2}

    def __init__(self, width: int = 32, hidden_dim: int = 128, dropout: float = 0.25, epochs: int = 30,
                 batch_size: int = 64, lr: float = 3e-3, weight_decay: float = 0.0, device: str = "auto"):
        self.width = width
        self.hidden_dim = hidden_dim
        self.dropout = dropout
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.device = device

    def fit(self, train: Split, *, seed: int, val: Split | None = None) -> "CNN":
        device = resolve_device(self.device)
        self.num_classes_ = train.num_classes
        seed_everything(seed)  # the initial weights depend on the seed alone
        self.net_ = LeNet(train.image_shape, train.num_classes, self.width, self.hidden_dim, self.dropout).to(device)
        optimiser = torch.optim.Adam(self.net_.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        self.net_.train()

        def losses(batch: tuple[torch.Tensor, ...], generator: torch.Generator | None) -> dict[str, torch.Tensor]:
            x, y = batch
            logits = self.net_(x, generator=generator)
            return {"loss": F.cross_entropy(logits, y), "accuracy": (logits.argmax(1) == y).float().mean()}

        def step(batch: tuple[torch.Tensor, ...], state) -> dict[str, torch.Tensor]:
            out = losses(batch, state.generator)
            optimiser.zero_grad(set_to_none=True)
            out["loss"].backward()
            optimiser.step()
            return {k: v.detach() for k, v in out.items()}

        self.history_ = train_loop("cnn", step, (train.x.float(), train.y.long()), epochs=self.epochs,
                                   batch_size=self.batch_size, seed=seed, device=device,
                                   modules={"net": self.net_},
                                   # held out without dropout (no generator), as the model predicts
                                   validation=((lambda b, g: losses(b, None), (val.x.float(), val.y.long()))
                                               if val is not None else None))
        self.net_.eval()
        return self

    def _apply(self, x: torch.Tensor, fn) -> torch.Tensor:
        check_fitted(self, "net_")
        self.net_.eval()
        device = next(self.net_.parameters()).device
        with torch.no_grad():
            return torch.cat([fn(x[i:i + EVAL_BATCH].float().to(device)).cpu() for i in range(0, len(x), EVAL_BATCH)])

    def predict_proba(self, x: torch.Tensor) -> np.ndarray:
        return torch.softmax(self._apply(x, self.net_).double(), dim=1).numpy()

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The hidden fully connected layer (after its ReLU), (N, hidden_dim)."""
        return self._apply(x, self.net_.features)

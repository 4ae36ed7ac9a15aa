"""CycleGAN: unpaired image-to-image translation with cycle consistency (Zhu, Park, Isola & Efros 2017,
"Unpaired image-to-image translation using cycle-consistent adversarial networks").

The benchmark's datasets have one domain, so the two domains are made from ONE dataset: domain A is
the images as they are, domain B the same kind of images under a known, label-preserving transform
(`transform`):
  - "thicken" (default): stroke thickening by grey-level dilation, a max over a k x k window with
    stride 1 (`thicken_kernel`; 0 = from the image size: k = 3, centred, for images of 16 pixels and
    more; k = 2 below, the window covering the pixel and its right, lower and lower-right
    neighbours, because a 3 x 3 dilation turns 8 x 8 digits into blobs);
  - "invert": x -> 1 - x (an involution).
Training is UNPAIRED: the training set is split into two disjoint random halves (seeded); A comes
from one half and B = transform(the other half), so no image is seen in both domains. Because the
transform is known, the test split gives exact targets, and `extra_metrics` measures how well the
unpaired translation recovers it.

Model (Zhu et al., section 3): generators G_AB: A -> B and G_BA: B -> A, discriminators D_A and D_B.
  - least-squares adversarial loss (LSGAN, Mao et al. 2017; Zhu et al., section 4 "training details"):
    D minimises 1/2 [(D(real) - 1)^2 + D(fake)^2], G minimises (D(G(x)) - 1)^2;
  - cycle consistency lambda_cycle (||G_BA(G_AB(a)) - a||_1 + ||G_AB(G_BA(b)) - b||_1) (their eq. 2,
    lambda = 10);
  - optional identity loss lambda_identity * lambda_cycle (||G_AB(b) - b||_1 + ||G_BA(a) - a||_1)
    (their section 5.2; 0.5 in their code). Default 0 here: for "invert" it contradicts the target
    mapping outright, and for "thicken" it pulls G_AB towards doing nothing;
  - Adam (lr 2e-4, beta1 0.5), one shared train_loop step = one G update (both generators) then one
    D update (both discriminators). The 50-image history buffer of fakes (Shrivastava et al. 2017)
    is left out: the discriminators see the current fakes.
Networks, sized from the image shape: the generator is the residual network of Johnson et al. 2016
as used by Zhu et al. (3x3 conv, stride-2 downsampling while the half stays >= 7 pixels, at most
twice: 8x8 none, 28x28 -> 7x7, 32x32 -> 8x8; `residual_blocks` residual blocks; upsampling back;
instance norm; a sigmoid output in [0, 1]); the discriminator is a PatchGAN (Isola et al. 2017)
shrunk for tiny images: 4x4 stride-2 convolutions while the half stays >= 4 pixels (at most twice),
then two 3x3 convolutions to one real/fake score per patch (4x4 patches on 8x8 digits).

Capabilities:
  - `sample(n, generator=)`: samples of domain B obtained by translating stored training images of
    domain A: `fit` keeps a bank of up to `bank_size` domain-A training images and `sample` returns
    G_AB applied to bank images drawn at random (with replacement). It needs no data at sample time;
    its diversity is that of the bank.
  - `translate(x, direction="AB" | "BA")`.
  - `anomaly_score(x)`: the cycle-reconstruction error mean |G_BA(G_AB(x)) - x| per image, the
    CycleGAN analogue of an autoencoder's reconstruction error: the cycle is trained on the normal
    class only. A heuristic score, not a likelihood. No `log_prob`: a CycleGAN defines no density.
  - `figures`: "translation", rows A | A->B | A->B->A | transform(A) (the true target) for 10 test
    images; `extra_metrics`: translation error against the known transform (with the identity
    baseline), label preservation by the evaluator classifier, FID to the transformed test set,
    cycle error.
Written by hand: no maintained library ships a CycleGAN for arbitrary tiny image shapes.
"""

from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import nn

from genbench.data import Split
from genbench.models import register
from genbench.models.base import Model, check_fitted, resolve_device
from genbench.training import seed_everything, train_loop

EVAL_BATCH = 256  # images per inference batch
TRANSFORMS = ("thicken", "invert")


# --- the two domains -------------------------------------------------------------------------------


def thicken_kernel_for(image_shape: tuple[int, ...], kernel: int = 0) -> int:
    """The dilation window: `kernel` if given, else 3 for images of >= 16 pixels and 2 below."""
    if kernel:
        return kernel
    return 3 if min(image_shape[-2:]) >= 16 else 2


def thicken(x: torch.Tensor, kernel: int = 3) -> torch.Tensor:
    """Grey-level dilation with a k x k square (stride 1, same size): an odd window is centred, an
    even one covers the pixel and the k-1 pixels to its right and below. Zero padding (images >= 0)."""
    if kernel % 2 == 1:
        return F.max_pool2d(x, kernel, stride=1, padding=kernel // 2)
    return F.max_pool2d(F.pad(x, (0, kernel - 1, 0, kernel - 1)), kernel, stride=1)


def invert(x: torch.Tensor) -> torch.Tensor:
    return 1.0 - x


def apply_transform(x: torch.Tensor, transform: str, kernel: int = 0) -> torch.Tensor:
    """Domain A -> domain B: the known transform of the model (module docstring)."""
    if transform == "thicken":
        return thicken(x, thicken_kernel_for(x.shape, kernel))
    if transform == "invert":
        return invert(x)
    raise ValueError(f"unknown transform {transform!r}; one of {TRANSFORMS}")


def split_domains(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of two disjoint random halves of 0..n-1 of equal size (one image left out if n is odd)."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    half = n // 2
    return order[:half], order[half:2 * half]


# --- the networks ----------------------------------------------------------------------------------


def _halvings(size: int, smallest: int, most: int = 2) -> int:
    n = 0
    while n < most and size % 2 == 0 and size // 2 >= smallest:
        size //= 2
        n += 1
    return n


def _norm(channels: int) -> nn.Module:
    return nn.InstanceNorm2d(channels)  # Zhu et al. use instance norm (Ulyanov et al. 2016)


class ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), _norm(channels), nn.ReLU(inplace=True),
                                  nn.Conv2d(channels, channels, 3, padding=1), _norm(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class Generator(nn.Module):
    """Images (N, C, H, W) in [0, 1] -> images in [0, 1]: the residual generator of Zhu et al. 2017
    (Johnson et al. 2016), sized from the image shape (module docstring)."""

    def __init__(self, image_shape: tuple[int, int, int], width: int = 16, residual_blocks: int = 3):
        super().__init__()
        channels, height, width_px = image_shape
        downs = min(_halvings(height, 7), _halvings(width_px, 7))
        self.stem = nn.Sequential(nn.Conv2d(channels, width, 3, padding=1), _norm(width), nn.ReLU(inplace=True))
        self.down = nn.ModuleList()
        ch = width
        for _ in range(downs):
            self.down.append(nn.Sequential(nn.Conv2d(ch, 2 * ch, 3, stride=2, padding=1), _norm(2 * ch),
                                           nn.ReLU(inplace=True)))
            ch *= 2
        self.res = nn.Sequential(*[ResidualBlock(ch) for _ in range(residual_blocks)])
        self.up = nn.ModuleList()
        for _ in range(downs):
            self.up.append(nn.Sequential(nn.Conv2d(ch, ch // 2, 3, padding=1), _norm(ch // 2), nn.ReLU(inplace=True)))
            ch //= 2
        self.out = nn.Conv2d(ch, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(2.0 * x - 1.0)
        sizes = []
        for layer in self.down:
            sizes.append(h.shape[-2:])
            h = layer(h)
        h = self.res(h)
        for layer in self.up:
            h = layer(F.interpolate(h, size=sizes.pop(), mode="nearest"))
        return torch.sigmoid(self.out(h))


class PatchDiscriminator(nn.Module):
    """Images in [0, 1] -> a map of real/fake scores, one per patch (PatchGAN, Isola et al. 2017),
    shrunk for tiny images (module docstring). Linear outputs for the least-squares loss."""

    def __init__(self, image_shape: tuple[int, int, int], width: int = 16):
        super().__init__()
        channels, height, width_px = image_shape
        stages = max(1, min(_halvings(height, 4), _halvings(width_px, 4)))
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 4, stride=2, padding=1), nn.LeakyReLU(0.2, inplace=True)]
        ch = width
        for _ in range(stages - 1):
            layers += [nn.Conv2d(ch, 2 * ch, 4, stride=2, padding=1), _norm(2 * ch), nn.LeakyReLU(0.2, inplace=True)]
            ch *= 2
        layers += [nn.Conv2d(ch, 2 * ch, 3, padding=1), _norm(2 * ch), nn.LeakyReLU(0.2, inplace=True),
                   nn.Conv2d(2 * ch, 1, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(2.0 * x - 1.0)


def _init(module: nn.Module) -> None:
    """Weights ~ N(0, 0.02) (Zhu et al.'s code, following Radford et al. 2016)."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


# --- the model -------------------------------------------------------------------------------------


@register("cyclegan")
class CycleGAN(Model):
    """CycleGAN between the images (A) and their transformed copies (B) (Zhu et al. 2017).

    Hyperparameters: transform ("thicken" | "invert"), thicken_kernel (0 = from the image size),
    base_channels (generator and discriminator width), residual_blocks, lambda_cycle,
    lambda_identity (relative to lambda_cycle; 0 = no identity loss), epochs, batch_size, lr and
    beta1 (Adam), bank_size (domain-A training images kept for `sample`). `device` is a runtime
    setting.
    """

    fast_params = {"epochs": 2, "base_channels": 4, "residual_blocks": 1, "bank_size": 50}
    constraints = {
        "transform": {"choices": TRANSFORMS},
        "thicken_kernel": {"low": 0},
        "base_channels": {"low": 1},
        "residual_blocks": {"low": 0},
        "lambda_cycle": {"low": 0.0},
        "lambda_identity": {"low": 0.0},
        "epochs": {"low": 1},
        "batch_size": {"low": 1},
        "lr": {"low": 0.0},
        "beta1": {"low": 0.0, "high": 1.0},
        "bank_size": {"low": 1},
    }

    def __init__(self, transform: str = "thicken", thicken_kernel: int = 0, base_channels: int = 16,
                 residual_blocks: int = 3, lambda_cycle: float = 10.0, lambda_identity: float = 0.0,
                 epochs: int = 40, batch_size: int = 32, lr: float = 2e-4, beta1: float = 0.5,
                 bank_size: int = 1000, device: str = "auto"):
        self.transform = transform
        self.thicken_kernel = thicken_kernel
        self.base_channels = base_channels
        self.residual_blocks = residual_blocks
        self.lambda_cycle = lambda_cycle
        self.lambda_identity = lambda_identity
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.beta1 = beta1
        self.bank_size = bank_size
        self.device = device

    def to_domain_b(self, x: torch.Tensor) -> torch.Tensor:
        """The known transform A -> B that defines domain B."""
        return apply_transform(x, self.transform, self.thicken_kernel)

    # the pipeline judges the samples (domain B) against real images mapped into domain B
    sample_domain = to_domain_b

    @property
    def sample_domain_label(self) -> str:
        return f"domain B: the images under the known transform '{self.transform}'"

    # --- training ---------------------------------------------------------------------------------
    def fit(self, train: Split, *, seed: int) -> "CycleGAN":
        device = resolve_device(self.device)
        self.image_shape_ = train.image_shape
        self.levels_ = train.levels
        index_a, index_b = split_domains(len(train), seed)
        if len(index_a) == 0:
            raise ValueError("cyclegan needs at least two training images (one per domain)")
        domain_a = train.x[index_a].float()
        domain_b = self.to_domain_b(train.x[index_b].float())
        self.domain_indices_ = (index_a, index_b)
        bank = domain_a[:self.bank_size]
        self.bank_ = torch.round(bank * (self.levels_ - 1)).to(torch.int16)  # levels: compact and exact

        seed_everything(seed)  # the initial weights depend on the seed alone
        shape, width = train.image_shape, self.base_channels
        self.g_ab_ = Generator(shape, width, self.residual_blocks).to(device)
        self.g_ba_ = Generator(shape, width, self.residual_blocks).to(device)
        self.d_a_ = PatchDiscriminator(shape, width).to(device)
        self.d_b_ = PatchDiscriminator(shape, width).to(device)
        for net in (self.g_ab_, self.g_ba_, self.d_a_, self.d_b_):
            net.apply(_init)
            net.train()
        betas = (self.beta1, 0.999)
        opt_g = torch.optim.Adam(list(self.g_ab_.parameters()) + list(self.g_ba_.parameters()), lr=self.lr, betas=betas)
        opt_d = torch.optim.Adam(list(self.d_a_.parameters()) + list(self.d_b_.parameters()), lr=self.lr, betas=betas)
        lam, lam_id = self.lambda_cycle, self.lambda_identity * self.lambda_cycle

        def step(batch: tuple[torch.Tensor, ...], state) -> dict[str, torch.Tensor]:
            real_a, real_b = batch
            # G: LSGAN generator losses + cycle consistency (+ identity)  (Zhu et al., eqs. 1-3)
            fake_b = self.g_ab_(real_a)
            fake_a = self.g_ba_(real_b)
            adv = ((self.d_b_(fake_b) - 1) ** 2).mean() + ((self.d_a_(fake_a) - 1) ** 2).mean()
            cycle = (self.g_ba_(fake_b) - real_a).abs().mean() + (self.g_ab_(fake_a) - real_b).abs().mean()
            g_loss = adv + lam * cycle
            identity = torch.zeros((), device=real_a.device)
            if lam_id > 0:
                identity = (self.g_ab_(real_b) - real_b).abs().mean() + (self.g_ba_(real_a) - real_a).abs().mean()
                g_loss = g_loss + lam_id * identity
            opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            opt_g.step()

            # D: least squares, real -> 1, fake -> 0; halved as in Zhu et al.'s code
            d_loss = 0.5 * (((self.d_a_(real_a) - 1) ** 2).mean() + (self.d_a_(fake_a.detach()) ** 2).mean()
                            + ((self.d_b_(real_b) - 1) ** 2).mean() + (self.d_b_(fake_b.detach()) ** 2).mean())
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            return {"g_loss": g_loss.detach(), "d_loss": d_loss.detach(), "g_adversarial": adv.detach(),
                    "cycle": cycle.detach(), "identity": identity.detach()}

        self.history_ = train_loop("cyclegan", step, (domain_a, domain_b), epochs=self.epochs,
                                   batch_size=self.batch_size, seed=seed, device=device,
                                   modules={"g_ab": self.g_ab_, "g_ba": self.g_ba_, "d_a": self.d_a_, "d_b": self.d_b_})
        for net in (self.g_ab_, self.g_ba_, self.d_a_, self.d_b_):
            net.eval()
        return self

    # --- inference --------------------------------------------------------------------------------
    def _device(self) -> torch.device:
        return next(self.g_ab_.parameters()).device

    @torch.no_grad()
    def translate(self, x: torch.Tensor, direction: str = "AB") -> torch.Tensor:
        """G_AB(x) (direction "AB": images -> transformed) or G_BA(x) ("BA"), (N, C, H, W) in [0, 1]."""
        check_fitted(self, "g_ab_")
        if direction not in ("AB", "BA"):
            raise ValueError(f"direction must be 'AB' or 'BA', got {direction!r}")
        net = self.g_ab_ if direction == "AB" else self.g_ba_
        net.eval()
        if len(x) == 0:
            return x.float().cpu()
        return torch.cat([net(x[i:i + EVAL_BATCH].float().to(self._device())).cpu()
                          for i in range(0, len(x), EVAL_BATCH)])

    def sample(self, n: int, *, y: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """n samples of domain B obtained by translating stored training images of domain A: G_AB
        applied to bank images drawn uniformly at random (with replacement) with `generator`."""
        if y is not None:
            raise ValueError("cyclegan is unconditional: sample() takes no labels y")
        check_fitted(self, "bank_")
        index = torch.randint(len(self.bank_), (n,), generator=generator)
        source = self.bank_[index].float() / (self.levels_ - 1)
        return self.translate(source, "AB").float().clamp(0.0, 1.0)

    def anomaly_score(self, x: torch.Tensor) -> torch.Tensor:
        """Cycle-reconstruction error mean |G_BA(G_AB(x)) - x| per image, (N,) (higher = more anomalous)."""
        cycled = self.translate(self.translate(x, "AB"), "BA")
        return (cycled - x.float()).abs().flatten(1).mean(1)

    def figures(self, data: Split, *, generator: torch.Generator | None = None) -> dict:
        """'translation': 10 test images chosen with `generator`, rows A | A->B | A->B->A | transform(A)."""
        pick = torch.randperm(len(data), generator=generator)[:10]
        a = data.x[pick].float()
        ab = self.translate(a, "AB")
        aba = self.translate(ab, "BA")
        labels = {"row_labels": ["A: test image", "G_AB(A)", "G_BA(G_AB(A))", f"target: {self.transform}(A)"]}
        return {"translation": (torch.cat([a, ab, aba, self.to_domain_b(a)]).clamp(0.0, 1.0), len(a), labels)}

    def extra_metrics(self, test: Split, *, classify, fid) -> dict:
        """Translation quality on the test split against the known transform (module docstring)."""
        x = test.x.float()
        target = self.to_domain_b(x)
        fake = self.translate(x, "AB")
        cycled = self.translate(fake, "BA")
        labels = test.y.cpu()

        def accuracy(images: torch.Tensor) -> float:
            return float((torch.as_tensor(classify(images)).cpu().long() == labels).float().mean())

        unit_l1 = "mean |pixel error| in [0,1] units"
        name = f"transform '{self.transform}'"
        return {
            "translation_error": {
                "value": float((fake - target).abs().mean()), "unit": unit_l1,
                "description": f"L1 error of G_AB(x) against the known {name} of x, test split"},
            "translation_error_identity": {
                "value": float((x - target).abs().mean()), "unit": unit_l1,
                "description": f"baseline: L1 error of x itself against the {name} of x (no translation)"},
            "label_kept": {
                "value": accuracy(fake), "unit": "accuracy",
                "description": "evaluator classifier's accuracy on G_AB(x) against the true test labels"},
            "label_kept_target": {
                "value": accuracy(target), "unit": "accuracy",
                "description": f"reference: evaluator classifier's accuracy on the exact {name} of x"},
            "label_kept_source": {
                "value": accuracy(x), "unit": "accuracy",
                "description": "reference: evaluator classifier's accuracy on the untranslated test images"},
            "fid_to_target": {
                "value": float(fid(target, fake)), "unit": "FID (evaluator features)",
                "description": f"FID between the {name} of the test split and G_AB(test split)"},
            "fid_to_target_identity": {
                "value": float(fid(target, x)), "unit": "FID (evaluator features)",
                "description": f"baseline: FID between the {name} of the test split and the test split itself"},
            "cycle_error": {
                "value": float((cycled - x).abs().mean()), "unit": unit_l1,
                "description": "L1 error of G_BA(G_AB(x)) against x, test split"},
        }

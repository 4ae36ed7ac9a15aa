"""Denoising diffusion probabilistic model (Ho, Jain & Abbeel 2020, "Denoising diffusion probabilistic
models"), with the cosine noise schedule and the respaced sampler of Nichol & Dhariwal 2021
("Improved denoising diffusion probabilistic models").

Forward process q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I), t = 1..T, on images scaled
to [-1, 1] (Ho et al., section 4), so that q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I) with
abar_t = prod_{s<=t} (1 - beta_s) (their eq. 4). The reverse process
p(x_{t-1} | x_t) = N(mu_theta(x_t, t), sigma_t^2 I) uses the epsilon parameterisation (their eq. 11)
and is trained with the "simple" loss || eps - eps_theta(sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, t) ||^2
with t uniform on 1..T (their eq. 14, Algorithm 1).

Choices (documented because a small T on a CPU needs them):
  - schedule "cosine" (default): abar_t = f(t) / f(0), f(t) = cos^2((t/T + s) / (1 + s) * pi/2), s = 0.008,
    beta_t clipped at 0.999 (Nichol & Dhariwal 2021, eq. 17). It destroys information more slowly than
    the linear schedule, which matters for 8x8 images and a short chain. "linear": Ho et al.'s
    beta_1 = 1e-4 .. beta_T = 0.02 for T = 1000, both scaled by 1000 / T so that a shorter chain still
    ends near N(0, I) (the scaling of Nichol & Dhariwal's code).
  - reverse variances fixed (Ho et al., section 3.2): "beta" (default) sigma_t^2 = beta_t, or
    "posterior" sigma_t^2 = beta~_t = beta_t (1 - abar_{t-1}) / (1 - abar_t). As in Ho et al.'s code
    the decoder's variance at t = 1 (where beta~_1 = 0) is beta~_2. On digits (T = 200) "beta" gave
    the better validation bound (2.73 and 2.74 against 2.91 and 2.94 bits/dim, seeds 0 and 1) and the
    same FID (benchmarks/selection/digits-ddpm.json, `genbench select`).
  - the predicted x_0 is clipped to [-1, 1] before it enters mu_theta (Ho et al.'s code, `clip_denoised`),
    in sampling and in the bound alike, so the bound is the bound of the model that is sampled.
  - an exponential moving average of the weights (Ho et al., appendix B) with a warm-up
    decay min(ema_decay, (1 + step) / (10 + step)); the averaged network is the model.
  - the network is a small U-Net (Ronneberger et al. 2015, as in Ho et al., appendix B) with residual
    blocks, group norm and a sinusoidal time embedding (Vaswani et al. 2017), one residual block per
    resolution and NO self-attention (cheap on a CPU); it halves the resolution, at most three times,
    while the side is even and its half >= 4 pixels (8x8 -> 4x4; 28x28 -> 14 -> 7; 32x32 -> 16 -> 8
    -> 4), with base_channels x (1, 2, 2, 2) channels per resolution.

Sampling (`sample`): ancestral sampling (Ho et al., Algorithm 2) over `sampling_steps` timesteps.
With sampling_steps == timesteps this is exactly the model's reverse chain; with fewer, the chain is
respaced (Nichol & Dhariwal 2021, section 4): S timesteps tau evenly spaced in 1..T, the respaced
process has abar'_i = abar_{tau_i}, beta'_i = 1 - abar'_i / abar'_{i-1}, and the same network is
called at the original timestep tau_i. The last step shows the mean mu_theta(x_1, 1) without noise.

Likelihood (`log_prob`): the variational bound -L_vlb <= log P(x_0) (Ho et al., eq. 5)

    L_vlb = KL(q(x_T | x_0) || N(0, I))                                      [L_T]
          + sum_{t=2..T} E_q KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t))   [L_{t-1}]
          - E_q log p(x_0 | x_1)                                             [L_0]

with all T terms computed per image, each expectation with one draw x_t ~ q(x_t | x_0) from a fixed
seed, and the discretised Gaussian decoder of their section 3.3 (eq. 13) generalised from 256 to
K = `levels_` intensity levels: level k sits at c_k = -1 + 2k/(K-1), its bin is [c_k - 1/(K-1),
c_k + 1/(K-1)] with the outer edges at -inf / +inf, so the K probabilities of a pixel sum to 1. The
bound is a log-PROBABILITY of the discrete image k, not a density; the pipeline's "discrete" space
expects a log density of dequantised y = (k + u)/K on [0, 1]^D and subtracts D log K itself, so
`log_prob` recovers k = floor(y K) and returns  bound + D log K  (the density that is uniform on
each dequantisation cell). The reported nats / bits per dimension are then those of the bound on
log P(k).

Anomaly: no `anomaly_score`; the one-class protocol uses -log_prob, the full bound (T network
evaluations per test image and class model: about as long as one `log_prob` of the test split per
class). A cheaper estimate from a strided subset of the T terms was tried and dropped: the terms fall
steeply with t (on digits the 10 smallest t carry most of the bound), so a strided subset correlated
poorly with the full bound per image.

Everything here is written by hand: no maintained library ships a DDPM with this bound for an
arbitrary image shape.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from genbench.data import Split
from genbench.models import register
from genbench.models.base import Model, check_fitted, resolve_device
from genbench.training import seed_everything, train_loop

EVAL_SEED = 0  # the fixed seed of the noise the bound draws: repeated calls agree
EVAL_PIXELS = 2**17  # (image, timestep) pairs x pixels per network call when computing the bound
SAMPLE_BATCH = 500  # images denoised together when sampling


# --- noise schedule and the Gaussian algebra (Ho et al. 2020, section 2) --------------------------


def cosine_alphas_cumprod(timesteps: int, s: float = 0.008) -> torch.Tensor:
    """abar_1..abar_T of the cosine schedule (Nichol & Dhariwal 2021, eq. 17), betas clipped at 0.999."""
    steps = torch.arange(timesteps + 1, dtype=torch.float64)
    f = torch.cos((steps / timesteps + s) / (1 + s) * math.pi / 2) ** 2
    betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)
    return torch.cumprod(1 - betas, 0)


def linear_alphas_cumprod(timesteps: int) -> torch.Tensor:
    """abar_1..abar_T of Ho et al.'s linear schedule (1e-4 .. 0.02 at T = 1000), scaled by 1000 / T."""
    scale = 1000.0 / timesteps
    betas = torch.linspace(scale * 1e-4, min(scale * 0.02, 0.999), timesteps, dtype=torch.float64)
    return torch.cumprod(1 - betas, 0)


class Schedule:
    """Every coefficient of a diffusion chain, from abar_1..abar_S (float64, CPU; index i = step i+1).

    `timesteps` are the network's time inputs for each step (0-based: the original t - 1), which
    differ from 0..S-1 for a respaced chain (Nichol & Dhariwal 2021, section 4).
    """

    def __init__(self, alphas_cumprod: torch.Tensor, timesteps: torch.Tensor, variance: str = "posterior"):
        abar = alphas_cumprod.double()
        abar_prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
        self.timesteps = timesteps.long()
        self.alphas_cumprod = abar
        self.alphas_cumprod_prev = abar_prev
        self.betas = 1 - abar / abar_prev
        # q(x_{t-1} | x_t, x_0) = N(coef_x0 x_0 + coef_xt x_t, beta~_t)  (Ho et al., eqs. 6-7)
        self.posterior_variance = self.betas * (1 - abar_prev) / (1 - abar)
        self.coef_x0 = self.betas * abar_prev.sqrt() / (1 - abar)
        self.coef_xt = (1 - abar_prev) * (1 - self.betas).sqrt() / (1 - abar)
        # fixed reverse variances; at step 1 (beta~_1 = 0) use beta~_2, as Ho et al.'s code does
        floor = self.posterior_variance[1] if len(abar) > 1 else self.betas[0]
        if variance == "posterior":
            reverse = torch.cat([floor.reshape(1), self.posterior_variance[1:]])
        else:
            reverse = torch.cat([floor.reshape(1), self.betas[1:]])
        self.reverse_variance = reverse

    def __len__(self) -> int:
        return len(self.alphas_cumprod)

    def at(self, name: str, i: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Coefficient `name` at step indices i (N,), shaped (N, 1, 1, 1) like `like`."""
        values = getattr(self, name)[i.cpu()].to(device=like.device, dtype=like.dtype)
        return values.reshape(-1, *([1] * (like.ndim - 1)))

    def q_sample(self, x0: torch.Tensor, i: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t ~ q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I)  (Ho et al., eq. 4)."""
        return self.at("alphas_cumprod", i, x0).sqrt() * x0 + (1 - self.at("alphas_cumprod", i, x0)).sqrt() * noise

    def q_mean_variance(self, x0: torch.Tensor, i: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        abar = self.at("alphas_cumprod", i, x0)
        return abar.sqrt() * x0, (1 - abar).expand_as(x0)

    def posterior_mean(self, x0: torch.Tensor, xt: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        return self.at("coef_x0", i, xt) * x0 + self.at("coef_xt", i, xt) * xt

    def predict_x0(self, xt: torch.Tensor, i: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """x_0 from x_t and the predicted noise (inverting eq. 4), clipped to [-1, 1]."""
        abar = self.at("alphas_cumprod", i, xt)
        return ((xt - (1 - abar).sqrt() * eps) / abar.sqrt()).clamp(-1.0, 1.0)


def make_schedule(kind: str, timesteps: int, variance: str = "posterior") -> Schedule:
    abar = cosine_alphas_cumprod(timesteps) if kind == "cosine" else linear_alphas_cumprod(timesteps)
    return Schedule(abar, torch.arange(timesteps), variance)


def respaced(schedule: Schedule, steps: int, variance: str) -> Schedule:
    """The chain restricted to `steps` timesteps evenly spaced in 1..T (Nichol & Dhariwal 2021)."""
    total = len(schedule)
    if steps >= total:
        return schedule
    keep = torch.linspace(0, total - 1, steps, dtype=torch.float64).round().long().unique()
    return Schedule(schedule.alphas_cumprod[keep], schedule.timesteps[keep], variance)


def normal_kl(mean1: torch.Tensor, var1: torch.Tensor, mean2: torch.Tensor, var2: torch.Tensor) -> torch.Tensor:
    """KL(N(mean1, var1) || N(mean2, var2)) elementwise, in nats."""
    return 0.5 * (torch.log(var2) - torch.log(var1) + (var1 + (mean1 - mean2) ** 2) / var2 - 1.0)


def _log_ndtr_difference(lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """log(Phi(upper) - Phi(lower)) for lower < upper, stable in both tails (Phi(b) - Phi(a) =
    Phi(-a) - Phi(-b) is used where the interval lies mostly above 0)."""
    flip = (lower + upper) > 0
    lo = torch.where(flip, -upper, lower)
    hi = torch.where(flip, -lower, upper)
    log_hi = torch.special.log_ndtr(hi)
    log_lo = torch.special.log_ndtr(lo)
    return log_hi + torch.log(-torch.expm1((log_lo - log_hi).clamp(max=-1e-30)))


def discretized_gaussian_log_likelihood(k: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                                        levels: int) -> torch.Tensor:
    """log P(k) per pixel under the discretised Gaussian decoder (Ho et al. 2020, eq. 13) on K levels.

    Level k in 0..K-1 sits at c_k = -1 + 2k/(K-1) in [-1, 1]; its bin is c_k +- 1/(K-1), except that
    the first bin extends to -inf and the last to +inf, so the K probabilities sum to one.
    """
    half = 1.0 / (levels - 1)
    centre = -1.0 + 2.0 * k.to(mean.dtype) * half
    upper = torch.where(k >= levels - 1, torch.full_like(mean, math.inf), (centre + half - mean) / std)
    lower = torch.where(k <= 0, torch.full_like(mean, -math.inf), (centre - half - mean) / std)
    return _log_ndtr_difference(lower, upper)


# --- the network -----------------------------------------------------------------------------------


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of (N,) timesteps (Vaswani et al. 2017, section 3.5; Ho et al., appendix B)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / max(half - 1, 1))
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    return F.pad(emb, (0, dim % 2))


def _groups(channels: int) -> int:
    for g in (8, 4, 2, 1):
        if channels % g == 0:
            return g
    return 1


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv, + time embedding, GroupNorm-SiLU-conv, with a residual connection."""

    def __init__(self, c_in: int, c_out: int, t_dim: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(c_in), c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.time = nn.Linear(t_dim, c_out)
        self.norm2 = nn.GroupNorm(_groups(c_out), c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time(temb)[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


def resolution_levels(size: int, max_downsamples: int = 3) -> int:
    """How many times the U-Net halves the resolution: while even and the half is >= 4 pixels."""
    n = 0
    while n < max_downsamples and size % 2 == 0 and size // 2 >= 4:
        size //= 2
        n += 1
    return n


class UNet(nn.Module):
    """eps_theta(x_t, t): a small U-Net sized from the image shape (module docstring)."""

    MULTIPLIERS = (1, 2, 2, 2)

    def __init__(self, image_shape: tuple[int, int, int], base_channels: int = 32):
        super().__init__()
        channels, height, width = image_shape
        downs = min(resolution_levels(height), resolution_levels(width))
        widths = [base_channels * self.MULTIPLIERS[i] for i in range(downs + 1)]
        self.t_dim = base_channels
        t_hidden = 4 * base_channels
        self.time_mlp = nn.Sequential(nn.Linear(self.t_dim, t_hidden), nn.SiLU(), nn.Linear(t_hidden, t_hidden))
        self.stem = nn.Conv2d(channels, widths[0], 3, padding=1)
        self.down_blocks = nn.ModuleList()
        self.downsamples = nn.ModuleList()
        ch = widths[0]
        for i, w in enumerate(widths):
            self.down_blocks.append(ResBlock(ch, w, t_hidden))
            ch = w
            if i < downs:
                self.downsamples.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
        self.mid = nn.ModuleList([ResBlock(ch, ch, t_hidden), ResBlock(ch, ch, t_hidden)])
        self.up_blocks = nn.ModuleList()
        self.upsamples = nn.ModuleList()
        for i in reversed(range(downs + 1)):
            self.up_blocks.append(ResBlock(ch + widths[i], widths[i], t_hidden))
            ch = widths[i]
            if i > 0:
                self.upsamples.append(nn.Conv2d(ch, widths[i - 1], 3, padding=1))
                ch = widths[i - 1]
        self.out_norm = nn.GroupNorm(_groups(ch), ch)
        self.out = nn.Conv2d(ch, channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        temb = self.time_mlp(timestep_embedding(t, self.t_dim))
        h = self.stem(x)
        skips = []
        for i, block in enumerate(self.down_blocks):
            h = block(h, temb)
            skips.append(h)
            if i < len(self.downsamples):
                h = self.downsamples[i](h)
        for block in self.mid:
            h = block(h, temb)
        for j, block in enumerate(self.up_blocks):
            h = block(torch.cat([h, skips.pop()], 1), temb)
            if j < len(self.upsamples):
                target = skips[-1].shape[-2:]
                h = self.upsamples[j](F.interpolate(h, size=target, mode="nearest"))
        return self.out(F.silu(self.out_norm(h)))


# --- the model -------------------------------------------------------------------------------------


@register("ddpm")
class DDPM(Model):
    """Denoising diffusion probabilistic model (Ho et al. 2020) with an epsilon-predicting U-Net.

    Hyperparameters: timesteps (T), schedule ("cosine" | "linear"), variance (fixed reverse
    variance: "posterior" beta~_t | "beta" beta_t), base_channels (U-Net width), epochs, batch_size,
    lr (Adam), ema_decay (0 disables the weight average), sampling_steps (respaced sampler, <= T;
    0 means T).
    `device` is a runtime setting.
    """

    likelihood_space = "discrete"
    fast_params = {"timesteps": 20, "base_channels": 8, "epochs": 2, "sampling_steps": 10}
    constraints = {
        "timesteps": {"low": 2},
        "schedule": {"choices": ("cosine", "linear")},
        "variance": {"choices": ("posterior", "beta")},
        "base_channels": {"low": 1},
        "epochs": {"low": 1},
        "batch_size": {"low": 1},
        "lr": {"low": 0.0},
        "ema_decay": {"low": 0.0, "high": 1.0},
        "sampling_steps": {"low": 0},
    }

    def __init__(self, timesteps: int = 200, schedule: str = "cosine", variance: str = "beta",
                 base_channels: int = 16, epochs: int = 50, batch_size: int = 64, lr: float = 1e-3,
                 ema_decay: float = 0.995, sampling_steps: int = 100, device: str = "auto"):
        self.timesteps = timesteps
        self.schedule = schedule
        self.variance = variance
        self.base_channels = base_channels
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.ema_decay = ema_decay
        self.sampling_steps = sampling_steps
        self.device = device

    @property
    def likelihood_info(self) -> dict:
        return {"estimator": "lower_bound",
                "method": f"variational bound L_vlb (Ho et al. 2020 eq. 5), discretised Gaussian decoder over "
                          f"K levels, all T={self.timesteps} terms, one x_t ~ q(x_t|x_0) per term; "
                          f"{self.schedule} schedule, fixed '{self.variance}' reverse variances",
                "samples": self.timesteps, "discrete_input": "levels"}

    def _schedule(self) -> Schedule:
        return make_schedule(self.schedule, self.timesteps, self.variance)

    # --- training ---------------------------------------------------------------------------------
    def fit(self, train: Split, *, seed: int, val: Split | None = None) -> "DDPM":
        device = resolve_device(self.device)
        self.image_shape_ = train.image_shape
        self.levels_ = train.levels
        schedule = self._schedule()
        seed_everything(seed)  # the initial weights depend on the seed alone
        net = UNet(train.image_shape, self.base_channels).to(device)
        self.net_ = copy.deepcopy(net)  # the exponential moving average of the weights: the model
        self.net_.requires_grad_(False)
        optimiser = torch.optim.Adam(net.parameters(), lr=self.lr)
        net.train()
        sqrt_abar = schedule.alphas_cumprod.sqrt().float().to(device)
        sqrt_1m_abar = (1 - schedule.alphas_cumprod).sqrt().float().to(device)

        def simple_loss(x: torch.Tensor, generator: torch.Generator, network: torch.nn.Module) -> torch.Tensor:
            x0 = 2.0 * x - 1.0  # data in [-1, 1] (Ho et al., section 3.3)
            i = torch.randint(0, self.timesteps, (len(x0),), generator=generator, device=x0.device)
            eps = torch.randn(x0.shape, generator=generator, device=x0.device)
            xt = sqrt_abar[i][:, None, None, None] * x0 + sqrt_1m_abar[i][:, None, None, None] * eps
            return F.mse_loss(network(xt, i), eps)  # L_simple (Ho et al., eq. 14)

        def step(batch: tuple[torch.Tensor, ...], state) -> dict[str, torch.Tensor]:
            loss = simple_loss(batch[0], state.generator, net)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            decay = min(self.ema_decay, (1 + state.step) / (10 + state.step))
            with torch.no_grad():
                for p_avg, p in zip(self.net_.parameters(), net.parameters()):
                    p_avg.lerp_(p, 1.0 - decay)
            return {"loss": loss.detach()}

        self.history_ = train_loop("ddpm", step, (train.x.float(),), epochs=self.epochs,
                                   batch_size=self.batch_size, seed=seed, device=device,
                                   modules={"ema": self.net_, "net": net},
                                   # held out: the averaged weights, which are the model
                                   validation=((lambda b, g: {"loss": simple_loss(b[0], g, self.net_)}, (val.x.float(),))
                                               if val is not None else None))
        self.net_.eval()
        return self

    def _device(self) -> torch.device:
        return next(self.net_.parameters()).device

    # --- sampling ---------------------------------------------------------------------------------
    @torch.no_grad()
    def _reverse(self, n: int, generator: torch.Generator | None, keep: list[int] | None = None):
        """Ancestral sampling of n images on the (respaced) chain; returns x_0 in [-1, 1] and, when
        `keep` lists reverse-step indices, the states x_t after those steps (index 0 = x_T)."""
        check_fitted(self, "net_")
        self.net_.eval()
        device = self._device()
        steps = self.sampling_steps or self.timesteps
        chain = respaced(self._schedule(), steps, self.variance)
        outs, kept = [], []
        for start in range(0, n, SAMPLE_BATCH):
            m = min(SAMPLE_BATCH, n - start)
            x = torch.randn((m, *self.image_shape_), generator=generator).to(device)
            trail = [x.cpu()] if keep is not None and 0 in keep else []
            for j in reversed(range(len(chain))):
                i = torch.full((m,), j, dtype=torch.long)
                eps = self.net_(x, chain.timesteps[i].to(device))
                x0 = chain.predict_x0(x, i, eps)
                mean = chain.posterior_mean(x0, x, i)
                if j > 0:
                    noise = torch.randn(x.shape, generator=generator).to(device)
                    x = mean + chain.at("reverse_variance", i, x).sqrt() * noise
                else:
                    x = mean  # the last step shows the decoder's mean (Ho et al., section 3.3)
                if keep is not None and len(chain) - j in keep:
                    trail.append(x.cpu())
            outs.append(x.cpu())
            kept.append(trail)
        return torch.cat(outs), kept

    def sample(self, n: int, *, y: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """n images (n, C, H, W) in [0, 1] on the CPU by ancestral sampling over `sampling_steps`
        respaced steps (all noise drawn on the CPU with `generator`)."""
        if y is not None:
            raise ValueError("ddpm is unconditional: sample() takes no labels y")
        x, _ = self._reverse(n, generator)
        return ((x + 1.0) / 2.0).clamp(0.0, 1.0).float()

    def figures(self, data: Split, *, generator: torch.Generator | None = None) -> dict:
        """'denoising_trajectory': 8 samples (rows) at 10 evenly spaced reverse steps (columns),
        from x_T (pure noise) to the final x_0, each x_t shown as (x_t + 1) / 2 clipped to [0, 1]."""
        steps = len(respaced(self._schedule(), self.sampling_steps or self.timesteps, self.variance))
        keep = sorted({round(v) for v in torch.linspace(0, steps, 10).tolist()})
        _, kept = self._reverse(8, generator, keep=keep)
        trail = torch.stack(kept[0], 1)  # (8, columns, C, H, W)
        images = ((trail + 1.0) / 2.0).clamp(0.0, 1.0).flatten(0, 1)
        labels = {"row_labels": [f"sample {i + 1}" for i in range(len(trail))],
                  "column_labels": ["x_T (noise)" if k == 0 else "x_0" if k == steps else f"step {k}/{steps}" for k in keep]}
        return {"denoising_trajectory": (images, trail.shape[1], labels)}

    # --- the variational bound ----------------------------------------------------------------------
    def _levels(self, x: torch.Tensor) -> torch.Tensor:
        """Intensity indices k in 0..K-1 from dequantised y = (k + u)/K (or from lattice images k/(K-1))."""
        return torch.floor(x.double() * self.levels_).clamp(0, self.levels_ - 1).long()

    @torch.no_grad()
    def _bound_terms(self, k: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
        """The bound's terms in nats per image: (N, len(steps)) for step indices `steps` (0 = L_0,
        i >= 1 = L_{i}), each with one x_t ~ q(x_t | x_0) from a fixed seed, plus (N,) L_T."""
        check_fitted(self, "net_")
        self.net_.eval()
        device = self._device()
        chain = self._schedule()
        generator = torch.Generator().manual_seed(EVAL_SEED)
        n, m = len(k), len(steps)
        x0_all = (-1.0 + 2.0 * k.float() / (self.levels_ - 1))
        terms = torch.zeros(n, m, dtype=torch.float64)
        # images per chunk; each chunk evaluates all m steps of each of its images
        per_call = max(1, EVAL_PIXELS // (m * math.prod(self.image_shape_)))
        for start in range(0, n, per_call):
            kb = k[start:start + per_call].to(device)
            x0 = x0_all[start:start + per_call].to(device)
            b = len(x0)
            i = steps.repeat(b)  # (b * m,): image-major
            x0r = x0.repeat_interleave(m, 0)
            kr = kb.repeat_interleave(m, 0)
            noise = torch.randn(x0r.shape, generator=generator).to(device)
            xt = chain.q_sample(x0r, i, noise)
            eps = self.net_(xt, chain.timesteps[i].to(device))
            x0_hat = chain.predict_x0(xt, i, eps)
            mean_theta = chain.posterior_mean(x0_hat, xt, i)
            var_theta = chain.at("reverse_variance", i, xt)
            # t >= 2: KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t))  (Ho et al., eq. 5)
            true_mean = chain.posterior_mean(x0r, xt, i)
            true_var = chain.at("posterior_variance", i, xt).clamp(min=1e-20)
            kl = normal_kl(true_mean.double(), true_var.double(), mean_theta.double(), var_theta.double())
            kl = kl.flatten(1).sum(1)
            # t = 1: -log p(x_0 | x_1), the discretised Gaussian decoder (eq. 13)
            nll0 = -discretized_gaussian_log_likelihood(kr, mean_theta.double(), var_theta.double().sqrt(),
                                                        self.levels_).flatten(1).sum(1)
            term = torch.where(i.to(device) == 0, nll0, kl)
            terms[start:start + b] = term.reshape(b, m).cpu()
        abar_T = chain.alphas_cumprod[-1]
        mean_T = abar_T.sqrt() * x0_all.double()
        prior = normal_kl(mean_T, (1 - abar_T).expand_as(mean_T), torch.zeros_like(mean_T),
                          torch.ones_like(mean_T)).flatten(1).sum(1)  # L_T
        return terms, prior

    def bound(self, x: torch.Tensor) -> torch.Tensor:
        """-L_vlb per image in nats, (N,): a lower bound on log P(k) of the discrete image."""
        k = self._levels(x)
        terms, prior = self._bound_terms(k, torch.arange(self.timesteps))
        return -(terms.sum(1) + prior)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """The bound as a log density on [0, 1]^D of dequantised images y = (k + u)/K, (N,) in nats:
        -L_vlb + D log K (uniform on each dequantisation cell); the pipeline subtracts D log K again,
        so the reported NLL is that of the bound on log P(k)."""
        dim = math.prod(self.image_shape_)
        return (self.bound(x) + dim * math.log(self.levels_)).float()

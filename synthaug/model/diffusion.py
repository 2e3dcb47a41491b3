"""Diffusion objectives, noise schedules and samplers.

Everything works in the "sigma space" of Karras et al. 2022 (EDM): a noisy sample is
``x = x0 + sigma * eps`` and a *denoiser* ``D(x, sigma, **extra) -> x0_hat`` is all a
sampler knows. Every objective exposes that call:

* :class:`EDMPrecond` — the EDM preconditioned denoiser (Karras et al. 2022, Table 1).
* :class:`X0Precond` — the same scalings, but the network predicts the clean sample
  (no skip connection), with min-SNR loss weighting (Hang et al. 2023).
* :class:`FlowPrecond` — rectified flow / flow matching (Liu et al. 2022; Lipman et al.
  2022): ``x_t = (1 - t) x0 + t eps`` with a velocity network, adapted to the same
  call through ``t = sigma / (1 + sigma)``, ``x_t = x / (1 + sigma)``.

Samplers are plain functions ``sample_*(model, x, sigmas, extra_args, callback,
disable, ...)`` in the style of k-diffusion; they integrate in the dtype of ``x`` and
the preconditioners cast at the network boundary.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..core.progress import progress_bar

Denoiser = Callable[..., torch.Tensor]
OBJECTIVES = ("edm", "flow", "x0")


def append_dims(x: torch.Tensor, target_dims: int) -> torch.Tensor:
    """Append singleton dimensions to ``x`` until it has ``target_dims`` dimensions."""
    return x[(...,) + (None,) * (target_dims - x.ndim)]


# --- configuration --------------------------------------------------------------------


@dataclass(frozen=True)
class DiffusionConfig:
    """Objective and sampling defaults (serialised beside the weights)."""

    objective: str = "edm"         # "edm" (score / denoiser), "flow" (rectified flow) or "x0" (clean-sample prediction)
    sigma_data: float = 0.5        # data standard deviation assumed by the preconditioning
    sigma_min: float = 0.002       # smallest noise level sampled
    sigma_max: float = 80.0        # largest noise level (start of sampling)
    p_mean: float = -1.2           # EDM training: log-normal noise level mean
    p_std: float = 1.2             # EDM training: log-normal noise level std
    rho: float = 7.0               # Karras schedule exponent
    sampler: str = "heun"          # default sampler
    steps: int = 12                # default number of sampler steps
    guidance: float = 1.0          # default classifier-free guidance scale (1 = off)
    # Per-channel multipliers of the training loss (None = all 1). They move the network's effort
    # between channels, not the optimum (each channel's conditional mean); docs/training.md "SR loss weights".
    channel_weights: tuple[float, ...] | None = None
    # x0 objective only: channels whose estimate keeps EDM's skip connection (c_skip x + c_out F),
    # so that the network need not learn to carry them through at low noise (docs/training.md,
    # "Lesion channel"); () = none.
    skip_channels: tuple[int, ...] = ()
    # Per-channel multipliers of the loss where the clean channel is > 0 (the label is present;
    # None = all 1). Unlike channel_weights they move the optimum: a weight w makes a voxel
    # positive from a probability 1 / (1 + w) on, for a class too rare to be drawn otherwise
    # (docs/training.md, "Lesion channel"); the label offsets then refit its volume.
    positive_weights: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        skip = tuple(int(c) for c in self.skip_channels)
        if any(c < 0 for c in skip) or len(set(skip)) != len(skip):
            raise ValueError(f"skip_channels={list(self.skip_channels)}: need distinct channel indices >= 0")
        if skip and self.objective != "x0":
            raise ValueError(f"skip_channels only applies to the x0 objective, not {self.objective!r}")
        object.__setattr__(self, "skip_channels", skip)
        for name in ("channel_weights", "positive_weights"):
            value = getattr(self, name)
            if value is not None:
                weights = tuple(float(w) for w in value)
                if not weights or not all(math.isfinite(w) and w >= 0 for w in weights) or not any(weights):
                    raise ValueError(f"{name}={list(value)}: need finite weights >= 0, not all 0")
                object.__setattr__(self, name, weights)
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective={self.objective!r}; choose one of {OBJECTIVES}")
        if not 0 < self.sigma_min < self.sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got {self.sigma_min}, {self.sigma_max}")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler={self.sampler!r}; choose one of {sorted(SAMPLERS)}")

    def to_dict(self) -> dict:
        d = asdict(self)
        for name in ("channel_weights", "positive_weights"):
            if d[name] is None:
                del d[name]  # configs written before the field existed compare equal
            else:
                d[name] = list(d[name])
        if d["skip_channels"]:
            d["skip_channels"] = list(d["skip_channels"])
        else:
            del d["skip_channels"]  # likewise
        return d

    @classmethod
    def from_dict(cls, d: dict) -> DiffusionConfig:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def channel_mse(err: torch.Tensor, weights: Sequence[float] | None, x0: torch.Tensor | None = None,
                positive_weights: Sequence[float] | None = None) -> torch.Tensor:
    """Per-sample mean of ``err**2`` over channels and voxels, channel ``c`` scaled by ``weights[c]``
    everywhere and by ``positive_weights[c]`` where ``x0``'s channel ``c`` is > 0."""
    sq = err.pow(2)
    for name, w in (("channel_weights", weights), ("positive_weights", positive_weights)):
        if w is not None and len(w) != err.shape[1]:
            raise ValueError(f"{name} has {len(w)} entries for {err.shape[1]} channels")
    if weights is not None:
        sq = sq * append_dims(torch.as_tensor(weights, dtype=sq.dtype, device=sq.device), sq.ndim - 1)
    if positive_weights is not None:
        if x0 is None:
            raise ValueError("positive_weights need the clean sample x0")
        pw = append_dims(torch.as_tensor(positive_weights, dtype=sq.dtype, device=sq.device), sq.ndim - 1)
        sq = sq * torch.where(x0 > 0, pw, torch.ones_like(pw))
    return sq.flatten(1).mean(1)


# --- preconditioning -------------------------------------------------------------------


class EDMPrecond(nn.Module):
    """EDM preconditioning around a raw network (Karras et al. 2022, Table 1 and Eq. 7).

    ``forward(x, sigma, cond, concat=None)`` returns the denoised estimate; ``loss``
    uses the same scalings, so training and sampling cannot drift apart.
    """

    def __init__(self, net: nn.Module, config: DiffusionConfig) -> None:
        super().__init__()
        self.net = net
        self.config = config

    def get_scalings(self, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        sd = self.config.sigma_data
        c_skip = sd**2 / (sigma**2 + sd**2)
        c_out = sigma * sd / (sigma**2 + sd**2).sqrt()
        c_in = 1 / (sigma**2 + sd**2).sqrt()
        c_noise = sigma.log() / 4  # ~[-1.6, 1.1]; mapped to the U-Net's timestep range below
        return c_skip, c_out, c_in, c_noise

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor, concat: torch.Tensor | None = None) -> torch.Tensor:
        sigma = _as_batch(sigma, x)
        c_skip, c_out, c_in, c_noise = (append_dims(s, x.ndim) if i < 3 else s for i, s in enumerate(self.get_scalings(sigma)))
        dtype = next(self.net.parameters()).dtype
        f = self.net((c_in * x).to(dtype), (250.0 * (c_noise + 2.0)).to(dtype), cond, concat)
        return (c_skip * x + c_out * f.to(x.dtype)).to(x.dtype)

    def loss(self, x0: torch.Tensor, cond: torch.Tensor, concat: torch.Tensor | None = None,
             generator: torch.Generator | None = None) -> torch.Tensor:
        """Per-sample weighted denoising loss (EDM Eq. 2 with lambda = 1 / c_out^2)."""
        n = x0.shape[0]
        # Noise is drawn on the CPU (where the generator lives) so that runs are reproducible on any device.
        rnd = torch.randn(n, generator=generator).to(x0.device)
        sigma = (rnd * self.config.p_std + self.config.p_mean).exp()
        eps = torch.randn(x0.shape, generator=generator).to(x0.device, x0.dtype)
        denoised = self(x0 + append_dims(sigma, x0.ndim) * eps, sigma, cond, concat)
        return self.loss_weight(sigma) * channel_mse(denoised - x0, self.config.channel_weights, x0,
                                                     self.config.positive_weights)

    def loss_weight(self, sigma: torch.Tensor) -> torch.Tensor:
        """lambda(sigma) = 1 / c_out^2: the network's target has unit variance at every level."""
        return self.get_scalings(sigma)[1].pow(-2)


class X0Precond(EDMPrecond):
    """EDM's input and noise scalings, but the network predicts the clean sample: ``D = sigma_data * F``.

    Why: with EDM's skip connection the network output at low noise must cancel the
    noise of every channel voxel by voxel (``F ~ -eps``), so all channels' noise has to
    pass through the network's first level. A case has 15 channels and the demo global
    network 16 features there; trained that way it removed only half of the noise power
    at sigma 0.1 after 4,600 steps. The clean sample is far simpler to carry: the twelve
    organ channels hold one class per voxel. The loss is EDM's weighting of the x0 error,
    ``1 + SNR`` with ``SNR = sigma_data^2 / sigma^2``, capped at ``SNR_GAMMA`` (min-SNR-gamma)
    so that the lowest noise levels do not dominate the gradient.
    """

    SNR_GAMMA = 5.0

    def get_scalings(self, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        _, _, c_in, c_noise = super().get_scalings(sigma)
        return torch.zeros_like(sigma), torch.full_like(sigma, self.config.sigma_data), c_in, c_noise

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor, concat: torch.Tensor | None = None) -> torch.Tensor:
        out = super().forward(x, sigma, cond, concat)  # sigma_data * F
        skip = list(self.config.skip_channels)
        if skip:
            c_skip, c_out, _, _ = EDMPrecond.get_scalings(self, append_dims(_as_batch(sigma, x), x.ndim))
            out = out.clone()
            out[:, skip] = c_skip * x[:, skip] + (c_out / self.config.sigma_data) * out[:, skip]
        return out

    def loss_weight(self, sigma: torch.Tensor) -> torch.Tensor:
        """EDM's lambda for the x0 error, ``(1 + SNR) / sigma_data^2``, capped at ``SNR_GAMMA / sigma_data^2``."""
        sd = self.config.sigma_data
        return (1 + sd**2 / sigma**2).clamp(max=self.SNR_GAMMA) / sd**2


class FlowPrecond(nn.Module):
    """Rectified flow (flow matching with straight paths) behind the denoiser call.

    Training: ``x_t = (1 - t) x0 + t eps`` with ``t`` logit-normal, the network predicts
    the velocity ``v = eps - x0``. Sampling: ``t = sigma / (1 + sigma)``,
    ``x_t = x / (1 + sigma)``, ``x0_hat = x_t - t v``.
    """

    def __init__(self, net: nn.Module, config: DiffusionConfig) -> None:
        super().__init__()
        self.net = net
        self.config = config

    def velocity(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, concat: torch.Tensor | None = None) -> torch.Tensor:
        dtype = next(self.net.parameters()).dtype
        # Inputs scaled to unit variance: Var(x_t) = (1-t)^2 sd^2 + t^2.
        sd = self.config.sigma_data
        scale = append_dims(1 / ((1 - t) ** 2 * sd**2 + t**2).sqrt(), x_t.ndim)
        return self.net((scale * x_t).to(dtype), (1000.0 * t).to(dtype), cond, concat).to(x_t.dtype)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor, concat: torch.Tensor | None = None) -> torch.Tensor:
        sigma = _as_batch(sigma, x)
        t = sigma / (1 + sigma)
        x_t = x / append_dims(1 + sigma, x.ndim)
        return x_t - append_dims(t, x.ndim) * self.velocity(x_t, t, cond, concat)

    def loss(self, x0: torch.Tensor, cond: torch.Tensor, concat: torch.Tensor | None = None,
             generator: torch.Generator | None = None) -> torch.Tensor:
        """Per-sample velocity-matching loss with logit-normal times (Esser et al. 2024)."""
        n = x0.shape[0]
        t = torch.sigmoid(torch.randn(n, generator=generator)).to(x0.device)
        eps = torch.randn(x0.shape, generator=generator).to(x0.device, x0.dtype)
        tt = append_dims(t, x0.ndim)
        x_t = (1 - tt) * x0 + tt * eps
        v = self.velocity(x_t, t, cond, concat)
        return channel_mse(v - (eps - x0), self.config.channel_weights, x0, self.config.positive_weights)


def make_precond(net: nn.Module, config: DiffusionConfig) -> EDMPrecond | FlowPrecond:
    """The preconditioned denoiser for ``config.objective``."""
    return {"edm": EDMPrecond, "flow": FlowPrecond, "x0": X0Precond}[config.objective](net, config)


def _as_batch(sigma: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
    sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    return sigma.expand(x.shape[0]) if sigma.ndim == 0 else sigma


def _repeat_batch(t, batch: int, reps: int):
    """``t`` repeated ``reps`` times along dim 0 if it is a per-sample tensor of ``batch`` rows."""
    if isinstance(t, torch.Tensor) and t.ndim > 0 and t.shape[0] == batch:
        return t.repeat(reps, *([1] * (t.ndim - 1)))
    return t


def cfg_denoiser(model: Denoiser, scale: float, uncond: torch.Tensor | None = None, batched: bool = False) -> Denoiser:
    """Classifier-free guidance (Ho & Salimans 2022): ``D_u + scale * (D_c - D_u)``.

    ``uncond`` defaults to an all-zero demographics vector (every field "unknown").
    ``batched`` evaluates the conditional and unconditional halves in one call (faster,
    for models whose extra arguments are all per-sample tensors or shared values).
    """
    if scale == 1.0:
        return model

    def guided(x: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor, **extra) -> torch.Tensor:
        u = torch.zeros_like(cond) if uncond is None else uncond.expand_as(cond)
        if batched:
            b = x.shape[0]
            d = model(torch.cat([x, x]), _repeat_batch(sigma, b, 2), cond=torch.cat([u, cond]),
                      **{k: _repeat_batch(v, b, 2) for k, v in extra.items()})
            d_u, d_c = d[:b], d[b:]
        else:
            d_c = model(x, sigma, cond=cond, **extra)
            d_u = model(x, sigma, cond=u, **extra)
        return d_u + scale * (d_c - d_u)

    return guided


def training_share_above(config: DiffusionConfig, sigma: float) -> float:
    """The share of training examples whose noise level exceeds ``sigma``.

    Sampling visits every level from ``sigma_max`` down; levels that training almost never
    draws are where an otherwise good denoiser is untrained (``benchmarks/denoiser.py``
    reports this beside the denoising error).
    """
    if sigma <= 0:
        return 1.0
    if config.objective == "flow":  # logit-normal t, t = sigma / (1 + sigma): logit(t) = log(sigma)
        z = math.log(sigma)
    else:  # log-normal sigma
        z = (math.log(sigma) - config.p_mean) / config.p_std
    return 0.5 * math.erfc(z / math.sqrt(2))


# --- schedules --------------------------------------------------------------------------


def get_sigmas_karras(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """``n`` noise levels of Karras et al. 2022 (Eq. 5), followed by a final 0."""
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    min_inv, max_inv = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sigmas = (max_inv + ramp * (min_inv - max_inv)) ** rho
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def get_sigmas_flow(n: int, sigma_min: float, sigma_max: float, shift: float = 1.0) -> torch.Tensor:
    """``n`` noise levels uniform in flow time ``t = sigma / (1 + sigma)`` (optionally
    shifted towards high noise, ``t' = shift t / (1 + (shift - 1) t)``), then 0."""
    t_max, t_min = sigma_max / (1 + sigma_max), sigma_min / (1 + sigma_min)
    t = torch.linspace(t_max, t_min, n, dtype=torch.float64)
    t = shift * t / (1 + (shift - 1) * t)
    return torch.cat([t / (1 - t), t.new_zeros(1)])


def get_sigmas(config: DiffusionConfig, n: int, sigma_max: float | None = None) -> torch.Tensor:
    """The default schedule for an objective: Karras for EDM, uniform-in-t for flow."""
    sigma_max = config.sigma_max if sigma_max is None else sigma_max
    if config.objective == "flow":
        return get_sigmas_flow(n, config.sigma_min, sigma_max)
    return get_sigmas_karras(n, config.sigma_min, sigma_max, config.rho)


# --- per-sample randomness ----------------------------------------------------------------


class BatchedGenerator:
    """One ``torch.Generator`` per batch item, so sample ``i`` depends only on ``seeds[i]``.

    Noise is drawn on the CPU and moved to the target device, so the same seed gives the
    same noise on any device.
    """

    def __init__(self, seeds: Sequence[int]) -> None:
        self.generators = [torch.Generator().manual_seed(int(s) % 2**63) for s in seeds]

    def randn(self, shape: Sequence[int], dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> torch.Tensor:
        """Noise of shape (len(seeds), *shape[1:])."""
        return torch.stack([torch.randn(tuple(shape[1:]), generator=g, dtype=dtype) for g in self.generators]).to(device)

    def randn_like(self, x: torch.Tensor) -> torch.Tensor:
        return self.randn(x.shape, x.dtype, x.device)


# --- samplers ---------------------------------------------------------------------------


def to_d(x: torch.Tensor, sigma: torch.Tensor, denoised: torch.Tensor) -> torch.Tensor:
    """The probability-flow ODE derivative dx/dsigma (Karras et al. 2022, Eq. 3)."""
    return (x - denoised) / append_dims(sigma, x.ndim)


@torch.no_grad()
def sample_euler(model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, extra_args: dict | None = None,
                 callback: Callable | None = None, disable: bool | None = None) -> torch.Tensor:
    """Euler steps on the probability-flow ODE (= DDIM; = the Euler sampler of rectified flow)."""
    extra_args = extra_args or {}
    s_in = x.new_ones(x.shape[0])
    for i in progress_bar(range(len(sigmas) - 1), disable=disable, leave=False):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i], "denoised": denoised})
        x = x + to_d(x, sigmas[i] * s_in, denoised) * (sigmas[i + 1] - sigmas[i])
    return x


@torch.no_grad()
def sample_heun(model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, extra_args: dict | None = None,
                callback: Callable | None = None, disable: bool | None = None) -> torch.Tensor:
    """Heun's 2nd-order method (Algorithm 1 of Karras et al. 2022, deterministic)."""
    extra_args = extra_args or {}
    s_in = x.new_ones(x.shape[0])
    for i in progress_bar(range(len(sigmas) - 1), disable=disable, leave=False):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i], "denoised": denoised})
        d = to_d(x, sigmas[i] * s_in, denoised)
        dt = sigmas[i + 1] - sigmas[i]
        if sigmas[i + 1] == 0:
            x = x + d * dt  # Euler step to sigma = 0.
        else:
            x_2 = x + d * dt
            d_2 = to_d(x_2, sigmas[i + 1] * s_in, model(x_2, sigmas[i + 1] * s_in, **extra_args))
            x = x + (d + d_2) / 2 * dt  # Apply 2nd order correction.
    return x


@torch.no_grad()
def sample_dpmpp_2m(model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, extra_args: dict | None = None,
                    callback: Callable | None = None, disable: bool | None = None) -> torch.Tensor:
    """DPM-Solver++(2M), the multistep 2nd-order solver of Lu et al. 2022 (one evaluation per step)."""
    extra_args = extra_args or {}
    s_in = x.new_ones(x.shape[0])
    old_denoised = None
    for i in progress_bar(range(len(sigmas) - 1), disable=disable, leave=False):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i], "denoised": denoised})
        if sigmas[i + 1] == 0:
            x = denoised
            break
        t, t_next = -sigmas[i].log(), -sigmas[i + 1].log()
        h = t_next - t
        if old_denoised is None:
            denoised_d = denoised
        else:
            r = (t - (-sigmas[i - 1].log())) / h
            denoised_d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
        x = (sigmas[i + 1] / sigmas[i]) * x - (-h).expm1() * denoised_d
        old_denoised = denoised
    return x


@torch.no_grad()
def sample_ancestral(model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, extra_args: dict | None = None,
                     callback: Callable | None = None, disable: bool | None = None,
                     noise: BatchedGenerator | None = None, eta: float = 1.0) -> torch.Tensor:
    """Ancestral (stochastic, DDPM-like) sampling: the many-step reference sampler.

    Each step denoises, steps deterministically to ``sigma_down`` and re-injects fresh
    noise of size ``sigma_up`` (k-diffusion's ``sample_euler_ancestral``).
    """
    extra_args = extra_args or {}
    if noise is None:
        raise ValueError("sample_ancestral needs a BatchedGenerator (noise=...) for per-sample seeds")
    s_in = x.new_ones(x.shape[0])
    for i in progress_bar(range(len(sigmas) - 1), disable=disable, leave=False):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i], "denoised": denoised})
        s, s_next = sigmas[i], sigmas[i + 1]
        sigma_up = torch.minimum(s_next, eta * (s_next**2 * (s**2 - s_next**2) / s**2).sqrt()) if s_next > 0 else s_next
        sigma_down = (s_next**2 - sigma_up**2).sqrt()
        x = x + to_d(x, s * s_in, denoised) * (sigma_down - s)
        if s_next > 0:
            x = x + noise.randn_like(x) * sigma_up
    return x


SAMPLERS: dict[str, Callable] = {
    "euler": sample_euler,
    "heun": sample_heun,
    "dpmpp_2m": sample_dpmpp_2m,
    "ancestral": sample_ancestral,
}


def evaluations(sampler: str, steps: int) -> int:
    """Network evaluations of ``sampler`` with ``steps`` steps (no guidance)."""
    return 2 * steps - 1 if sampler == "heun" else steps


def sample(model: Denoiser, shape: Sequence[int], config: DiffusionConfig, seeds: Sequence[int], *,
           extra_args: dict | None = None, sampler: str | None = None, steps: int | None = None,
           sigma_max: float | None = None, dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu",
           callback: Callable | None = None, disable: bool | None = True) -> torch.Tensor:
    """Draw ``len(seeds)`` samples of ``shape`` (C, X, Y, Z) from pure noise at ``sigma_max``."""
    sampler = sampler or config.sampler
    steps = config.steps if steps is None else steps
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {sorted(SAMPLERS)}")
    if steps < 1:
        raise ValueError(f"steps={steps} must be >= 1")
    gen = BatchedGenerator(seeds)
    sigmas = get_sigmas(config, steps, sigma_max).to(device=device, dtype=dtype)
    x = gen.randn((len(seeds), *shape), dtype=dtype, device=device) * sigmas[0]
    kwargs = {"noise": gen} if sampler == "ancestral" else {}
    return SAMPLERS[sampler](model, x, sigmas, extra_args=extra_args, callback=callback, disable=disable, **kwargs)


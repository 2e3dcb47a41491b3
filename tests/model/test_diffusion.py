"""Samplers, schedules and objectives checked against a distribution with a closed form.

The data is a 1D Gaussian mixture (shaped (N, 1, 1, 1, 1) like a batch of volumes), for
which the ideal denoiser ``E[x0 | x0 + sigma eps]`` and the ideal flow velocity are
analytic, so every sampler can be checked numerically without training anything.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.special import ndtr

from synthaug.model.diffusion import (
    BatchedGenerator,
    DiffusionConfig,
    EDMPrecond,
    FlowPrecond,
    X0Precond,
    append_dims,
    cfg_denoiser,
    evaluations,
    get_sigmas_flow,
    get_sigmas_karras,
    sample,
    sample_ancestral,
    sample_dpmpp_2m,
    sample_euler,
    sample_heun,
    training_share_above,
)

# The target: a two-component Gaussian mixture.
W = torch.tensor([0.3, 0.7], dtype=torch.float64)
M = torch.tensor([-1.0, 0.8], dtype=torch.float64)
S = torch.tensor([0.3, 0.5], dtype=torch.float64)
MEAN = float((W * M).sum())
VAR = float((W * (S**2 + M**2)).sum()) - MEAN**2
SHAPE = (1, 1, 1, 1)  # (C, X, Y, Z) of one "volume"
N = 6000  # samples per sampler
# Tolerances: a few Monte Carlo standard errors for N samples (std error of the mean ~0.012,
# of the variance ~0.016, of the KS statistic ~0.011) plus a little discretisation bias.
MEAN_TOL, VAR_TOL, KS_TOL = 0.04, 0.07, 0.03


def ideal_denoiser(x: torch.Tensor, sigma: torch.Tensor, **_) -> torch.Tensor:
    """E[x0 | x0 + sigma * eps = x] for the mixture: responsibilities x per-component posteriors."""
    s = append_dims(sigma, x.ndim)[..., None]
    xx = x[..., None]
    v = S**2 + s**2
    r = torch.softmax(torch.log(W) - 0.5 * torch.log(v) - 0.5 * (xx - M) ** 2 / v, dim=-1)
    return (r * (M + S**2 / v * (xx - M))).sum(-1)


def mixture_cdf(x: torch.Tensor) -> torch.Tensor:
    return (W * ndtr((x[..., None] - M) / S)).sum(-1)


def ks_distance(x: torch.Tensor) -> float:
    """Kolmogorov-Smirnov distance between the samples and the mixture."""
    xs = x.flatten().double().sort().values
    n = xs.numel()
    cdf = mixture_cdf(xs)
    i = torch.arange(n, dtype=torch.float64)
    return float(torch.maximum((i + 1) / n - cdf, cdf - i / n).max())


def errors(x: torch.Tensor) -> tuple[float, float, float]:
    return abs(float(x.mean()) - MEAN), abs(float(x.var()) - VAR), ks_distance(x)


class SingleGenerator:
    """Cheap stand-in for BatchedGenerator when thousands of 1-voxel samples need fresh noise."""

    def __init__(self, seed: int) -> None:
        self.g = torch.Generator().manual_seed(seed)

    def randn_like(self, x: torch.Tensor) -> torch.Tensor:
        return torch.randn(x.shape, generator=self.g, dtype=x.dtype)


@pytest.fixture(scope="module")
def reference() -> dict:
    """Ancestral sampling with 1000 steps: the slow, many-step reference."""
    config = DiffusionConfig()
    sigmas = get_sigmas_karras(1000, config.sigma_min, config.sigma_max, config.rho)
    x = torch.randn((N, *SHAPE), generator=torch.Generator().manual_seed(123), dtype=torch.float64) * sigmas[0]
    x = sample_ancestral(ideal_denoiser, x, sigmas, noise=SingleGenerator(7), disable=True)
    return {"x": x, "errors": errors(x), "evaluations": evaluations("ancestral", 1000)}


def test_reference_ancestral_sampler_reproduces_the_mixture(reference):
    d_mean, d_var, ks = reference["errors"]
    assert d_mean < MEAN_TOL and d_var < VAR_TOL and ks < KS_TOL, reference["errors"]


@pytest.mark.parametrize(("sampler", "steps"), [("heun", 32), ("dpmpp_2m", 32), ("euler", 128)])
def test_deterministic_samplers_reach_the_reference_accuracy_with_fewer_evaluations(reference, sampler, steps):
    x = sample(ideal_denoiser, SHAPE, DiffusionConfig(), seeds=list(range(N)), sampler=sampler, steps=steps)
    assert x.shape == (N, *SHAPE) and x.dtype == torch.float64
    d_mean, d_var, ks = errors(x)
    ref_mean, ref_var, ref_ks = reference["errors"]
    assert d_mean < MEAN_TOL and d_var < VAR_TOL and ks < KS_TOL, (sampler, steps, (d_mean, d_var, ks))
    # As accurate as the reference up to Monte Carlo noise, for a fraction of the network evaluations.
    assert ks < ref_ks + 0.015 and d_var < ref_var + 0.04
    assert evaluations(sampler, steps) * 7 < reference["evaluations"]


def test_the_tolerances_resolve_discretisation_error():
    """Euler with as few evaluations as DPM-Solver++(2M) uses above is measurably off:
    the tolerances are tight enough to tell a first- from a second-order sampler."""
    x = sample(ideal_denoiser, SHAPE, DiffusionConfig(), seeds=list(range(N)), sampler="euler", steps=32)
    d_mean, d_var, ks = errors(x)
    assert d_var > VAR_TOL, (d_mean, d_var, ks)


def _gaussian_trajectory_error(sampler, steps: int) -> float:
    """Error at sigma = 0 of one probability-flow trajectory for Gaussian data N(m, s^2),
    whose exact solution is x(sigma) = m + (x_T - m) sqrt(s^2 + sigma^2) / sqrt(s^2 + sigma_T^2)."""
    m, s = 0.3, 0.8

    def denoiser(x, sigma, **_):
        sg = append_dims(sigma, x.ndim)
        return m + s**2 / (s**2 + sg**2) * (x - m)

    sigmas = get_sigmas_karras(steps, 0.002, 80.0, 7.0)
    x_t = torch.tensor([-40.0, 80.0], dtype=torch.float64).view(2, 1, 1, 1, 1)
    exact = m + (x_t - m) * s / math.sqrt(s**2 + 80.0**2)
    return float((sampler(denoiser, x_t.clone(), sigmas, disable=True) - exact).abs().max())


@pytest.mark.parametrize(("sampler", "order"), [(sample_euler, 1), (sample_heun, 2), (sample_dpmpp_2m, 2)])
def test_convergence_order(sampler, order):
    """Doubling the steps divides the error by about 2^order."""
    e1, e2, e3 = (_gaussian_trajectory_error(sampler, n) for n in (20, 40, 80))
    for coarse, fine in ((e1, e2), (e2, e3)):
        ratio = coarse / fine
        assert 2 ** order * 0.7 < ratio < 2 ** order * 1.4, (sampler.__name__, e1, e2, e3)


# --- flow matching ---------------------------------------------------------------------------------


class AnalyticVelocityNet(nn.Module):
    """A "network" for FlowPrecond that returns the ideal rectified-flow velocity of the mixture.

    It receives what FlowPrecond gives a network, ``(x_t / std(x_t), 1000 t, cond, concat)``,
    undoes the input scaling and returns ``E[eps - x0 | x_t] = (x_t - E[x0 | x_t]) / t``,
    computed directly in flow time (x_t = (1 - t) x0 + t eps), independently of the
    sigma-space denoiser above.
    """

    def __init__(self, sigma_data: float) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros((), dtype=torch.float64))  # FlowPrecond reads the dtype
        self.sigma_data = sigma_data
        self.calls = 0

    def forward(self, x_scaled, t1000, cond, concat=None):
        self.calls += 1
        t = append_dims(t1000 / 1000.0, x_scaled.ndim)
        x_t = x_scaled * ((1 - t) ** 2 * self.sigma_data**2 + t**2).sqrt()
        a, b, xx = (1 - t)[..., None], t[..., None], x_t[..., None]
        v = a**2 * S**2 + b**2  # Var(x_t | component)
        r = torch.softmax(torch.log(W) - 0.5 * torch.log(v) - 0.5 * (xx - a * M) ** 2 / v, dim=-1)
        x0 = (r * (M + a * S**2 / v * (xx - a * M))).sum(-1)
        return (x_t - x0) / t


def test_flow_objective_with_the_ideal_velocity_reproduces_the_mixture():
    config = DiffusionConfig(objective="flow", sampler="euler")
    net = AnalyticVelocityNet(config.sigma_data)
    model = FlowPrecond(net, config)
    # Through the sigma-space adapter, the flow model is the same ideal denoiser.
    x = torch.linspace(-3, 3, 13, dtype=torch.float64).view(13, 1, 1, 1, 1)
    for sigma in (0.05, 0.7, 4.0):
        sigmas = torch.full((13,), sigma, dtype=torch.float64)
        torch.testing.assert_close(model(x, sigmas, cond=None), ideal_denoiser(x, sigmas), rtol=1e-9, atol=1e-9)
    sigmas = get_sigmas_flow(64, config.sigma_min, config.sigma_max)
    t = sigmas / (1 + sigmas)
    assert torch.allclose(t[:-1].diff(), t[1] - t[0]) and sigmas[-1] == 0  # uniform in flow time, then 0
    net.calls = 0
    x = sample(model, SHAPE, config, seeds=list(range(N)), extra_args={"cond": torch.zeros(N, 1)}, steps=64)
    d_mean, d_var, ks = errors(x)
    assert d_mean < MEAN_TOL and d_var < VAR_TOL and ks < KS_TOL, (d_mean, d_var, ks)
    assert net.calls == 64


# --- clean-sample (x0) prediction ---------------------------------------------------------------


class AnalyticX0Net(nn.Module):
    """A "network" for X0Precond: undoes the input and noise scalings it is given and returns
    the ideal clean sample in units of sigma_data."""

    def __init__(self, sigma_data: float) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros((), dtype=torch.float64))
        self.sigma_data = sigma_data

    def forward(self, x_in, noise, cond, concat=None):
        sigma = torch.exp(4 * (noise / 250.0 - 2.0))  # inverse of EDM's c_noise mapping
        x = x_in * append_dims((sigma**2 + self.sigma_data**2).sqrt(), x_in.ndim)
        return ideal_denoiser(x, sigma) / self.sigma_data


def test_x0_objective_is_the_ideal_denoiser_and_samples_the_mixture():
    config = DiffusionConfig(objective="x0", sampler="dpmpp_2m")
    model = X0Precond(AnalyticX0Net(config.sigma_data), config)
    x = torch.linspace(-3, 3, 13, dtype=torch.float64).view(13, 1, 1, 1, 1)
    for sigma in (0.01, 0.7, 4.0):
        sigmas = torch.full((13,), sigma, dtype=torch.float64)
        torch.testing.assert_close(model(x, sigmas, cond=None), ideal_denoiser(x, sigmas), rtol=1e-9, atol=1e-9)
    x = sample(model, SHAPE, config, seeds=list(range(N)), extra_args={"cond": torch.zeros(N, 1)}, steps=32)
    d_mean, d_var, ks = errors(x)
    assert d_mean < MEAN_TOL and d_var < VAR_TOL and ks < KS_TOL, (d_mean, d_var, ks)


def test_x0_loss_weight_is_edm_weighting_capped_at_low_noise():
    config = DiffusionConfig(objective="x0")
    edm, x0 = EDMPrecond(nn.Identity(), config), X0Precond(nn.Identity(), config)
    sd, gamma = config.sigma_data, X0Precond.SNR_GAMMA
    sigma = torch.tensor([0.01, 0.1, 0.3, 1.0, 10.0], dtype=torch.float64)
    # Where 1 + SNR <= gamma (sigma >= sd / 2), the x0 error carries EDM's lambda exactly.
    high = sigma >= sd / 2
    torch.testing.assert_close(x0.loss_weight(sigma)[high], edm.loss_weight(sigma)[high])
    torch.testing.assert_close(x0.loss_weight(sigma)[~high], torch.full((int((~high).sum()),), gamma / sd**2, dtype=torch.float64))


class _RecordTimes(nn.Module):
    """A stand-in network that records the time input of every call and returns zeros."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))
        self.times: list[torch.Tensor] = []

    def forward(self, x, t, cond, concat=None):
        self.times.append(t.detach().double())
        return x * self.w


@pytest.mark.parametrize("objective,p_mean,p_std", [("edm", -1.2, 1.2), ("x0", 0.4, 1.6), ("flow", -1.2, 1.2)])
def test_training_share_above_matches_the_noise_levels_the_loss_draws(objective, p_mean, p_std):
    config = DiffusionConfig(objective=objective, p_mean=p_mean, p_std=p_std)
    net = _RecordTimes()
    precond = {"edm": EDMPrecond, "x0": X0Precond, "flow": FlowPrecond}[objective](net, config)
    precond.loss(torch.zeros(20000, 1), torch.zeros(20000, 1), generator=torch.Generator().manual_seed(0))
    t = net.times[0]
    # Back from the network's time input to sigma: EDM/x0 feed 250 (log(sigma) / 4 + 2), flow 1000 t.
    drawn = t / 1000 / (1 - t / 1000) if objective == "flow" else torch.exp(4 * (t / 250 - 2))
    for sigma in (0.05, 0.3, 1.0, 4.0, 30.0):
        empirical = float((drawn > sigma).double().mean())
        assert training_share_above(config, sigma) == pytest.approx(empirical, abs=0.01)
    assert training_share_above(config, 0.0) == 1.0


# --- schedules -----------------------------------------------------------------------------------------


def test_karras_schedule_endpoints_and_monotonicity():
    sigmas = get_sigmas_karras(12, 0.002, 80.0, 7.0)
    assert sigmas.shape == (13,) and sigmas.dtype == torch.float64
    assert math.isclose(float(sigmas[0]), 80.0) and math.isclose(float(sigmas[-2]), 0.002) and sigmas[-1] == 0
    assert bool((sigmas.diff() < 0).all())
    # Eq. 5: sigma^(1/rho) is linear in the step index.
    root = sigmas[:-1] ** (1 / 7)
    assert torch.allclose(root.diff(), root.diff()[0].expand(11))


# --- determinism -------------------------------------------------------------------------------------


@pytest.mark.parametrize("sampler", ["euler", "heun", "dpmpp_2m", "ancestral"])
def test_sample_is_reproducible_and_per_sample(sampler):
    config = DiffusionConfig()
    shape = (2, 3, 2, 2)
    kw = {"sampler": sampler, "steps": 8}
    a = sample(ideal_denoiser, shape, config, seeds=[1, 2], **kw)
    b = sample(ideal_denoiser, shape, config, seeds=[1, 2], **kw)
    assert torch.equal(a, b)
    alone = sample(ideal_denoiser, shape, config, seeds=[2], **kw)
    assert torch.equal(a[1], alone[0])  # sample i depends only on seeds[i]
    other = sample(ideal_denoiser, shape, config, seeds=[3], **kw)
    assert not torch.equal(other[0], alone[0])


def test_batched_generator_is_per_seed():
    a = BatchedGenerator([5, 6]).randn((2, 4, 3))
    b = BatchedGenerator([6]).randn((1, 4, 3))
    assert a.shape == (2, 4, 3) and torch.equal(a[1], b[0]) and not torch.equal(a[0], a[1])


def test_sample_rejects_bad_settings():
    with pytest.raises(ValueError, match="sampler"):
        sample(ideal_denoiser, SHAPE, DiffusionConfig(), seeds=[0], sampler="nope")
    with pytest.raises(ValueError, match="steps"):
        sample(ideal_denoiser, SHAPE, DiffusionConfig(), seeds=[0], steps=-1)
    with pytest.raises(ValueError, match="noise"):
        sample_ancestral(ideal_denoiser, torch.zeros(1, 1, 1, 1, 1), get_sigmas_karras(2, 0.1, 1.0))
    with pytest.raises(ValueError, match="objective"):
        DiffusionConfig(objective="ddpm")
    with pytest.raises(ValueError, match="sigma_min"):
        DiffusionConfig(sigma_min=1.0, sigma_max=0.5)


# --- classifier-free guidance ------------------------------------------------------------------------


def _conditional_model(x, sigma, cond, **extra):
    """A denoiser whose output depends on x, sigma, the condition and extra keywords."""
    return x * 0.5 + append_dims(sigma, x.ndim) + append_dims(cond.sum(1), x.ndim) * 2.0 + extra.get("offset", 0.0)


def test_cfg_denoiser_scale_one_is_the_model():
    assert cfg_denoiser(_conditional_model, 1.0) is _conditional_model


@pytest.mark.parametrize("batched", [False, True])
@pytest.mark.parametrize("scale", [0.0, 2.5])
def test_cfg_denoiser_combines_conditional_and_unconditional(scale, batched):
    x = torch.randn(3, 2, 2, 2, 2, generator=torch.Generator().manual_seed(0))
    sigma = torch.tensor([0.5, 1.0, 2.0])
    cond = torch.tensor([[1.0, 2.0], [0.5, 0.0], [-1.0, 3.0]])
    calls = []

    def model(x, sigma, cond, **extra):
        calls.append(x.shape[0])
        return _conditional_model(x, sigma, cond, **extra)

    guided = cfg_denoiser(model, scale, batched=batched)
    d_c = _conditional_model(x, sigma, cond, offset=0.25)
    d_u = _conditional_model(x, sigma, torch.zeros_like(cond), offset=0.25)  # default: every field unknown
    torch.testing.assert_close(guided(x, sigma, cond=cond, offset=0.25), d_u + scale * (d_c - d_u))
    assert calls == ([6] if batched else [3, 3])  # batched: one call with both halves
    uncond = torch.tensor([[0.3, -0.1]])
    d_u2 = _conditional_model(x, sigma, uncond.expand_as(cond))
    torch.testing.assert_close(cfg_denoiser(_conditional_model, scale, uncond, batched=batched)(x, sigma, cond=cond),
                               d_u2 + scale * (_conditional_model(x, sigma, cond) - d_u2))


def test_sample_rejects_zero_steps():
    """steps=0 used to fall back silently to the config's default."""
    from synthaug.model.diffusion import DiffusionConfig, sample

    with pytest.raises(ValueError, match="steps"):
        sample(lambda x, s, **k: x * 0, (1, 2, 2, 2), DiffusionConfig(), [0], steps=0)

"""How well the global-stage denoiser removes noise, noise level by noise level.

For held-out phantom cases (made here, seed 77, resampled to the global grid exactly as
in training) and a range of noise levels sigma, ``D(x0 + sigma * eps, sigma)`` is
compared with ``x0``. Reported per weights folder (each ``--weights``, so objectives and
training steps compare side by side) and per channel group (CT, PET, organ channels,
lesion channel):

* ``mse``: mean squared error of the denoised estimate, in encoded units;
* ``ratio``: ``mse / sigma^2`` — 1 means the denoiser leaves the noise as it came, 0 a
  perfect denoiser. Above 1 the estimate is worse than the noisy input.
* ``dice``: mean Dice of the organ labels decoded from the estimate (argmax of the organ
  channels) against the true ones, over the organ classes present: how much of the
  anatomy the denoiser recovers at that level;
* ``lesion_value``: the estimate's mean lesion channel inside the true lesions (+1 = the
  lesion recovered, -1 = erased; None without lesions): a lesion is a few voxels per
  case, too few to move any mean error.

Beside them, per weights folder: the share of training examples drawn above each level
and the share of the default sampler's steps taken there. A sampler's last steps rely
on the low noise levels; a denoiser that keeps most of the noise there leaves noise in
every sample (the EDM-trained demo network did). Its first steps, from ``sigma_max``,
place the anatomy; levels that training rarely draws are untrained there.
"""

from __future__ import annotations

import numpy as np

from synthaug.model.channels import CT_CHANNEL, LESION_CHANNEL, NUM_CHANNELS, ORGAN_CHANNELS, PET_CHANNEL

from .common import Context, has_stage, heldout_global_cases, weights_info

NAME = "denoiser"
TITLE = "Global-stage denoising error by noise level"
SIGMAS = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 80.0)
GROUPS = {"ct": slice(CT_CHANNEL, CT_CHANNEL + 1), "pet": slice(PET_CHANNEL, PET_CHANNEL + 1), "organs": ORGAN_CHANNELS,
          "lesion": slice(LESION_CHANNEL, LESION_CHANNEL + 1), "all": slice(0, NUM_CHANNELS)}


def schedule_shares(config, sigmas=SIGMAS) -> dict:
    """Per level: the share of training examples drawn above it and of the default
    sampler's steps (network evaluations) taken above it."""
    from synthaug.model.diffusion import get_sigmas, training_share_above

    steps = get_sigmas(config, config.steps)[:-1]
    return {"train_above": [training_share_above(config, s) for s in sigmas],
            "sampler_above": [float((steps > s).float().mean()) for s in sigmas],
            "p_mean": config.p_mean, "p_std": config.p_std, "sampler": config.sampler, "steps": config.steps}


def organ_dice(estimate, x0) -> float:
    """Mean Dice, over the organ classes present in ``x0``, of the argmax-decoded organ
    channels of ``estimate`` against those of ``x0`` (both (B, C, ...) encoded)."""
    pred = estimate[:, ORGAN_CHANNELS].argmax(1)
    true = x0[:, ORGAN_CHANNELS].argmax(1)
    scores = []
    for c in range(ORGAN_CHANNELS.stop - ORGAN_CHANNELS.start):
        a, b = pred == c, true == c
        if int(b.sum()):
            scores.append(2 * float((a & b).sum()) / float(a.sum() + b.sum()))
    return float(np.mean(scores)) if scores else float("nan")


def denoising_errors(model, x0, cond, sigmas=SIGMAS, seed: int = 0) -> dict:
    """``{group: {"mse": [...], "ratio": [...]}, "dice": [...], "lesion_value": [...]}`` over ``sigmas`` for
    encoded cases ``x0`` (B, C, ...)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    out: dict = {g: {"mse": [], "ratio": []} for g in GROUPS}
    out["dice"] = []
    out["lesion_value"] = []
    lesions = x0[:, LESION_CHANNEL] > 0
    for s in sigmas:
        eps = torch.randn(x0.shape, generator=gen, dtype=x0.dtype)
        with torch.no_grad():
            d = model(x0 + s * eps, torch.full((x0.shape[0],), s, dtype=x0.dtype), cond)
        err = (d - x0).pow(2)
        out["dice"].append(organ_dice(d, x0))
        out["lesion_value"].append(float(d[:, LESION_CHANNEL][lesions].mean()) if lesions.any() else None)
        for g, sl in GROUPS.items():
            mse = float(err[:, sl].mean())
            out[g]["mse"].append(mse)
            out[g]["ratio"].append(mse / s**2)
    return out


def run(ctx: Context) -> dict:
    import torch

    from synthaug.model.stages import load_stage

    folders = [f for f in ctx.weights if has_stage(f, "global")]
    if not folders:
        return {"skipped": "needs global-stage weights (--weights DIR)"}
    n = 2 if ctx.quick else 4
    rows = []
    cases = None
    for folder in folders:
        model, cfg, raw = load_stage(folder / "global")
        if cases is None:
            demos, cases = heldout_global_cases(cfg, n)
            cond = torch.from_numpy(np.stack([d.to_vector() for d in demos]))
        rows.append({"weights": weights_info(folder), "objective": cfg.diffusion.objective,
                     "step": (raw.get("info") or {}).get("step"), "errors": denoising_errors(model, cases, cond),
                     "schedule": schedule_shares(cfg.diffusion)})
    return {"sigmas": list(SIGMAS), "cases": n, "rows": rows}

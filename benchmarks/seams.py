"""Seams of the patch-wise SR stage: intensity gradients across patch borders vs the interior.

The SR stage samples the whole output volume as overlapping patches blended with a
cosine window. A seam would show as a jump in intensity where a patch starts or ends.
For every axis on which patches split the volume, the mean absolute difference between
neighbouring voxel planes (``|v[k] - v[k-1]|``, inside the body on both sides) is taken
at every patch border plane and compared with:

* the **local interior**: planes 2-6 voxels away from the border (same anatomy), the
  primary ratio (should be within 10 % of 1);
* all interior planes (global ratio; mixes anatomy, for reference);
* the overlap zones as a whole (averaging two patches may smooth detail there).

CT (HU) and PET (SUV) are measured after decoding (the tolerance applies to these), and
the patch-wise part alone, the residual over the globally upsampled low-res volume
(encoded units), is measured too: it is where a seam would live. A control run with overlap 0 (plain
tiling, no blending) shows what a real seam looks like to the same metric; a control
without the SR stage (the interpolated low-res volume, same planes) shows how far from 1
the anatomy at those planes puts the ratio by itself.
"""

from __future__ import annotations

import numpy as np

from .common import Context, has_stage, phantom_lowres, weights_info

NAME = "seams"
TITLE = "Seams at SR patch borders"
TOLERANCE = 0.10
LOCAL = (2, 6)


def plane_gradients(volume: np.ndarray, mask: np.ndarray, axis: int) -> np.ndarray:
    """Mean |v[k] - v[k-1]| over voxels inside ``mask`` on both sides, for planes k = 1..n-1 (index k-1)."""
    v = np.moveaxis(volume.astype(np.float64), axis, 0)
    m = np.moveaxis(mask, axis, 0)
    both = m[1:] & m[:-1]
    diff = np.abs(v[1:] - v[:-1]) * both
    count = both.reshape(both.shape[0], -1).sum(1)
    total = diff.reshape(diff.shape[0], -1).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def border_planes(n: int, patch: int, overlap: int) -> tuple[list[int], list[tuple[int, int]]]:
    """Plane indices k (gradient between k-1 and k) where a patch starts or ends inside the
    volume, and the overlap zones ``[start, stop)`` between neighbouring patches."""
    from synthaug.model.stages import patch_starts

    starts = patch_starts(n, patch, overlap)
    borders = sorted({s for s in starts if s > 0} | {s + patch for s in starts if s + patch < n})
    zones = [(b, a + patch) for a, b in zip(starts[:-1], starts[1:]) if b < a + patch]
    return borders, zones


def seam_metric(volume: np.ndarray, mask: np.ndarray, patch, overlap: int) -> dict:
    """Border/interior gradient ratios per split axis (see the module docstring)."""
    out = {}
    for axis, (n, p) in enumerate(zip(volume.shape, patch)):
        borders, zones = border_planes(n, p, overlap)
        if not borders:
            continue
        g = plane_gradients(volume, mask, axis)  # g[k - 1] is plane k
        plane = {k: g[k - 1] for k in range(1, n)}
        near = {k for b in borders for k in range(b - 1, b + 2)}
        local = sorted({k for b in borders for d in range(LOCAL[0], LOCAL[1] + 1) for k in (b - d, b + d)
                        if 1 <= k < n and k not in near})
        interior = [k for k in range(1, n) if k not in near]
        in_zone = [k for k in range(1, n) if any(a < k < b for a, b in zones) and k not in near]
        outside = [k for k in interior if k not in in_zone]

        b, loc, inner = _mean(plane, borders), _mean(plane, local), _mean(plane, interior)
        out[f"axis_{axis}"] = {
            "border_planes": borders, "border": b, "local_interior": loc, "interior": inner,
            "ratio_local": b / loc, "ratio_global": b / inner,
            "overlap_zone_ratio": _mean(plane, in_zone) / _mean(plane, outside) if in_zone and outside else None,
        }
    return out


def _mean(plane: dict[int, float], ks) -> float:
    vals = np.array([plane[k] for k in ks if k in plane])
    vals = vals[np.isfinite(vals)]
    return float(vals.mean()) if vals.size else float("nan")


def _summarise(metric: dict) -> dict:
    ratios = [a["ratio_local"] for a in metric.values()]
    worst = max(ratios, key=lambda r: abs(r - 1)) if ratios else None
    return {"worst_ratio_local": worst, "within_tolerance": None if worst is None else bool(abs(worst - 1) <= TOLERANCE)}


def _setup(ctx: Context):
    """The cascade (trained, or random SR weights) and a low-res input for it."""
    import torch

    from synthaug.core.demographics import Demographics
    from synthaug.model.stages import build_stage_model, default_stage_config
    from synthaug.sampling.cascade import CascadedSampler

    demo = Demographics(55, "F", 165, 70)
    folder = ctx.main_weights
    if has_stage(folder, "global") and has_stage(folder, "sr"):
        sampler = CascadedSampler.from_pretrained(folder)
        lowres = sampler.sample_global([demo], [7])
        return sampler, lowres, demo, {"weights": weights_info(folder), "random_weights": False,
                                       "lowres": "global stage sample"}
    torch.manual_seed(0)
    g_cfg, s_cfg = default_stage_config("global"), default_stage_config("sr")
    sampler = CascadedSampler(None, g_cfg, build_stage_model(s_cfg).eval(), s_cfg, sha256="random")
    lowres, _ = phantom_lowres(s_cfg, demo, 7)
    return sampler, lowres, demo, {"weights": weights_info(folder), "random_weights": True,
                                   "lowres": "phantom resampled to the global grid",
                                   "note": "no trained SR weights; random SR weights"}


def _runs(sampler, lowres, demo, patch, overlap) -> dict:
    """The seam metrics of one low-res input at the default overlap and at overlap 0 (control)."""
    from synthaug.model.channels import CT_CHANNEL, PET_CHANNEL, decode
    from synthaug.model.stages import upsample

    runs = {}
    for label, ov in (("default", overlap), ("control_overlap_0", 0)):
        sampler.configure(overlap=ov)
        x = sampler.sample_sr(lowres, [demo], [7])
        arrays = decode(x[0])
        body = arrays["organs"] > 0
        metrics = {"ct": seam_metric(arrays["ct"], body, patch, ov), "pet": seam_metric(arrays["pet"], body, patch, ov)}
        # The patch-wise part alone: the residual over the (globally computed) upsampled low-res volume.
        residual = (x - upsample(lowres.float(), x.shape[2:], sampler.sr_config.upsample))[0].numpy()
        for name, ch in (("ct_residual", CT_CHANNEL), ("pet_residual", PET_CHANNEL)):
            metrics[name] = seam_metric(residual[ch], body, patch, ov)
        runs[label] = {"overlap": ov, "metrics": metrics,
                       "summary": {k: _summarise(v) for k, v in metrics.items()}}
    sampler.configure(overlap=overlap)
    # Control without any SR stage: the interpolated low-res volume at the same border planes. A ratio away
    # from 1 here comes from the anatomy that happens to lie at those planes, not from patching.
    up = upsample(lowres.float(), x.shape[2:], sampler.sr_config.upsample)[0]
    arrays = decode(up)
    body = arrays["organs"] > 0
    metrics = {"ct": seam_metric(arrays["ct"], body, patch, overlap), "pet": seam_metric(arrays["pet"], body, patch, overlap)}
    runs["control_no_sr"] = {"overlap": overlap, "metrics": metrics, "summary": {k: _summarise(v) for k, v in metrics.items()}}
    return runs


def _passed(runs: dict) -> bool:
    return all(s["within_tolerance"] for k, s in runs["default"]["summary"].items()
               if k in ("ct", "pet") and s["within_tolerance"] is not None)


def run(ctx: Context) -> dict:
    sampler, lowres, demo, info = _setup(ctx)
    if ctx.quick:
        sampler.configure(sr_steps=1)
    patch, overlap = sampler.patch_size, sampler.overlap
    shipped_patch = list(patch)
    out_shape = sampler.sr_config.output_grid.shape
    if all(p >= n for p, n in zip(patch, out_shape)):
        # One patch covers the volume (the demo default): no borders there; measure the patching that
        # larger grids need, with a quarter of the volume along z per patch.
        patch = (*out_shape[:2], out_shape[2] // 4)
        sampler.configure(patch_size=patch)
    runs = _runs(sampler, lowres, demo, patch, overlap)
    out = {**info, "settings": sampler.settings, "patch": list(patch), "shipped_patch": shipped_patch, "tolerance": TOLERANCE,
           "local_planes": list(LOCAL), "runs": runs, "passed": _passed(runs)}
    if not info["random_weights"]:
        # Trained weights: also an in-distribution input (the phantom resampled to the global grid as
        # in training), so that the verdict does not hinge on how good stage 1 is.
        lowres_p, _ = phantom_lowres(sampler.sr_config, demo, 7)
        out["phantom_input_runs"] = _runs(sampler, lowres_p, demo, patch, overlap)
        out["passed_phantom_input"] = _passed(out["phantom_input_runs"])
    return out

"""Organ volumes in global-stage samples, weights folder by weights folder.

The denoiser benchmark shows what a network recovers from a noised true case; this one
shows what the sampler makes from pure noise, where the network must also place the
anatomy itself. For each ``--weights`` folder, stage 1 is sampled with its default
settings for the demographics of a few phantom cases (made here, seed 77, not in any
training cohort) and each decoded organ label is compared with the phantom of the same
demographics on the global grid:

* ``present``: share of samples in which the organ has at least one voxel;
* ``volume_ratio``: median over samples of (sample volume / phantom volume);
* ``label_range``: the largest value of the organ's channel anywhere in the sample (as
  generated, before the labels are hardened), median over samples: a trained model gives
  about +1 inside an organ; values below 0 mean the organ never wins the argmax without an
  offset (``label_bias``: the decoded labels use the stage's calibrated offsets);
* ``suv_ratio``: median over samples of (SUVmean inside the sample's organ label /
  SUVmean inside the phantom's), where both have the organ: stage 1's uptake levels,
  before the SR stage and its upsampling touch them.

Lesions the same way (``lesion_stats``): the share of samples with any lesion voxel, the
mean number of lesions (connected components) and lesion voxels per sample, beside the
phantoms' (on the global grid resampled as the stage was trained).

Samples and phantoms are different people's anatomy, so a ratio is not expected to be 1
case by case; a median ratio far from 1 or an organ missing from most samples is what
this benchmark is for.
"""

from __future__ import annotations

import numpy as np

from .common import Context, has_stage, heldout_global_cases, weights_info

NAME = "global_samples"
TITLE = "Organ volumes in global-stage samples"


def organ_volume_stats(samples, references, raw=None) -> dict:
    """Per organ (1..11) ``present``, median ``volume_ratio``, ``label_range`` and ``suv_ratio`` of
    encoded ``samples`` against encoded ``references`` (both (B, C, ...), same grid);
    ``label_range`` from ``raw`` (the samples' label channels as generated) if given."""
    from synthaug.core.labels import ORGAN_LABELS
    from synthaug.model.channels import ORGAN_CHANNELS, PET_CHANNEL, channel_to_pet

    s_lab = samples[:, ORGAN_CHANNELS].argmax(1)
    r_lab = references[:, ORGAN_CHANNELS].argmax(1)
    s_suv = channel_to_pet(samples[:, PET_CHANNEL].double())
    r_suv = channel_to_pet(references[:, PET_CHANNEL].double())
    out = {}
    for c in (k for k in ORGAN_LABELS if k != 0):
        vs = (s_lab == c).flatten(1).sum(1).double()
        vr = (r_lab == c).flatten(1).sum(1).double()
        ratios = [float(a / b) for a, b in zip(vs, vr) if b > 0]
        peak = (samples if raw is None else raw)[:, ORGAN_CHANNELS.start + c].flatten(1).amax(1)
        suv = [float(s_suv[i][s_lab[i] == c].mean() / r_suv[i][r_lab[i] == c].mean())
               for i in range(len(samples)) if vs[i] > 0 and vr[i] > 0]
        out[ORGAN_LABELS[c]] = {"present": float((vs > 0).double().mean()),
                                "volume_ratio": float(np.median(ratios)) if ratios else None,
                                "label_range": float(np.median(peak.double().numpy())),
                                "suv_ratio": float(np.median(suv)) if suv else None}
    return out


def lesion_stats(samples, references, raw=None) -> dict:
    """Lesions in encoded ``samples`` vs ``references`` (both (B, C, ...)): share of samples with
    any, mean lesions (connected components) and mean voxels per sample, each side; with ``raw``
    (the samples as generated) also ``label_range``, the median over samples of the lesion
    channel's largest value (below 0: no lesion without an offset)."""
    from scipy.ndimage import label

    from synthaug.model.channels import LESION_CHANNEL

    def side(x) -> dict:
        masks = (x[:, LESION_CHANNEL] > 0).numpy()
        return {"with_lesions": float(np.mean([m.any() for m in masks])),
                "lesions_per_case": float(np.mean([label(m)[1] for m in masks])),
                "voxels_per_case": float(masks.reshape(len(masks), -1).sum(1).mean())}

    out = {"samples": side(samples), "references": side(references)}
    if raw is not None:
        out["label_range"] = float(np.median(raw[:, LESION_CHANNEL].flatten(1).amax(1).double().numpy()))
    return out


def run(ctx: Context) -> dict:
    from synthaug.model.channels import harden_labels
    from synthaug.sampling.cascade import CascadedSampler

    folders = [f for f in ctx.weights if has_stage(f, "global")]
    if not folders:
        return {"skipped": "needs global-stage weights (--weights DIR)"}
    n = 2 if ctx.quick else 6
    refs = None
    rows = []
    for folder in folders:
        sampler = CascadedSampler.from_pretrained(folder, stages="global")
        if refs is None:
            cfg = sampler.global_config
            demos, refs = heldout_global_cases(cfg, n)
        raw = sampler.sample_global(demos, list(range(n)), soft_labels=True)
        x = harden_labels(raw, sampler.global_config.calibration.label_bias)
        s = sampler.settings
        info = weights_info(folder)
        rows.append({"weights": info, "step": info["global"]["step"],
                     "objective": sampler.global_config.diffusion.objective,
                     "p_mean": sampler.global_config.diffusion.p_mean, "p_std": sampler.global_config.diffusion.p_std,
                     "sampler": s["sampler"], "steps": s["steps"], "calibrated": bool(sampler.global_config.calibration.label_bias),
                     "organs": organ_volume_stats(x, refs, raw),
                     "lesions": lesion_stats(x, refs, raw)})
    return {"cases": n, "rows": rows}

"""Label calibration: per-class offsets that make a stage's labels as large as its training data's.

A briefly trained stage decides small or thin classes (aorta, spleen, kidneys, the
lesion channel) by argmax over label channels that it generates a little too low, so
they come out too small or not at all, while a neighbour grows. Adding a constant offset
per class before the argmax (``StageConfig.label_bias``, applied by
:func:`synthaug.channels.harden_labels`) moves the borders without retraining. The
offsets are fitted on the stage's own samples, generated for the demographics of
training cases, against those same training cases' label volumes on the stage's grid:
training data only, so a held-out cohort stays held out.

The fit is a fixed-point iteration, ``b_c += rate * log(target_c / count_c)``, with
every offset kept within ``max_abs``. A voxel whose best channel leads the runner-up by
at least ``2 * max_abs`` cannot change class under any admissible offsets, so only the
others are kept (:func:`compact`), which keeps full-resolution samples small.

``synthaug calibrate`` (:func:`calibrate`) runs the whole procedure on a weights folder:
the global stage first, then the SR stage on the calibrated stage 1.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .channels import LABEL_BIAS_SIZE, LESION_CHANNEL, ORGAN_CHANNELS
from .io import atomic_path, atomic_write_json
from .labels import NUM_ORGAN_CLASSES, ORGAN_LABELS

#: Sample i of a calibration uses seed SEED0 + i (apart from the seeds evaluations use, 0..n-1).
SEED0 = 50_000
#: Row names of the calibration table: the organ classes, then the lesion channel.
CLASS_NAMES = tuple(ORGAN_LABELS[c] for c in range(NUM_ORGAN_CLASSES)) + ("lesion",)


@dataclass
class CompactLabels:
    """The label channels of generated samples, reduced to what offsets within ``max_abs`` can change."""

    fixed: np.ndarray          # (NUM_ORGAN_CLASSES,) voxels whose class no admissible offset changes, summed
    free: np.ndarray           # (V, NUM_ORGAN_CLASSES) organ channels of the other voxels
    lesion: np.ndarray         # (W,) lesion-channel values within 2 * max_abs of the threshold
    lesion_fixed: int          # voxels with lesion channel >= 2 * max_abs
    cases: int
    max_abs: float


def compact(x: np.ndarray, max_abs: float) -> CompactLabels:
    """Reduce one sample ((NUM_CHANNELS, ...) encoded channels, label channels as generated)."""
    if not max_abs > 0:
        raise ValueError(f"max_abs={max_abs} must be > 0")
    x = np.asarray(x)
    organs = x[ORGAN_CHANNELS].reshape(NUM_ORGAN_CLASSES, -1).T.astype(np.float32)
    top2 = np.partition(organs, NUM_ORGAN_CLASSES - 2, axis=1)[:, -2:]
    sure = top2[:, 1] - top2[:, 0] >= 2 * max_abs
    les = x[LESION_CHANNEL].ravel().astype(np.float32)
    return CompactLabels(fixed=np.bincount(organs[sure].argmax(1), minlength=NUM_ORGAN_CLASSES),
                         free=organs[~sure], lesion=les[np.abs(les) < 2 * max_abs],
                         lesion_fixed=int((les >= 2 * max_abs).sum()), cases=1, max_abs=float(max_abs))


def merge(parts: Iterable[CompactLabels]) -> CompactLabels:
    """One :class:`CompactLabels` of several (all reduced with the same ``max_abs``)."""
    parts = list(parts)
    if not parts:
        raise ValueError("no samples to calibrate on")
    if len({p.max_abs for p in parts}) > 1:
        raise ValueError(f"samples were reduced with different max_abs: {sorted({p.max_abs for p in parts})}")
    return CompactLabels(fixed=np.sum([p.fixed for p in parts], axis=0), free=np.concatenate([p.free for p in parts]),
                         lesion=np.concatenate([p.lesion for p in parts]),
                         lesion_fixed=sum(p.lesion_fixed for p in parts), cases=sum(p.cases for p in parts),
                         max_abs=parts[0].max_abs)


def save_compact(path, data: CompactLabels) -> None:
    """Write a reduced sample as ``.npz`` (plain arrays, read back without pickle)."""
    np.savez(path, fixed=data.fixed, free=data.free, lesion=data.lesion,
             scalars=np.array([data.lesion_fixed, data.cases, data.max_abs], dtype=np.float64))


def load_compact(path) -> CompactLabels:
    """Read a reduced sample written by :func:`save_compact`."""
    with np.load(path, allow_pickle=False) as z:
        lesion_fixed, cases, max_abs = z["scalars"]
        return CompactLabels(z["fixed"], z["free"], z["lesion"], int(lesion_fixed), int(cases), float(max_abs))


def mean_counts(data: CompactLabels, bias: np.ndarray) -> np.ndarray:
    """Mean voxels per case of each organ class and of lesion under ``bias`` (LABEL_BIAS_SIZE,)."""
    organs = data.fixed + np.bincount((data.free + bias[:NUM_ORGAN_CLASSES]).argmax(1), minlength=NUM_ORGAN_CLASSES)
    lesion = data.lesion_fixed + int((data.lesion + bias[NUM_ORGAN_CLASSES] > 0).sum())
    return np.append(organs, lesion) / data.cases


def fit_label_bias(data: CompactLabels, target: np.ndarray, *, fit_lesion: bool = False, iterations: int = 400,
                   rate: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Offsets (LABEL_BIAS_SIZE,) whose mean counts match ``target`` (LABEL_BIAS_SIZE,: mean voxels per
    case per organ class, then lesion); returns ``(bias, counts)``. The background's offset stays 0
    (only differences matter); the lesion's stays 0 unless ``fit_lesion``."""
    target = np.asarray(target, dtype=np.float64)
    if target.shape != (LABEL_BIAS_SIZE,) or np.any(target < 0):
        raise ValueError(f"target needs {LABEL_BIAS_SIZE} non-negative mean counts, got shape {target.shape}")
    fit = np.ones(LABEL_BIAS_SIZE, bool)
    fit[0] = False
    fit[NUM_ORGAN_CLASSES] = fit_lesion
    bias = np.zeros(LABEL_BIAS_SIZE)
    best, best_err = bias.copy(), np.inf
    for _ in range(iterations):
        counts = mean_counts(data, bias)
        # Summed, not the largest: a class no offset within max_abs can reach must not freeze the others.
        err = np.square(np.log((counts[fit] + 1) / (target[fit] + 1))).sum()
        if err < best_err:
            best, best_err = bias.copy(), err
        bias = np.where(fit, np.clip(bias + rate * np.log((target + 1) / (counts + 1)), -data.max_abs, data.max_abs), 0.0)
    return best, mean_counts(data, best)


# --- the procedure on a weights folder -----------------------------------------------------------


def training_counts(data: str | Path, cases: int, config, cache: str | Path | None = None) -> np.ndarray:
    """Mean voxels per case of each organ class and of lesion in training cases ``0..cases-1``,
    on the stage's grid (resampled as the stage was trained: ``config.lesion_rule``).

    With ``cache`` (e.g. the training run's), the whole cohort's preprocessing cache there is
    used or built; without, only those cases are resampled (no cache written)."""
    from .io import Cohort
    from .preprocess import preprocess_cohort, to_grid

    if cache is not None:
        arrays = preprocess_cohort(data, config.grid, cache, lesion_rule=config.lesion_rule)
        organs, lesions = arrays.organs, arrays.lesions
    else:
        cohort = Cohort(data)
        resampled = [to_grid(cohort.load(cohort.case_ids[i]), config.grid, lesion_rule=config.lesion_rule)
                     for i in range(cases)]
        organs = [np.zeros(config.grid.shape, np.uint8) if c.organs is None else c.organs for c in resampled]
        lesions = [np.zeros(config.grid.shape, np.uint8) if c.lesions is None else c.lesions for c in resampled]
    counts = [np.append(np.bincount(np.asarray(organs[i]).ravel(), minlength=NUM_ORGAN_CLASSES),
                        int(np.asarray(lesions[i]).sum())) for i in range(cases)]
    return np.mean(counts, axis=0)


def _reduced_samples(sampler, stage: str, cohort, indices: list[int], work: Path, max_abs: float,
                     progress: bool) -> None:
    """Sample the stage (label offsets being fitted switched off) for cases ``indices``; one ``.npz`` each."""
    for i in tqdm(indices, desc=f"calibration samples ({stage})", disable=not progress):
        path = work / f"{i:05d}.npz"
        if path.exists():
            continue
        demo, seed = [cohort.demographics[cohort.case_ids[i]]], [SEED0 + i]
        if stage == "global":
            x = sampler.sample_global(demo, seed, soft_labels=True)
        else:
            x = sampler.sample_sr(sampler.sample_global(demo, seed), demo, seed, soft_labels=True)
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            save_compact(fh, compact(x[0].float().cpu().numpy(), max_abs))


def calibrate(weights: str | Path, stage: str, data: str | Path, work: str | Path, *, cases: int = 40,
              max_abs: float = 0.5, shard: tuple[int, int] = (0, 1), fit_lesion: bool = False, write: bool = False,
              cache: str | Path | None = None, progress: bool = True) -> dict | None:
    """Fit ``stage``'s label offsets of the weights in ``weights`` on samples for the demographics of
    training cases ``0..cases-1`` of ``data`` (kept in ``work``, resumable). With ``shard=(i, n)``,
    n > 1, only samples cases ``i, i + n, ...`` and returns ``None``; else returns the fit
    (``label_bias``, per-class ``mean_voxels``) and, with ``write``, stores it in ``weights/<stage>.json``."""
    from .cascade import CascadedSampler
    from .io import Cohort

    if stage not in ("global", "sr"):
        raise ValueError(f"stage={stage!r}; choose 'global' or 'sr'")
    if not max_abs > 0:
        raise ValueError(f"max_abs={max_abs} must be > 0")
    stages, attr = ("global", "global_config") if stage == "global" else ("cascade", "sr_config")
    sampler = CascadedSampler.from_pretrained(weights, stages=stages)
    cohort = Cohort(data)
    if not 1 <= cases <= len(cohort):
        raise ValueError(f"cases={cases}: the training cohort {data} has {len(cohort)}")
    config = getattr(sampler, attr)
    setattr(sampler, attr, replace(config, label_bias=()))  # sample without the offsets being fitted
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    _reduced_samples(sampler, stage, cohort, list(range(shard[0], cases, shard[1])), work, max_abs, progress)
    if shard[1] > 1:
        return None
    samples = merge(load_compact(work / f"{i:05d}.npz") for i in range(cases))
    if samples.max_abs != max_abs:
        raise ValueError(f"{work} holds samples reduced with max_abs {samples.max_abs}, not {max_abs}: use another folder")
    target = training_counts(data, cases, config, cache)
    before = mean_counts(samples, np.zeros(LABEL_BIAS_SIZE))
    bias, after = fit_label_bias(samples, target, fit_lesion=fit_lesion)
    result = {"label_bias": [round(float(b), 4) for b in bias],
              "label_calibration": {
                  "data": str(data), "cases": cases, "seeds": f"{SEED0} + case index", "max_abs": max_abs,
                  "mean_voxels": {n: {"training": round(float(t), 1), "uncalibrated": round(float(b), 1),
                                      "calibrated": round(float(a), 1)}
                                  for n, t, b, a in zip(CLASS_NAMES, target, before, after)}}}
    if write:
        path = Path(weights) / f"{stage}.json"
        raw = json.loads(path.read_text())
        atomic_write_json(path, {**raw, **result})
        try:
            CascadedSampler.from_pretrained(weights, stages=stages)
        except Exception:
            atomic_write_json(path, raw)  # never leave a config that does not load
            raise
    return result

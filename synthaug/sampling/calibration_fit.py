"""The fitting steps of the label calibration (:mod:`synthaug.sampling.calibration`, whose docstring
tells the whole procedure): samples reduced to what admissible offsets can change (:func:`compact`),
with where their voxels lie (:func:`label_map`), then per class the label offsets (:func:`fit_label_bias`;
on cleaned organ maps :func:`fit_label_bias_cleaned`), the CT shift and PET gain
(:func:`fit_intensities`) and the spread of the organs' levels (:func:`fit_level_spread`,
:func:`level_spread_fit`).

Arrays in, arrays out: sampling the stage, reading the training cohort and the files are
:mod:`synthaug.sampling.calibration`'s.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from ..core.labels import NUM_ORGAN_CLASSES, ORGAN_LABELS, clean_organ_map
from ..model.channels import (
    CT_CHANNEL,
    CT_LEVEL_RANGE,
    LABEL_BIAS_SIZE,
    LESION_CHANNEL,
    MAX_CT_SHIFT,
    ORGAN_CHANNELS,
    PET_CHANNEL,
    PET_GAIN_RANGE,
    channel_to_ct,
    channel_to_pet,
)

#: HU histograms for the class medians: 1-HU bins centred on HU_LOW .. HU_LOW + HU_BINS - 1, clipped.
HU_LOW, HU_BINS = int(CT_LEVEL_RANGE[0]), int(CT_LEVEL_RANGE[1] - CT_LEVEL_RANGE[0]) + 1  # -1024, 4096


def hu_histograms(classes: np.ndarray, hu: np.ndarray) -> np.ndarray:
    """(NUM_ORGAN_CLASSES, HU_BINS) counts of each class's voxels per 1-HU bin."""
    bins = np.clip(np.rint(np.asarray(hu, np.float64)) - HU_LOW, 0, HU_BINS - 1).astype(np.int64)
    flat = np.asarray(classes, np.int64) * HU_BINS + bins
    return np.bincount(flat.ravel(), minlength=NUM_ORGAN_CLASSES * HU_BINS).reshape(NUM_ORGAN_CLASSES, HU_BINS)


def histogram_medians(hist: np.ndarray) -> np.ndarray:
    """Median HU of each row of :func:`hu_histograms` counts; NaN for an empty row."""
    cum = np.cumsum(hist, axis=1)
    total = cum[:, -1]
    idx = np.array([np.searchsorted(c, t / 2) for c, t in zip(cum, total)])
    return np.where(total > 0, HU_LOW + idx, np.nan).astype(np.float64)


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
    fixed_suv: np.ndarray      # (NUM_ORGAN_CLASSES,) SUV of the fixed voxels, summed per class
    fixed_hu_hist: np.ndarray  # (NUM_ORGAN_CLASSES, HU_BINS) HU histogram of the fixed voxels per class
    free_values: np.ndarray    # (2, V) HU and SUV of the other voxels


def _organ_channels(x: np.ndarray, max_abs: float) -> tuple[np.ndarray, np.ndarray]:
    """``(organs, sure)``: the organ channels as (voxels, NUM_ORGAN_CLASSES) and which voxels keep their
    class under every offset within ``max_abs`` (their best channel leads by at least ``2 * max_abs``)."""
    if not max_abs > 0:
        raise ValueError(f"max_abs={max_abs} must be > 0")
    organs = np.asarray(x)[ORGAN_CHANNELS].reshape(NUM_ORGAN_CLASSES, -1).T.astype(np.float32)
    top2 = np.partition(organs, NUM_ORGAN_CLASSES - 2, axis=1)[:, -2:]
    return organs, top2[:, 1] - top2[:, 0] >= 2 * max_abs


def compact(x: np.ndarray, max_abs: float) -> CompactLabels:
    """Reduce one sample ((NUM_CHANNELS, ...) encoded channels, label channels as generated)."""
    return reduce_sample(x, max_abs)[0]


#: The class of a :class:`LabelMap` voxel that offsets can change (its class is decided by ``CompactLabels.free``).
FREE = 255


@dataclass
class LabelMap:
    """Where one reduced sample's voxels lie: what :func:`compact` drops, kept so that the organ map under
    given offsets can be rebuilt whole (the label clean-up works on pieces, not voxel counts)."""

    classes: np.ndarray  # (...) uint8: each voxel's class where no admissible offset changes it, FREE elsewhere
    hu: np.ndarray       # (...) float32 HU of every voxel
    suv: np.ndarray      # (...) float32 SUV of every voxel


def label_map(x: np.ndarray, max_abs: float) -> LabelMap:
    """The :class:`LabelMap` of one sample, reduced as :func:`compact` reduces it."""
    return reduce_sample(x, max_abs)[1]


def reduce_sample(x: np.ndarray, max_abs: float) -> tuple[CompactLabels, LabelMap]:
    """:func:`compact` and :func:`label_map` of one sample from one pass over its channels (a calibration
    keeps both of every sample)."""
    x = np.asarray(x)
    organs, sure = _organ_channels(x, max_abs)
    les = x[LESION_CHANNEL].ravel().astype(np.float32)
    values = np.stack([channel_to_ct(x[CT_CHANNEL].astype(np.float64)).ravel(),
                       channel_to_pet(x[PET_CHANNEL].astype(np.float64)).ravel()])
    sure_class = organs[sure].argmax(1)
    reduced = CompactLabels(fixed=np.bincount(sure_class, minlength=NUM_ORGAN_CLASSES),
                            free=organs[~sure], lesion=les[np.abs(les) < 2 * max_abs],
                            lesion_fixed=int((les >= 2 * max_abs).sum()), cases=1, max_abs=float(max_abs),
                            fixed_suv=np.bincount(sure_class, weights=values[1, sure], minlength=NUM_ORGAN_CLASSES),
                            fixed_hu_hist=hu_histograms(sure_class, values[0, sure]),
                            free_values=values[:, ~sure].astype(np.float32))
    classes = np.full(sure.shape, FREE, np.uint8)
    classes[sure] = sure_class
    shape = x.shape[1:]
    hu, suv = values.astype(np.float32)
    return reduced, LabelMap(classes.reshape(shape), hu.reshape(shape), suv.reshape(shape))


def organ_map(part: CompactLabels, labels: LabelMap, bias: np.ndarray) -> np.ndarray:
    """The organ map (uint8, the sample's grid) of one reduced sample under ``bias`` (LABEL_BIAS_SIZE,)."""
    if part.cases != 1:
        raise ValueError(f"an organ map is one sample's, not {part.cases} merged")
    classes = labels.classes.copy()
    free = classes == FREE
    if int(free.sum()) != len(part.free):
        raise ValueError(f"the label map has {int(free.sum())} free voxels, the reduced sample {len(part.free)}: "
                         "they are not of the same sample")
    classes[free] = (part.free + bias[:NUM_ORGAN_CLASSES]).argmax(1)
    return classes


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
                         max_abs=parts[0].max_abs, fixed_suv=np.sum([p.fixed_suv for p in parts], axis=0),
                         fixed_hu_hist=np.sum([p.fixed_hu_hist for p in parts], axis=0),
                         free_values=np.concatenate([p.free_values for p in parts], axis=1))


def mean_counts(data: CompactLabels, bias: np.ndarray) -> np.ndarray:
    """Mean voxels per case of each organ class and of lesion under ``bias`` (LABEL_BIAS_SIZE,)."""
    organs = data.fixed + np.bincount((data.free + bias[:NUM_ORGAN_CLASSES]).argmax(1), minlength=NUM_ORGAN_CLASSES)
    lesion = data.lesion_fixed + int((data.lesion + bias[NUM_ORGAN_CLASSES] > 0).sum())
    return np.append(organs, lesion) / data.cases


def class_intensities(data: CompactLabels, bias: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Median HU and mean SUV (each (NUM_ORGAN_CLASSES,), NaN where a class is empty) of each
    organ class's voxels, pooled over the cases, under ``bias`` (LABEL_BIAS_SIZE,)."""
    cls = (data.free + bias[:NUM_ORGAN_CLASSES]).argmax(1)
    n = data.fixed + np.bincount(cls, minlength=NUM_ORGAN_CLASSES)
    suv_sums = data.fixed_suv + np.bincount(cls, weights=data.free_values[1].astype(np.float64),
                                                minlength=NUM_ORGAN_CLASSES)
    with np.errstate(invalid="ignore", divide="ignore"):
        suv = suv_sums / n
    return histogram_medians(data.fixed_hu_hist + hu_histograms(cls, data.free_values[0])), suv


def fit_intensities(sample_hu: np.ndarray, sample_suv: np.ndarray, target_hu: np.ndarray,
                    target_suv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per organ class the HU shift and SUV gain that take the samples' class median HU and mean
    SUV to the targets, within :data:`~synthaug.model.channels.MAX_CT_SHIFT` and :data:`~synthaug.model.channels.PET_GAIN_RANGE`;
    identity for the background and for classes empty on either side."""
    ok = np.isfinite(sample_hu) & np.isfinite(target_hu) & (sample_suv > 0) & (target_suv > 0)
    ok[0] = False
    with np.errstate(invalid="ignore", divide="ignore"):
        shift = np.where(ok, np.clip(target_hu - sample_hu, -MAX_CT_SHIFT, MAX_CT_SHIFT), 0.0)
        gain = np.where(ok, np.clip(target_suv / sample_suv, *PET_GAIN_RANGE), 1.0)
    return shift, gain


#: Fewest cases with a class, in the samples and in the training cohort, to fit its spread.
MIN_SPREAD_CASES = 10


def fit_level_spread(sample_levels: np.ndarray, training_levels: np.ndarray, *,
                     min_cases: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per organ class, from the per-case median HU of the (shifted) samples and of training cases
    ((cases, NUM_ORGAN_CLASSES) each, NaN where a case lacks the class): the centre (the training
    cases' median) and the scale (training sd / samples' sd, at most 1) that
    :func:`~synthaug.model.channels.spread_organ_levels` narrows the samples' spread with; scale 1 for
    the background and for classes in fewer than ``min_cases`` (default :data:`MIN_SPREAD_CASES`)
    cases on either side."""
    min_cases = MIN_SPREAD_CASES if min_cases is None else min_cases
    level, scale = np.zeros(NUM_ORGAN_CLASSES), np.ones(NUM_ORGAN_CLASSES)
    for c in range(1, NUM_ORGAN_CLASSES):
        g, t = (v[np.isfinite(v)] for v in (sample_levels[:, c], training_levels[:, c]))
        if len(t):
            level[c] = float(np.median(t))
        if min(len(g), len(t)) >= min_cases and g.std() > 0:
            scale[c] = min(1.0, float(t.std() / g.std()))
    return np.clip(level, *CT_LEVEL_RANGE), scale


def _checked_target(target: np.ndarray) -> np.ndarray:
    target = np.asarray(target, dtype=np.float64)
    if target.shape != (LABEL_BIAS_SIZE,) or np.any(target < 0):
        raise ValueError(f"target needs {LABEL_BIAS_SIZE} non-negative mean counts, got shape {target.shape}")
    return target


def _fitted(fit_lesion: bool) -> np.ndarray:
    """Which offsets a fit moves: not the background's (only differences matter), the lesion's only if asked."""
    fit = np.ones(LABEL_BIAS_SIZE, bool)
    fit[0] = False
    fit[NUM_ORGAN_CLASSES] = fit_lesion
    return fit


def _count_error(counts: np.ndarray, target: np.ndarray, fit: np.ndarray) -> float:
    # Summed, not the largest: a class no offset within max_abs can reach must not freeze the others.
    return float(np.square(np.log((counts[fit] + 1) / (target[fit] + 1))).sum())


def body_scaled_target(target: np.ndarray, drawn: np.ndarray) -> tuple[np.ndarray, float]:
    """``(target, scale)``: ``target`` (LABEL_BIAS_SIZE,) with the background's count set to ``drawn``'s and
    every organ class's scaled by the body the samples draw over the body the target holds (the lesion's
    left as it is). Offsets move borders between classes; they cannot make a body the networks draw
    small larger without labelling air, and absolute targets that ask for it drive every body class's
    offset up together until the ones at ``max_abs`` lose ground. Scaled, the targets ask only for each
    organ's share of the body drawn."""
    target, drawn = _checked_target(target), np.asarray(drawn, np.float64)
    organs = slice(1, NUM_ORGAN_CLASSES)
    if not target[organs].sum() > 0:
        raise ValueError("the target holds no body: nothing to scale")
    scale = float(drawn[organs].sum() / target[organs].sum())
    out = target.copy()
    out[0] = drawn[0]
    out[organs] *= scale
    return out, scale


def fit_label_bias(data: CompactLabels, target: np.ndarray, *, fit_lesion: bool = False, iterations: int = 400,
                   rate: float = 0.1, start: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Offsets (LABEL_BIAS_SIZE,) whose mean counts match ``target`` (LABEL_BIAS_SIZE,: mean voxels per
    case per organ class, then lesion); returns ``(bias, counts)``. The background's offset stays 0
    (only differences matter); the lesion's stays 0 unless ``fit_lesion``. The iteration starts from
    ``start`` (default: no offsets)."""
    target = _checked_target(target)
    fit = _fitted(fit_lesion)
    bias = np.zeros(LABEL_BIAS_SIZE) if start is None else np.where(fit, np.clip(start, -data.max_abs, data.max_abs), 0.0)
    best, best_err = bias.copy(), np.inf
    for _ in range(iterations):
        counts = mean_counts(data, bias)
        err = _count_error(counts, target, fit)
        if err < best_err:
            best, best_err = bias.copy(), err
        bias = np.where(fit, np.clip(bias + rate * np.log((target + 1) / (counts + 1)), -data.max_abs, data.max_abs), 0.0)
    return best, mean_counts(data, best)


#: Rounds of :func:`fit_label_bias_cleaned`: each fits the offsets on the counts as drawn (from the offsets
#: of the round before), then measures the cleaned counts once.
CLEAN_FIT_ROUNDS = 4


def fit_label_bias_cleaned(data: CompactLabels, target: np.ndarray, cleaned_counts, *, fit_lesion: bool = False,
                           rounds: int = CLEAN_FIT_ROUNDS) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Offsets whose mean counts *after the label clean-up* match ``target``; returns ``(bias, counts, rounds)``.

    The clean-up (:func:`synthaug.core.labels.clean_organ_map`) works on pieces, so the cleaned counts
    do not follow from the voxel counts :func:`fit_label_bias` fits. Each round fits the counts as drawn
    to a goal, measures the cleaned counts under those offsets (``cleaned_counts(bias)``, mean voxels per
    case, LABEL_BIAS_SIZE,) and scales the goal by what the clean-up left short of the target (a class
    whose stray pieces the clean-up takes away gets a goal as much larger). The offsets of the round
    closest to the target are kept; each round's error, offsets and counts (cleaned and as drawn) are
    returned beside them. The first round's offsets are those :func:`fit_label_bias` fits on the
    counts as drawn, so its cleaned counts show what a fit that ignores the clean-up leaves."""
    target = _checked_target(target)
    fit = _fitted(fit_lesion)
    if rounds < 1:
        raise ValueError(f"rounds={rounds} must be at least 1")
    goal, best, history, bias = target.copy(), None, [], None
    for _ in range(rounds):
        # each round runs fit_label_bias's full iteration, from the offsets of the round before
        bias, drawn = fit_label_bias(data, goal, fit_lesion=fit_lesion, start=bias)
        counts = np.asarray(cleaned_counts(bias), np.float64)
        err = _count_error(counts, target, fit)
        history.append({"error": round(err, 6), "label_bias": [round(float(b), 4) for b in bias],
                        "cleaned": [round(float(c), 1) for c in counts], "drawn": [round(float(d), 1) for d in drawn]})
        if best is None or err < best[0]:
            best = (err, bias, counts)
        goal = np.where(fit, goal * (target + 1) / (counts + 1), goal)
    return best[1], best[2], history


def level_spread_fit(parts: list[CompactLabels], bias: np.ndarray, shift: np.ndarray, training_levels: np.ndarray, *,
                     min_cases: int | None = None) -> dict:
    """``ct_level``, ``ct_level_scale`` and their table, from the samples' per-case median HU
    (``parts``: one reduced sample per case) under ``bias`` after ``shift`` against the training
    cases' (``training_levels``: ``TrainingStats.case_median_hu``) by :func:`fit_level_spread`."""
    levels = np.stack([class_intensities(p, bias)[0] for p in parts])
    return level_spread_from_levels(levels, shift, training_levels, min_cases=min_cases)


def level_spread_from_levels(levels: np.ndarray, shift: np.ndarray, training_levels: np.ndarray, *,
                             min_cases: int | None = None) -> dict:
    """:func:`level_spread_fit` from the samples' per-case median HU before ``shift`` ((cases,
    NUM_ORGAN_CLASSES), NaN where a case lacks the class) instead of the reduced samples."""
    levels = np.asarray(levels, np.float64) + shift
    centre, scale = fit_level_spread(levels, training_levels, min_cases=min_cases)
    return {"ct_level": [round(float(v), 1) for v in centre],
            "ct_level_scale": [round(float(v), 4) for v in scale],
            "level_spread": {n: {"training_sd": _sd(training_levels[:, c]), "generated_sd": _sd(levels[:, c]),
                                 "calibrated_sd": _sd(centre[c] + scale[c] * (levels[:, c] - centre[c]))}
                             for c, n in enumerate(CLASS_NAMES[:NUM_ORGAN_CLASSES])}}


def cleaned_stats(part: CompactLabels, labels: LabelMap, bias: np.ndarray,
                  spacing) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One sample's ``(counts (LABEL_BIAS_SIZE,), HU histograms (NUM_ORGAN_CLASSES, HU_BINS), SUV sums
    (NUM_ORGAN_CLASSES,))`` under ``bias`` with its organ map cleaned as the sampler cleans it
    (:func:`synthaug.core.labels.clean_organ_map` on a grid of ``spacing`` mm)."""
    organs = clean_organ_map(organ_map(part, labels, bias), spacing)[0].ravel()
    counts = np.bincount(organs, minlength=NUM_ORGAN_CLASSES)
    lesion = part.lesion_fixed + int((part.lesion + bias[NUM_ORGAN_CLASSES] > 0).sum())
    suv = np.bincount(organs, weights=labels.suv.ravel().astype(np.float64), minlength=NUM_ORGAN_CLASSES)
    return np.append(counts, lesion).astype(np.float64), hu_histograms(organs, labels.hu.ravel()), suv


def _sd(values: np.ndarray) -> float | None:
    """The sd of the finite values, rounded to 0.1 HU; ``None`` for fewer than two."""
    v = values[np.isfinite(values)]
    return round(float(v.std()), 1) if len(v) > 1 else None

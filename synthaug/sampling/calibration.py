"""Label calibration: per-class offsets that make a stage's labels as large as its training data's.

A briefly trained stage decides small or thin classes (aorta, spleen, kidneys, the
lesion channel) by argmax over label channels that it generates a little too low, so
they come out too small or not at all, while a neighbour grows. Adding a constant offset
per class before the argmax (``StageConfig.calibration.label_bias``, applied by
:func:`synthaug.model.channels.harden_labels`) moves the borders without retraining. The
offsets are fitted on the stage's own samples, generated for the demographics of
training cases, against the label volumes on the stage's grid that those demographics
lead to, estimated over the whole training cohort (:func:`expected_means`): what follows
body size is kept, what varies from case to case regardless (a bladder's filling) is
averaged over all cases instead of the few sampled. Training data only, so a held-out
cohort stays held out. The offsets are shared by both sexes; the fit is also reported per
sex (``label_calibration.by_sex``) to show what sharing them leaves.

The fit is a fixed-point iteration, ``b_c += rate * log(target_c / count_c)``, with
every offset kept within ``max_abs``. A voxel whose best channel leads the runner-up by
at least ``2 * max_abs`` cannot change class under any admissible offsets, so only the
others are kept (:func:`compact`), which keeps full-resolution samples small.

The sampler relabels stray pieces of organ labels in its output (:func:`synthaug.core.labels.clean_organ_map`),
which takes away voxels a count of the labels as drawn includes: an organ whose offset grows stray pieces
along with itself reaches its target volume partly with pieces that the output then loses. Where a
stage's labels are the output (the SR stage), the fit therefore measures the organ maps as the sampler
leaves them: each sample also keeps where its voxels lie (:class:`LabelMap`), the offsets are fitted
on the counts as drawn towards a goal, the cleaned counts are measured under them, and the goal is
scaled by what the clean-up left short of the target, over a few rounds
(:func:`fit_label_bias_cleaned`); the intensities and level spreads are then read inside the cleaned
labels. A global stage followed by an SR stage is fitted on its labels as drawn, which is how the SR
stage receives them.

The same samples then give each class's median HU and mean SUV inside the calibrated
labels; a per-class CT shift and PET gain (``Calibration.ct_shift``, ``pet_gain``, applied
by :func:`synthaug.model.channels.calibrate_intensities` after the labels are decided) take them
to the training cases' median HU and mean SUV, within :data:`~synthaug.model.channels.MAX_CT_SHIFT` and
:data:`~synthaug.model.channels.PET_GAIN_RANGE`. This corrects a stage's level per organ (the
SR stage loses a tenth of the brain's uptake to the skull at the borders), not its
texture, and only what the training data show. The CT is matched by its median, the
statistic an organ's HU is read by: a label that reaches a little past its organ's border
pulls the mean towards the neighbour's HU (fat beside the aorta, say) by more than the
organ's own level is off, and a shift fitted to the mean would move the whole organ to
make up for its border. The PET is matched by its mean, the quantity (total uptake over
volume) that a border cannot shift by much: its neighbours take up little.

A shift moves every case's organ alike; a briefly trained stage also lets an organ's level
wander from case to case far more than the training cases' (the demo stage 1's spleen:
a per-case median HU with an sd of 15 HU where the cohort's is 4), which puts single cases outside the organ's range
although the average is right. So each organ's per-case median HU in the shifted samples
is compared with the training cases' (:func:`fit_level_spread`): where the samples spread
more, a per-class scale (``Calibration.ct_level_scale``, at most 1, applied by
:func:`synthaug.model.channels.spread_organ_levels` after the shift) keeps only that share of each
case's deviation from the cohort's median (``ct_level``). Whatever of an organ's level
varies in the cohort (a fatty liver, bone with age) keeps the cohort's spread, and the
order of the cases; it is a second moment matched, not a value imposed.

``synthaug calibrate`` (:func:`calibrate`) runs the whole procedure on a weights folder:
the global stage first, then the SR stage on the calibrated stage 1.

The fitting steps themselves (reducing samples, the offsets, intensities and level spread) are
:mod:`synthaug.sampling.calibration_fit`'s, the work folder's files and the cleaned measurement
:mod:`synthaug.sampling.calibration_work`'s; this module samples the stage, reads the training
cohort's targets, and writes the weights' JSON. Every public name of both is importable from here too.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.io import atomic_path, atomic_write_json
from ..core.labels import NUM_ORGAN_CLASSES
from ..core.progress import progress_bar
from ..model.channels import LABEL_BIAS_SIZE
from .calibration_fit import (
    CLASS_NAMES,
    CLEAN_FIT_ROUNDS,
    FREE,
    HU_BINS,
    HU_LOW,
    MIN_SPREAD_CASES,
    CompactLabels,
    LabelMap,
    body_scaled_target,
    class_intensities,
    cleaned_stats,
    compact,
    fit_intensities,
    fit_label_bias,
    fit_label_bias_cleaned,
    fit_level_spread,
    histogram_medians,
    hu_histograms,
    label_map,
    level_spread_fit,
    level_spread_from_levels,
    mean_counts,
    merge,
    organ_map,
    reduce_sample,
)
from .calibration_work import (
    ORIGIN_FILE,
    CleanedSamples,
    check_sample_origin,
    load_compact,
    load_label_map,
    map_path,
    sample_origin,
    save_compact,
    save_label_map,
)

__all__ = [
    "CASES_PER_FEATURE", "CLASS_NAMES", "CLEAN_FIT_ROUNDS", "FREE", "HU_BINS", "HU_LOW", "MIN_SPREAD_CASES",
    "ORIGIN_FILE", "SEED0", "CleanedSamples", "CompactLabels", "LabelMap", "TrainingStats", "available_memory",
    "body_scaled_target", "calibrate", "check_fit_memory", "check_sample_origin", "class_intensities", "cleaned_stats", "compact",
    "demographic_features", "expected_means", "fit_intensities", "fit_label_bias", "fit_label_bias_cleaned",
    "fit_level_spread", "histogram_medians", "hu_histograms", "label_map", "level_spread_fit",
    "level_spread_from_levels", "load_compact", "load_label_map", "map_path", "mean_counts", "merge", "organ_map",
    "reduce_sample", "sample_origin", "save_compact", "save_label_map", "training_cohort_stats", "training_stats",
]

#: Sample i of a calibration uses seed SEED0 + i (apart from the seeds evaluations use, 0..n-1).
SEED0 = 50_000


# --- the training cohort's targets ---------------------------------------------------------------


#: Fewer cases than this per demographic feature (plus intercept) and volume targets fall back to the
#: sampled cases' own mean: a linear fit on so few would add more noise than it removes.
CASES_PER_FEATURE = 10


def demographic_features(demos) -> np.ndarray:
    """(n, p) regressors for volume targets: intercept, then each of male, age, height and weight
    that is known for every case in ``demos`` (a field missing anywhere is left out)."""
    columns = [np.ones(len(demos))]
    for get in (lambda d: None if d.sex is None else float(d.sex == "M"), lambda d: d.age,
                lambda d: d.height_cm, lambda d: d.weight_kg):
        values = [get(d) for d in demos]
        if all(v is not None for v in values):
            columns.append(np.asarray(values, np.float64))
    return np.stack(columns, 1)


def expected_means(values: np.ndarray, features: np.ndarray, rows: int | Sequence[int]) -> np.ndarray:
    """The mean over cases ``rows`` (the first ``rows``, or these indices) of each column of
    ``values`` (n, k) as the demographics predict it: a least-squares fit of ``values`` on
    ``features`` (n, p, with intercept) over all n cases, evaluated at those cases' features.
    Over n == rows it is their plain mean; over more cases it keeps what follows the
    demographics (body size) and averages out the rest (a bladder's filling) over the whole
    cohort. With fewer than ``CASES_PER_FEATURE`` cases per feature, the plain mean of the
    ``rows`` cases."""
    values, features = np.asarray(values, np.float64), np.asarray(features, np.float64)
    index = np.arange(rows) if isinstance(rows, (int, np.integer)) else np.asarray(rows, dtype=np.int64)
    if (values.shape[0] != features.shape[0] or index.ndim != 1 or not len(index)
            or index.min() < 0 or index.max() >= values.shape[0]):
        raise ValueError(f"values {values.shape}, features {features.shape}, rows={rows}: need as many rows "
                         "and at least one case among them")
    if len(values) < CASES_PER_FEATURE * features.shape[1]:
        return values[index].mean(0)
    coef = np.linalg.lstsq(features, values, rcond=None)[0]
    return np.maximum(features[index].mean(0) @ coef, 0.0)


@dataclass
class TrainingStats:
    """What the training cohort says about a stage's labels and organs, on the stage's grid."""

    counts: np.ndarray     # (volume_cases, LABEL_BIAS_SIZE) voxels per case of each organ class, then lesion
    features: np.ndarray   # (volume_cases, p) their demographic_features
    sexes: list            # (volume_cases,) their sex ("F", "M" or None)
    median_hu: np.ndarray  # (NUM_ORGAN_CLASSES,) per organ class, pooled over the intensity cases
    mean_suv: np.ndarray   # (NUM_ORGAN_CLASSES,)
    case_median_hu: np.ndarray  # (intensity_cases, NUM_ORGAN_CLASSES) per case (NaN: class absent)

    def volume_target(self, rows: int | Sequence[int]) -> np.ndarray:
        """Mean voxels per case (LABEL_BIAS_SIZE,) expected for the demographics of cases ``rows``."""
        return expected_means(self.counts, self.features, rows)


def training_stats(data: str | Path, cases: int, config, cache: str | Path | None = None, *,
                   intensity_cases: int | None = None,
                   volume_cases: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(volume target, median HU, mean SUV)`` of :func:`training_cohort_stats` for training cases
    ``0..cases-1``."""
    stats = training_cohort_stats(data, cases, config, cache, intensity_cases=intensity_cases,
                                  volume_cases=volume_cases)
    return stats.volume_target(cases), stats.median_hu, stats.mean_suv


def training_cohort_stats(data: str | Path, cases: int, config, cache: str | Path | None = None, *,
                          intensity_cases: int | None = None, volume_cases: int | None = None) -> TrainingStats:
    """On the stage's grid (resampled as the stage was trained: ``config.resampling``): the voxels
    of each organ class and of lesion in training cases ``0..volume_cases-1`` (default: the same
    ``cases``), from which :meth:`TrainingStats.volume_target` estimates the means expected for
    the demographics of any of them (:func:`expected_means`), and each organ class's median HU
    and mean SUV, pooled over cases ``0..intensity_cases-1`` (default: the same ``cases``).

    With ``cache`` (e.g. the training run's), the whole cohort's preprocessing cache there is
    used or built; without, only those cases are resampled (no cache written)."""
    from ..core.io import Cohort
    from ..model.preprocess import preprocess_cohort, to_grid

    intensity_cases = cases if intensity_cases is None else intensity_cases
    volume_cases = cases if volume_cases is None else volume_cases
    if volume_cases < cases:
        raise ValueError(f"volume_cases={volume_cases} must include the {cases} sampled cases")
    n = max(volume_cases, intensity_cases)
    cohort = Cohort(data)
    if cache is not None:
        arrays = preprocess_cohort(data, config.grid, cache, **config.resampling(config.grid))
        cases_arrays = ((arrays.organs[i], arrays.lesions[i], arrays.ct[i], arrays.pet[i]) for i in range(n))
    else:
        resampled = (to_grid(cohort.load(cohort.case_ids[i]), config.grid, **config.resampling(config.grid))
                     for i in range(n))
        zeros = np.zeros(config.grid.shape, np.uint8)
        cases_arrays = ((zeros if c.organs is None else c.organs, zeros if c.lesions is None else c.lesions, c.ct, c.pet)
                        for c in resampled)
    counts, case_medians, suv_sums = [], [], np.zeros(NUM_ORGAN_CLASSES)
    hist = np.zeros((NUM_ORGAN_CLASSES, HU_BINS), np.int64)
    intensity_voxels = np.zeros(NUM_ORGAN_CLASSES)
    for i, (organs, lesions, ct, pet) in enumerate(cases_arrays):
        organs = np.asarray(organs).ravel()
        voxels = np.bincount(organs, minlength=NUM_ORGAN_CLASSES)
        if i < volume_cases:
            counts.append(np.append(voxels, int(np.asarray(lesions).sum())))
        if i < intensity_cases:
            intensity_voxels += voxels
            case_hist = hu_histograms(organs, np.asarray(ct).ravel())
            hist += case_hist
            case_medians.append(histogram_medians(case_hist))
            suv_sums += np.bincount(organs, weights=np.asarray(pet, np.float64).ravel(), minlength=NUM_ORGAN_CLASSES)
    with np.errstate(invalid="ignore", divide="ignore"):
        suv = suv_sums / intensity_voxels
    demos = [cohort.demographics[cohort.case_ids[i]] for i in range(volume_cases)]
    features = demographic_features(demos)
    return TrainingStats(np.asarray(counts, np.float64), features, [d.sex for d in demos], histogram_medians(hist), suv,
                         np.asarray(case_medians, np.float64).reshape(-1, NUM_ORGAN_CLASSES))


# --- the procedure on a weights folder -----------------------------------------------------------


def _volume_table(target: np.ndarray, uncalibrated: np.ndarray, calibrated: np.ndarray) -> dict:
    return {n: {"training": round(float(t), 1), "uncalibrated": round(float(b), 1), "calibrated": round(float(a), 1)}
            for n, t, b, a in zip(CLASS_NAMES, target, uncalibrated, calibrated)}


def _volumes_by_sex(per_case: np.ndarray, stats: TrainingStats) -> dict:
    """The fit's mean volumes checked per sex (``per_case``: (cases, 2, LABEL_BIAS_SIZE) counts before and
    after calibration, one row per training case 0, 1, ...): the offsets are one per class, shared by
    both sexes, so a class can match on average and still be off in each sex in opposite directions."""
    out = {}
    for sex in ("F", "M"):
        rows = [i for i in range(len(per_case)) if stats.sexes[i] == sex]
        if rows:
            out[sex] = {"cases": len(rows), "mean_voxels": _volume_table(stats.volume_target(rows),
                                                                         *per_case[rows].mean(0))}
    return out


#: Peak memory of a calibration process at its fit (the reduced samples loaded, merged and fitted, with the
#: process's own footprint) per byte of reduced samples on disk (``.npz``, stored uncompressed). Measured on
#: the demo SR stage, 40 cases at ``max_abs`` 0.5: 664 MB of samples, peak RSS 9.4 GB (ratio 14.1).
FIT_MEMORY_PER_SAMPLE_BYTE = 14.0


def available_memory() -> int | None:
    """Bytes of memory free for a new allocation (``MemAvailable`` of ``/proc/meminfo``), or ``None``
    where the system does not say (then nothing is refused)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def check_fit_memory(sample_bytes: float, cases: int, max_abs: float, available: int | None) -> None:
    """Refuse, in one line, a fit whose reduced samples (``sample_bytes`` per case on average, ``cases``
    cases) would need more memory than ``available``: the share of voxels left to the fit grows
    steeply with ``max_abs`` (a stage with nearly hard labels leaves most of them at 1.0)."""
    need = FIT_MEMORY_PER_SAMPLE_BYTE * sample_bytes * cases
    if available is not None and need > available:
        raise ValueError(f"max_abs={max_abs}: the fit of {cases} cases would need about {need / 2**30:.1f} GiB "
                         f"({sample_bytes / 2**20:.0f} MiB of reduced samples per case), the machine has "
                         f"{available / 2**30:.1f} GiB free: use a smaller max_abs or fewer cases")


def _reduced_samples(sampler, stage: str, cohort, indices: list[int], work: Path, max_abs: float,
                     cases: int, progress: bool) -> None:
    """Sample the stage (label offsets being fitted switched off) for cases ``indices``; one ``.npz`` each.
    After the first sample, refuses a run whose fit of ``cases`` such samples would not fit in memory
    (:func:`check_fit_memory`), instead of sampling them all first."""
    checked = False
    for i in progress_bar(indices, desc=f"calibration samples ({stage})", disable=not progress):
        path = work / f"{i:05d}.npz"
        if not path.exists():
            demo, seed = [cohort.demographics[cohort.case_ids[i]]], [SEED0 + i]
            if stage == "global":
                x = sampler.sample_global(demo, seed, soft_labels=True)
            else:
                x = sampler.sample_sr(sampler.sample_global(demo, seed), demo, seed, soft_labels=True)
            reduced, labels = reduce_sample(x[0].float().cpu().numpy(), max_abs)
            # the label map first: a sample counts as done once its reduced file exists
            with atomic_path(map_path(path)) as tmp, open(tmp, "wb") as fh:
                save_label_map(fh, labels)
            with atomic_path(path) as tmp, open(tmp, "wb") as fh:
                save_compact(fh, reduced)
        if not checked:
            check_fit_memory(path.stat().st_size, cases, max_abs, available_memory())
            checked = True


def calibrate(weights: str | Path, stage: str, data: str | Path, work: str | Path, *, cases: int = 40,
              max_abs: float = 0.5, shard: tuple[int, int] = (0, 1), fit_lesion: bool = False, write: bool = False,
              cache: str | Path | None = None, progress: bool = True, intensities: bool = True,
              intensity_cases: int | None = None, volume_cases: int | None = None,
              spread_only: bool = False, clean_labels: bool | None = None, keep_body: bool = False) -> dict | None:
    """Fit ``stage``'s label offsets of the weights in ``weights`` on samples for the demographics of
    training cases ``0..cases-1`` of ``data`` (kept in ``work``, resumable), so that the labels have
    the mean volumes expected for those demographics, estimated over training cases
    ``0..volume_cases-1`` (default: the whole cohort; :func:`expected_means`); then (``intensities``) the per-class CT shift and PET gain that give
    the organs inside the calibrated labels the median HU and mean SUV of training cases
    ``0..intensity_cases-1`` (default: the whole cohort), and the per-class scale that narrows the
    organs' per-case median HU to those training cases' spread. Volumes follow the body size and so are
    matched to the sampled demographics; organ intensities vary between cases far more than the
    demographics explain (the phantom bladder's SUV most of all), so their target is the
    population's rather than that of the few sampled cases.

    With ``shard=(i, n)``, n > 1, only samples cases ``i, i + n, ...`` and returns ``None``;
    else returns the fit (``label_bias``, ``ct_shift``, ``pet_gain``, ``ct_level``, ``ct_level_scale``
    and the tables behind them) and,
    with ``write``, stores it in ``weights/<stage>.json``. With ``spread_only``, keeps the stage's
    label offsets, CT shift and PET gain and fits (and returns) only the spread on top of them.

    ``clean_labels`` fits everything on organ maps cleaned as the sampler cleans its output
    (:func:`synthaug.core.labels.clean_organ_map`, :func:`fit_label_bias_cleaned`); by default it is on
    where the stage's labels are the sampler's output (the SR stage, or a global stage without one) and
    off for a global stage whose labels go to the SR stage as drawn. ``keep_body`` fits each organ's
    share of the body the samples draw instead of its absolute volume (:func:`body_scaled_target`)."""
    from ..core.io import Cohort
    from .cascade import CascadedSampler

    _check_settings(stage, max_abs, spread_only, intensities)
    stages = "global" if stage == "global" else "cascade"
    sampler = CascadedSampler.from_pretrained(weights, stages=stages)
    cohort = Cohort(data)
    intensity_cases, volume_cases = _case_counts(data, len(cohort), cases, intensity_cases, volume_cases)
    config = sampler.global_config if stage == "global" else sampler.sr_config  # sampled uncalibrated (soft labels)
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    check_sample_origin(work, sample_origin(weights, stage, sampler, cohort, max_abs))
    _reduced_samples(sampler, stage, cohort, list(range(shard[0], cases, shard[1])), work, max_abs, cases, progress)
    if shard[1] > 1:
        return None
    files = [work / f"{i:05d}.npz" for i in range(cases)]
    check_fit_memory(sum(f.stat().st_size for f in files) / cases, cases, max_abs, available_memory())
    parts = [load_compact(f) for f in files]
    if clean_labels is None:
        clean_labels = stage == "sr" or not (Path(weights) / "sr.json").is_file()
    grid = sampler.sr_config.output_grid if stage == "sr" else sampler.global_config.global_grid
    cleaned = CleanedSamples(parts, files, grid.spacing) if clean_labels else None
    samples = merge(parts)
    stats = training_cohort_stats(data, cases, config, cache, volume_cases=volume_cases,
                                  intensity_cases=intensity_cases if intensities else None)
    if spread_only:  # on top of the stage's own offsets and shift, which stay as they are
        bias = np.asarray(config.calibration.label_bias or np.zeros(LABEL_BIAS_SIZE), np.float64)
        shift = np.asarray(config.calibration.ct_shift or np.zeros(NUM_ORGAN_CLASSES), np.float64)
        # MIN_SPREAD_CASES as this module holds it when called (both paths): it is the procedure's setting
        if cleaned is None:
            result = level_spread_fit(parts, bias, shift, stats.case_median_hu, min_cases=MIN_SPREAD_CASES)
        else:
            result = level_spread_from_levels(cleaned.intensities(bias)[2], shift, stats.case_median_hu,
                                              min_cases=MIN_SPREAD_CASES)
    else:
        label_info = {"data": str(data), "cases": cases, "seeds": f"{SEED0} + case index", "max_abs": max_abs,
                      "volume_cases": volume_cases, "clean_labels": bool(clean_labels), "keep_body": bool(keep_body)}
        result = _fit(parts, samples, stats, label_info, fit_lesion=fit_lesion,
                      intensity_cases=intensity_cases if intensities else None, cleaned=cleaned)
    del parts, samples, cleaned
    if write:
        _write(weights, stage, stages, result)
    return result


def _check_settings(stage: str, max_abs: float, spread_only: bool, intensities: bool) -> None:
    """The checks of :func:`calibrate` that need nothing read."""
    if stage not in ("global", "sr"):
        raise ValueError(f"stage={stage!r}; choose 'global' or 'sr'")
    if not max_abs > 0:
        raise ValueError(f"max_abs={max_abs} must be > 0")
    if spread_only and not intensities:
        raise ValueError("spread_only fits an intensity calibration: it cannot go with intensities=False")


def _case_counts(data: str | Path, available: int, cases: int, intensity_cases: int | None,
                 volume_cases: int | None) -> tuple[int, int]:
    """``(intensity_cases, volume_cases)``, each defaulting to the whole training cohort (``available``
    cases), checked with ``cases`` against it."""
    if not 1 <= cases <= available:
        raise ValueError(f"cases={cases}: the training cohort {data} has {available}")
    intensity_cases = available if intensity_cases is None else intensity_cases
    if not 1 <= intensity_cases <= available:
        raise ValueError(f"intensity_cases={intensity_cases}: the training cohort {data} has {available}")
    volume_cases = available if volume_cases is None else volume_cases
    if not cases <= volume_cases <= available:
        raise ValueError(f"volume_cases={volume_cases}: must be at least cases={cases} and at most the "
                         f"{available} of the training cohort {data}")
    return intensity_cases, volume_cases


def _fit(parts: list[CompactLabels], samples: CompactLabels, stats: TrainingStats, label_info: dict, *,
         fit_lesion: bool, intensity_cases: int | None, cleaned: CleanedSamples | None = None) -> dict:
    """The label offsets (matched to ``stats``'s volume target for the sampled cases), then, unless
    ``intensity_cases`` is ``None``, the CT shift, PET gain and level spread under them, each with
    the table behind it; ``label_info`` opens the offsets' table. With ``cleaned``, every count and
    intensity is measured on the cleaned organ maps."""
    target = stats.volume_target(label_info["cases"])
    zero = np.zeros(LABEL_BIAS_SIZE)
    goal = target
    if label_info.get("keep_body"):
        goal, scale = body_scaled_target(target, mean_counts(samples, zero))
        label_info = {**label_info, "body_scale": scale}
    if cleaned is None:
        bias, after = fit_label_bias(samples, goal, fit_lesion=fit_lesion)
        per_case = np.stack([[mean_counts(p, zero), mean_counts(p, bias)] for p in parts])
        extra = {}
    else:
        bias, after, rounds = fit_label_bias_cleaned(samples, goal, lambda b: cleaned.counts(b).mean(0),
                                                     fit_lesion=fit_lesion)
        per_case = np.stack([cleaned.counts(zero), cleaned.counts(bias)], axis=1)
        drawn = _volume_table(target, mean_counts(samples, zero), mean_counts(samples, bias))
        extra = {"rounds": rounds, "mean_voxels_as_drawn": drawn}
    result = {"label_bias": [round(float(b), 4) for b in bias],
              "label_calibration": {**label_info, "mean_voxels": _volume_table(target, per_case[:, 0].mean(0), after),
                                    "by_sex": _volumes_by_sex(per_case, stats), **extra}}
    if intensity_cases is None:
        return {**result, "ct_shift": [], "pet_gain": [], "ct_level": [], "ct_level_scale": []}
    if cleaned is None:
        hu, suv = class_intensities(samples, bias)
    else:
        hu, suv, levels = cleaned.intensities(bias)
    shift, gain = fit_intensities(hu, suv, stats.median_hu, stats.mean_suv)
    result["ct_shift"] = [round(float(v), 2) for v in shift]
    result["pet_gain"] = [round(float(v), 4) for v in gain]
    if cleaned is None:
        result.update(level_spread_fit(parts, bias, shift, stats.case_median_hu, min_cases=MIN_SPREAD_CASES))
    else:
        result.update(level_spread_from_levels(levels, shift, stats.case_median_hu, min_cases=MIN_SPREAD_CASES))
    result["intensity_calibration"] = {
        "target_cases": intensity_cases,
        "median_hu": {n: _intensity_row(t, g, g + d, 1) for n, t, g, d in zip(CLASS_NAMES, stats.median_hu, hu, shift)},
        "mean_suv": {n: _intensity_row(t, g, g * k, 3) for n, t, g, k in zip(CLASS_NAMES, stats.mean_suv, suv, gain)}}
    return result


def _intensity_row(training: float, generated: float, calibrated: float, digits: int) -> dict:
    return {k: round(float(v), digits) if np.isfinite(v) else None
            for k, v in (("training", training), ("generated", generated), ("calibrated", calibrated))}


def _write(weights: str | Path, stage: str, stages: str, result: dict) -> None:
    """Merge ``result`` into ``weights/<stage>.json``, restoring it if the weights no longer load."""
    from .cascade import CascadedSampler

    path = Path(weights) / f"{stage}.json"
    raw = json.loads(path.read_text())
    atomic_write_json(path, {**raw, **result})
    try:
        CascadedSampler.from_pretrained(weights, stages=stages)
    except Exception:
        atomic_write_json(path, raw)  # never leave a config that does not load
        raise

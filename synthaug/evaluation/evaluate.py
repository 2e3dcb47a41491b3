"""Evaluate synthetic PET/CT against a reference cohort.

Organ-wise volume and SUV agreement per demographic subgroup (the paper's
evaluation), conditioning fidelity (does the case have the requested height and
weight?), a memorisation check against the training set, and the parametric phantom
as the baseline. :func:`evaluate_cohorts` writes ``metrics.json``, ``report.md`` and
PNG plots; the definitions are in ``docs/evaluation.md``.
"""

from __future__ import annotations

import io as _io
import math
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.case import Case
from ..core.demographics import Demographics
from ..core.grid import Grid
from ..core.io import (
    CT_FILE,
    ORGANS_FILE,
    PET_FILE,
    SEG_FILE,
    CaseError,
    Cohort,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    same_grid,
)
from ..core.labels import NUM_ORGAN_CLASSES, check_organ_map
from ..sampling.generator import CaseGenerator
from .metrics import BODY_METRICS, ORGAN_METRICS, ORGANS

#: Age bands (years): < 50, 50-65 (both ends included), > 65.
AGE_BANDS = ("<50", "50-65", ">65")
#: BMI bands (kg/m^2): < 25, 25 to < 30, >= 30.
BMI_BANDS = ("<25", "25-30", ">=30")
#: Subgroup factors and their crossings, in report order.
FACTOR_SETS: tuple[tuple[str, ...], ...] = (
    (), ("sex",), ("age",), ("bmi",), ("sex", "age"), ("sex", "bmi"), ("age", "bmi"), ("sex", "age", "bmi"),
)
#: Metrics whose deviation is reported in percent (CT HU are reported as a difference: HU have an arbitrary zero;
#: ``main_part_pct`` is a percentage already and differs in points).
PERCENT_METRICS = ("volume_ml", "suv_mean", "suv_max", "suv_peak", "body_volume_ml", "body_extent_mm",
                   "body_mass_kg", "lesion_volume_ml", "lesion_count", "lesion_suv_max", "lesion_suv_mean")
#: Most bytes a PNG of the report may have.
MAX_PNG_BYTES = 300_000
ORGANS_MAPS = ("totalseg", "synthaug")


# --- subgroups ---------------------------------------------------------------------------------


def age_band(age: float | None) -> str | None:
    if age is None:
        return None
    return "<50" if age < 50 else ("50-65" if age <= 65 else ">65")


def bmi_band(bmi: float | None) -> str | None:
    if bmi is None:
        return None
    return "<25" if bmi < 25 else ("25-30" if bmi < 30 else ">=30")


def subgroup_factors(d: Demographics | None) -> dict[str, str | None]:
    """``{"sex": ..., "age": band, "bmi": band}`` of one person (``None`` where unknown)."""
    if d is None:
        return {"sex": None, "age": None, "bmi": None}
    return {"sex": d.sex, "age": age_band(d.age), "bmi": bmi_band(d.bmi)}


def cell_name(factors: dict[str, str]) -> str:
    """Readable name of a subgroup cell, e.g. ``"M / age >65 / BMI >=30"``; ``"all"`` for no factors."""
    if not factors:
        return "all"
    parts = []
    for key in ("sex", "age", "bmi"):
        if key in factors:
            parts.append(factors[key] if key == "sex" else f"{'age' if key == 'age' else 'BMI'} {factors[key]}")
    return " / ".join(parts)


def subgroup_cells(ref: Sequence[Demographics | None], syn: Sequence[Demographics | None],
                   min_cell: int) -> list[dict]:
    """Cells (``all``, each factor, their crossings) with at least ``min_cell`` cases on both sides.

    Returns dicts with ``name``, ``factors``, ``ref_index`` and ``syn_index`` (arrays of case indices).
    """
    ref_f = [subgroup_factors(d) for d in ref]
    syn_f = [subgroup_factors(d) for d in syn]
    values = {"sex": ("M", "F"), "age": AGE_BANDS, "bmi": BMI_BANDS}
    cells = []
    for keys in FACTOR_SETS:
        combos: list[dict[str, str]] = [{}]
        for k in keys:
            combos = [{**c, k: v} for c in combos for v in values[k]]
        for combo in combos:
            ri = np.array([i for i, f in enumerate(ref_f) if all(f[k] == v for k, v in combo.items())], dtype=int)
            si = np.array([i for i, f in enumerate(syn_f) if all(f[k] == v for k, v in combo.items())], dtype=int)
            if combo and (len(ri) < min_cell or len(si) < min_cell):
                continue
            cells.append({"name": cell_name(combo), "factors": combo, "ref_index": ri, "syn_index": si})
    return cells


# --- statistics ------------------------------------------------------------------------------------


def compare_samples(ref: np.ndarray, syn: np.ndarray, metric: str) -> dict:
    """Means, deviation, 1-Wasserstein distance, KS statistic and KS p-value of two samples (NaNs dropped)."""
    from scipy import stats

    ref = np.asarray(ref, dtype=float)
    syn = np.asarray(syn, dtype=float)
    ref, syn = ref[np.isfinite(ref)], syn[np.isfinite(syn)]
    row = {"n_ref": int(ref.size), "n_syn": int(syn.size), "ref_mean": math.nan, "syn_mean": math.nan,
           "difference": math.nan, "deviation_pct": math.nan, "wasserstein": math.nan, "ks": math.nan, "p": math.nan}
    if ref.size == 0 or syn.size == 0:
        return row
    row["ref_mean"], row["syn_mean"] = float(ref.mean()), float(syn.mean())
    row["difference"] = row["syn_mean"] - row["ref_mean"]
    if metric in PERCENT_METRICS and abs(row["ref_mean"]) > 1e-12:
        row["deviation_pct"] = 100.0 * row["difference"] / abs(row["ref_mean"])
    row["wasserstein"] = float(stats.wasserstein_distance(ref, syn))
    with warnings.catch_warnings():  # "exact calculation unsuccessful, switching to asymp" is expected
        warnings.simplefilter("ignore", RuntimeWarning)
        ks = stats.ks_2samp(ref, syn)
    row["ks"], row["p"] = float(ks.statistic), float(ks.pvalue)
    return row


def benjamini_hochberg(p: Sequence[float]) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q); NaN stays NaN."""
    from scipy import stats

    p = np.asarray(p, dtype=float)
    q = np.full_like(p, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        q[ok] = stats.false_discovery_control(np.clip(p[ok], 0.0, 1.0), method="bh")
    return q


def _table(summaries: Sequence[CaseSummary]) -> dict[tuple[str, str], np.ndarray]:
    """(organ, metric) -> values over the cases."""
    keys = [(o, m) for o in ORGANS for m in ORGAN_METRICS] + [("body", m) for m in BODY_METRICS]
    return {k: np.array([s.values[k[0]][k[1]] for s in summaries], dtype=float) for k in keys}


def compare_cohorts(ref: Sequence[CaseSummary], syn: Sequence[CaseSummary], *, min_cell: int = 5,
                    alpha: float = 0.05) -> dict:
    """Every (subgroup cell, organ, metric): synthetic vs reference (see :func:`compare_samples`), BH-corrected."""
    cells = subgroup_cells([s.demographics for s in ref], [s.demographics for s in syn], min_cell)
    rt, st = _table(ref), _table(syn)
    rows = []
    for cell in cells:
        for (organ, metric), values in rt.items():
            row = compare_samples(values[cell["ref_index"]], st[(organ, metric)][cell["syn_index"]], metric)
            rows.append({"cell": cell["name"], "organ": organ, "metric": metric, **row})
    q = benjamini_hochberg([r["p"] for r in rows])
    for r, qi in zip(rows, q):
        r["q"] = float(qi)
        r["significant"] = bool(np.isfinite(qi) and qi < alpha)
    cell_info = [{"name": c["name"], "factors": c["factors"], "n_ref": int(len(c["ref_index"])),
                  "n_syn": int(len(c["syn_index"]))} for c in cells]
    return {"cells": cell_info, "rows": rows, "summary": _comparison_summary(rows, alpha)}


def _comparison_summary(rows: list[dict], alpha: float) -> dict:
    suv = [r for r in rows if r["cell"] == "all" and r["metric"] == "suv_mean" and np.isfinite(r["deviation_pct"])]
    devs = np.array([abs(r["deviation_pct"]) for r in suv])
    tested = [r for r in rows if np.isfinite(r["q"])]
    out = {
        "suv_mean_abs_deviation_pct_median": float(np.median(devs)) if devs.size else math.nan,
        "suv_mean_abs_deviation_pct_max": float(devs.max()) if devs.size else math.nan,
        "suv_mean_worst_organ": suv[int(devs.argmax())]["organ"] if devs.size else None,
        "organs_suv_mean_within_5pct": int((devs <= 5.0).sum()),
        "organs_compared": int(devs.size),
        "tests": len(tested),
        "significant": int(sum(r["significant"] for r in tested)),
        "alpha": alpha,
    }
    return out


def linear_fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float] | None:
    """Least-squares ``y = a*x + b``; ``None`` with fewer than 3 points or no spread in ``x``."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if x.size < 3 or np.ptp(x) == 0:
        return None
    a, b = np.polyfit(x, y, 1)
    return float(a), float(b)


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    return float(np.corrcoef(x, y)[0, 1])


#: quantity -> (demographics field, measurement, factor from measurement to the requested unit for the raw MAE)
FIDELITY_QUANTITIES = {
    "height": ("height_cm", "body_extent_mm", 0.1),
    "weight": ("weight_kg", "body_mass_kg", 1.0),
}


def _pairs(summaries: Sequence[CaseSummary], field_name: str, measure: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    xs, ys, ids = [], [], []
    for s in summaries:
        x = getattr(s.demographics, field_name) if s.demographics is not None else None
        y = s.values["body"][measure]
        if x is not None and np.isfinite(y):
            xs.append(float(x))
            ys.append(float(y))
            ids.append(s.case_id)
    return np.array(xs), np.array(ys), ids


def conditioning_fidelity(ref: Sequence[CaseSummary], syn: Sequence[CaseSummary]) -> dict:
    """Requested vs measured height (body extent) and weight (estimated body mass).

    A linear calibration ``measured = a * requested + b`` is fitted on the reference
    cohort (the field of view covers only part of the body); reported per cohort:
    Pearson r, the raw MAE (measured in the requested unit vs requested) and the MAE of
    the calibrated prediction (in the measured unit, and divided by ``a`` in the requested one).
    """
    out: dict = {}
    for quantity, (field_name, measure, to_requested) in FIDELITY_QUANTITIES.items():
        rx, ry, _ = _pairs(ref, field_name, measure)
        fit = linear_fit(rx, ry)
        entry: dict = {"requested": field_name, "measured": measure,
                       "calibration": None if fit is None else {"a": fit[0], "b": fit[1], "n": int(rx.size)}}
        for name, group in (("reference", ref), ("synthetic", syn)):
            x, y, ids = _pairs(group, field_name, measure)
            res: dict = {"n": int(x.size), "pearson_r": _pearson(x, y),
                         "mae_raw": float(np.mean(np.abs(y * to_requested - x))) if x.size else math.nan,
                         "mae_calibrated": math.nan, "mae_calibrated_requested_units": math.nan}
            if fit is not None and x.size:
                pred = fit[0] * x + fit[1]
                res["mae_calibrated"] = float(np.mean(np.abs(y - pred)))
                if abs(fit[0]) > 1e-12:
                    res["mae_calibrated_requested_units"] = res["mae_calibrated"] / abs(fit[0])
            res["points"] = [{"case_id": c, "requested": float(a), "measured": float(b)} for c, a, b in zip(ids, x, y)]
            entry[name] = res
        out[quantity] = entry
    return out


def _pairwise_rms(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """RMS distance between the rows of ``a`` and ``b`` (float64)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    d2 = (a**2).sum(1)[:, None] + (b**2).sum(1)[None, :] - 2.0 * a @ b.T
    return np.sqrt(np.maximum(d2, 0.0) / a.shape[1])


def memorisation_check(train_features: np.ndarray, train_ids: Sequence[str], syn_features: np.ndarray,
                       syn_ids: Sequence[str], percentile: float = 1.0, margin: float = 0.5) -> dict:
    """Flag synthetic cases much closer to a training case than training cases are to each other.

    The distance is the RMS difference of :func:`synthaug.evaluation.metrics.memorisation_features`.
    The threshold is ``margin`` times the ``percentile``-th percentile of the training
    cases' nearest-neighbour distances (within the training set); a synthetic case whose
    nearest training case is at or below it is flagged. A copy sits at noise level; an
    independent case at about the distance between two different people, and with few
    training cases the 1st percentile is about the smallest of those, hence the margin.
    """
    if len(train_ids) < 2:
        raise ValueError(f"memorisation check: the training cohort needs at least 2 cases, got {len(train_ids)}")
    if not 0.0 <= percentile <= 100.0:
        raise ValueError(f"memorisation percentile={percentile} must be in [0, 100]")
    if not margin > 0:
        raise ValueError(f"memorisation margin={margin} must be > 0")
    dtt = _pairwise_rms(train_features, train_features)
    np.fill_diagonal(dtt, np.inf)
    nn_train = dtt.min(axis=1)
    threshold = margin * float(np.percentile(nn_train, percentile))
    median_nn = float(np.median(nn_train))
    cases = []
    if len(syn_ids):
        dst = _pairwise_rms(syn_features, train_features)
        nearest = dst.argmin(axis=1)
        for i, cid in enumerate(syn_ids):
            d = float(dst[i, nearest[i]])
            cases.append({"case_id": cid, "nearest_training_case": train_ids[int(nearest[i])], "distance": d,
                          "ratio_to_median_training_nn": d / median_nn if median_nn > 0 else math.nan,
                          "training_nn_percentile": float(100.0 * np.mean(nn_train <= d)),
                          "flagged": bool(d <= threshold)})
    flagged = [c for c in cases if c["flagged"]]
    return {
        "feature": "CT and SUV, RAS, area-averaged to 16x16x32, scaled to [0, 1]; RMS distance",
        "percentile": percentile,
        "margin": margin,
        "threshold": threshold,
        "training_nn": {"n": int(nn_train.size), "min": float(nn_train.min()), "median": median_nn,
                        "max": float(nn_train.max())},
        "synthetic_nn": {"min": float(min(c["distance"] for c in cases)) if cases else math.nan,
                         "median": float(np.median([c["distance"] for c in cases])) if cases else math.nan},
        "n_flagged": len(flagged),
        "fraction_flagged": len(flagged) / len(cases) if cases else math.nan,
        "flagged": [c["case_id"] for c in flagged],
        "cases": cases,
    }


# --- reading and summarising cases -------------------------------------------------------------------


@dataclass
class CaseSummary:
    """What the evaluation keeps of one case: its measurements and two small pictures."""

    case_id: str
    demographics: Demographics | None
    values: dict[str, dict[str, float]]
    thumbs: dict | None = None
    features: np.ndarray | None = None
    meta: dict = field(default_factory=dict)


def _header_grid(path: Path) -> tuple[tuple[int, ...], np.ndarray]:
    import nibabel as nib

    try:
        img = nib.load(str(path))
    except Exception as err:  # nibabel raises many types for corrupt files
        raise OSError(f"cannot read NIfTI {path}: {type(err).__name__}: {err}") from None
    return tuple(img.shape[:3]), np.asarray(img.affine, dtype=np.float64)


def _check_cohort(cohort: Cohort, role: str, organs_dir: Path | None, need_organs: bool = True) -> None:
    """Fail before any work if a case lacks a file, an organ map, or has mismatched grids (headers only)."""
    from ..data.totalseg import find_totalseg

    for cid in cohort:
        folder = cohort.path(cid)
        for name in (CT_FILE, PET_FILE):
            if not (folder / name).is_file():
                raise CaseError(f"{role} case {cid}: missing {name} (expected {folder / name})")
        shape, affine = _header_grid(folder / CT_FILE)
        others = [folder / n for n in (PET_FILE, SEG_FILE, ORGANS_FILE) if (folder / n).is_file()]
        seg = find_totalseg(organs_dir, cid) if organs_dir is not None else None
        if organs_dir is not None and seg is None:
            raise CaseError(f"{role} case {cid}: no segmentation in {organs_dir} (expected {cid}.nii.gz or {cid}/)")
        if need_organs and organs_dir is None and not (folder / ORGANS_FILE).is_file():
            hint = ("pass `organs_dir` with a TotalSegmentator v2 'total' segmentation per case" if role == "reference"
                    else "synthetic cases must carry their organ map")
            raise CaseError(f"{role} case {cid}: no {ORGANS_FILE}; {hint}")
        if seg is not None and seg.is_file():
            others.append(seg)
        for path in others:
            s, a = _header_grid(path)
            if not same_grid(shape, affine, s, a):
                raise CaseError(f"{role} case {cid}: {path.name} grid {s} does not match {CT_FILE} grid {shape} "
                                f"(or their affines differ)")


def _validate_organs(case: Case, where: str) -> None:
    organs = case.organs
    if organs is None:
        raise CaseError(f"{where}: no organ map; organ-wise measurements need ORGANS.nii.gz or `organs_dir`")
    if organs.size and int(organs.max()) >= NUM_ORGAN_CLASSES:
        check_organ_map(organs, where=where)


def _iter_cohort(cohort: Cohort, role: str, organs_dir: Path | None, organs_map: str) -> Iterator[Case]:
    from ..data.totalseg import find_totalseg, read_totalseg, totalseg_to_synthaug

    for cid in cohort:
        case = cohort.load(cid, require_lesions=False)
        if case.demographics is None and isinstance(case.meta.get("demographics"), dict):
            try:
                case.demographics = Demographics(**case.meta["demographics"])
            except (TypeError, ValueError) as err:
                raise CaseError(f"{role} case {cid}: bad demographics in meta.json: {err}") from None
        where = f"{role} case {cid}: {ORGANS_FILE}"
        if organs_dir is not None:
            path = find_totalseg(organs_dir, cid)
            where = f"{role} case {cid}: {path}"
            labels, affine = read_totalseg(path, cid)
            if not same_grid(case.ct.shape, case.affine, labels.shape, affine):
                raise CaseError(f"{role} case {cid}: segmentation {path.name} grid {labels.shape} does not match "
                                f"{CT_FILE} grid {case.ct.shape} (or their affines differ)")
            if organs_map == "totalseg":
                case.organs = totalseg_to_synthaug(labels, case.ct, where=where)
            else:
                case.organs = np.asarray(labels)
        _validate_organs(case, where)
        yield case


def _iter_generated(generator: CaseGenerator, requests: Sequence[tuple[str, Demographics]], seed: int,
                    batch_size: int = 1) -> Iterator[Case]:
    """Cases for ``requests`` (reference id, demographics); case ``i`` from seed ``seed + i``, in batches."""
    for start in range(0, len(requests), batch_size):
        chunk = requests[start:start + batch_size]
        seeds = [seed + start + k for k in range(len(chunk))]
        cases = generator.sample([d for _, d in chunk], seed=seeds, progress=False)
        for (ref_id, demo), s, case in zip(chunk, seeds, cases):
            case.demographics = case.demographics or demo
            case.meta = {**case.meta, "reference_case": ref_id, "seed": s}
            yield case


def summarise(cases: Iterable[Case], *, total: int | None = None, desc: str = "measure", progress: bool = True,
              features: bool = False, ids: Sequence[str] | None = None) -> list[CaseSummary]:
    """Measure every case (:func:`synthaug.evaluation.metrics.measure_case`), with a progress bar."""
    from ..core.progress import progress_bar
    from .metrics import measure_case, memorisation_features, thumbnails

    out = []
    for i, case in enumerate(progress_bar(cases, total=total, desc=desc, disable=not progress, unit="case")):
        cid = str(ids[i] if ids is not None else case.meta.get("case_id") or f"case{i:04d}")
        if case.pet is None:
            raise CaseError(f"{desc}: case {cid} has no PET/SUV image")
        _validate_organs(case, f"case {cid}: organ map")
        out.append(CaseSummary(
            case_id=cid, demographics=case.demographics, values=measure_case(case), thumbs=thumbnails(case),
            features=memorisation_features(case) if features else None,
            meta={k: case.meta[k] for k in ("source", "seed", "reference_case") if k in case.meta},
        ))
    return out


def training_features(cohort: Cohort, progress: bool = True) -> tuple[list[str], np.ndarray]:
    """Memorisation features (:func:`synthaug.evaluation.metrics.memorisation_features`) of every training case."""
    from ..core.progress import progress_bar
    from .metrics import memorisation_features

    ids, feats = [], []
    for cid in progress_bar(cohort.case_ids, desc="training", disable=not progress, unit="case"):
        feats.append(memorisation_features(cohort.load(cid, require_lesions=False)))
        ids.append(cid)
    return ids, np.stack(feats)


# --- the evaluation ------------------------------------------------------------------------------------------


def _as_cohort(x, role: str, require_demographics: bool) -> Cohort:
    if isinstance(x, Cohort):
        if require_demographics and not x.demographics:
            raise FileNotFoundError(f"{role} cohort {x.root}: missing demographics.csv")
        return x
    return Cohort(x, require_demographics=require_demographics)


def reference_grid(cohort: Cohort) -> Grid:
    """The grid (shape, spacing) of the cohort's first case: the phantom baseline is generated on it."""
    cid = cohort.case_ids[0]
    shape, affine = _header_grid(cohort.path(cid) / CT_FILE)
    return Grid(shape, tuple(float(s) for s in np.linalg.norm(affine[:3, :3], axis=0)))


def evaluate_cohorts(
    reference: Cohort | str | Path,
    synthetic: Cohort | str | Path | Sequence[Case] | CaseGenerator,
    out: str | Path,
    training: Cohort | str | Path | None = None,
    *,
    baseline: CaseGenerator | str | None = "phantom",
    n_per_case: int = 1,
    batch_size: int = 1,
    organs_dir: str | Path | None = None,
    organs_map: str = "totalseg",
    min_cell: int = 5,
    alpha: float = 0.05,
    memorisation_percentile: float = 1.0,
    memorisation_margin: float = 0.5,
    seed: int = 0,
    progress: bool = True,
    plots: bool = True,
    synthetic_label: str | None = None,
) -> dict:
    """Compare synthetic cases with a reference cohort and write a report to ``out``.

    Args:
        reference: cohort folder (AutoPET layout, with ``demographics.csv``).
        synthetic: a cohort folder, a list of cases, or a :class:`CaseGenerator`, which
            then makes ``n_per_case`` cases per reference case with its demographics.
        out: report folder: ``metrics.json``, ``report.md`` and PNG plots.
        training: the generator's training cohort, for the memorisation check.
        baseline: ``"phantom"`` (the parametric phantom on the reference grid), another
            generator, or ``None`` (no baseline table).
        organs_dir: TotalSegmentator outputs for the reference cases (``<case>.nii.gz``
            or ``<case>/``), used instead of ``ORGANS.nii.gz``.
        organs_map: ``"totalseg"`` (v2 ``total`` ids, mapped by
            :data:`synthaug.data.totalseg.TOTALSEG_V2_TO_SYNTHAUG`) or ``"synthaug"``.
        min_cell: smallest number of cases, on each side, for a subgroup cell to be reported.
        alpha: false-discovery rate for the Benjamini-Hochberg correction.
        memorisation_percentile, memorisation_margin: flag synthetic cases at most
            ``margin`` x the ``percentile``-th percentile of training NN distances from a training case.
        seed: case ``i`` generated from ``seed + i``.
        batch_size: cases per ``generator.sample`` call (the result does not depend on it).
        plots: write the PNG plots (``False``: tables and JSON only).

    Returns:
        Everything written to ``metrics.json``.
    """
    # --- check every input before any work
    if min_cell < 1:
        raise ValueError(f"min_cell={min_cell} must be >= 1")
    if n_per_case < 1:
        raise ValueError(f"n_per_case={n_per_case} must be >= 1")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    if organs_map not in ORGANS_MAPS:
        raise ValueError(f"organs_map={organs_map!r}: choose one of {ORGANS_MAPS}")
    if not 0.0 <= memorisation_percentile <= 100.0:
        raise ValueError(f"memorisation percentile={memorisation_percentile} must be in [0, 100]")
    if not memorisation_margin > 0:
        raise ValueError(f"memorisation margin={memorisation_margin} must be > 0")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"report folder {out} exists and is not a folder")
    ref_cohort = _as_cohort(reference, "reference", True)
    organs_dir = Path(organs_dir) if organs_dir is not None else None
    if organs_dir is not None and not organs_dir.is_dir():
        raise FileNotFoundError(f"organs folder not found: {organs_dir}")
    _check_cohort(ref_cohort, "reference", organs_dir)
    requests = [(cid, ref_cohort.demographics[cid]) for cid in ref_cohort for _ in range(n_per_case)]
    syn_cohort = syn_cases = syn_gen = None
    if isinstance(synthetic, CaseGenerator) and not isinstance(synthetic, (str, Path)):
        syn_gen = synthetic
    elif isinstance(synthetic, (Cohort, str, Path)):
        syn_cohort = _as_cohort(synthetic, "synthetic", False)
        _check_cohort(syn_cohort, "synthetic", None)
    else:
        syn_cases = list(synthetic)
        if not syn_cases or not all(isinstance(c, Case) for c in syn_cases):
            raise ValueError("synthetic: expected a cohort folder, a non-empty list of Case, or a CaseGenerator")
    train_cohort = None
    if training is not None:
        train_cohort = _as_cohort(training, "training", False)
        if len(train_cohort) < 2:
            raise ValueError(f"training cohort {train_cohort.root}: the memorisation check needs at least 2 cases")
        _check_cohort(train_cohort, "training", None, need_organs=False)
    if isinstance(baseline, str):
        if baseline != "phantom":
            raise ValueError(f"baseline={baseline!r}: use 'phantom', a CaseGenerator or None")
        from ..sampling.generator import PhantomGenerator, cohort_phantom_version

        # A phantom reference cohort (e.g. the one the demo weights are evaluated on) gets its own version.
        baseline = PhantomGenerator(grid=reference_grid(ref_cohort), version=cohort_phantom_version(ref_cohort.root))
    want_features = train_cohort is not None

    # --- measure
    ref = summarise(_iter_cohort(ref_cohort, "reference", organs_dir, organs_map), total=len(ref_cohort),
                    desc="reference", progress=progress, features=want_features)
    ref_source = "phantom" if ref and all(s.meta.get("source") == "phantom" for s in ref) else "real"
    if syn_gen is not None:
        syn = summarise(_iter_generated(syn_gen, requests, seed, batch_size), total=len(requests), desc="synthetic",
                        progress=progress, features=want_features,
                        ids=[f"{rid}_s{k % n_per_case}" for k, (rid, _) in enumerate(requests)])
        syn_desc = synthetic_label or f"generator {type(syn_gen).__name__} ({n_per_case} per reference case)"
    elif syn_cohort is not None:
        syn = summarise(_iter_cohort(syn_cohort, "synthetic", None, "synthaug"), total=len(syn_cohort),
                        desc="synthetic", progress=progress, features=want_features)
        syn_desc = synthetic_label or f"cohort {syn_cohort.root}"
    else:
        syn = summarise(syn_cases, total=len(syn_cases), desc="synthetic", progress=progress, features=want_features)
        syn_desc = synthetic_label or f"{len(syn_cases)} cases"

    base = None
    if baseline is not None:
        same = (syn_gen is not None and n_per_case == 1 and getattr(syn_gen, "sha256", None) == baseline.sha256)
        if same:
            base = syn
        else:
            base_req = [(cid, ref_cohort.demographics[cid]) for cid in ref_cohort]
            base = summarise(_iter_generated(baseline, base_req, seed, batch_size), total=len(base_req), desc="baseline",
                             progress=progress, ids=[f"{cid}_baseline" for cid, _ in base_req])

    memo = None
    if train_cohort is not None:
        train_ids, train_features = training_features(train_cohort, progress=progress)
        memo = memorisation_check(train_features, train_ids,
                                  np.stack([s.features for s in syn]), [s.case_id for s in syn],
                                  memorisation_percentile, memorisation_margin)

    # --- compare
    comparison = compare_cohorts(ref, syn, min_cell=min_cell, alpha=alpha)
    base_cmp = compare_cohorts(ref, base, min_cell=min_cell, alpha=alpha) if base is not None else None
    fidelity = conditioning_fidelity(ref, syn)
    from .. import __version__
    from ..core.geometry import BODY_HU
    from .metrics import SUV_PEAK_VOLUME_ML, TISSUE_DENSITY

    result = {
        "synthaug_version": __version__,
        "settings": {"seed": seed, "min_cell": min_cell, "alpha": alpha, "n_per_case": n_per_case,
                     "memorisation_percentile": memorisation_percentile, "memorisation_margin": memorisation_margin,
                     "organs_map": organs_map,
                     "organs_dir": str(organs_dir) if organs_dir else None, "suv_peak_volume_ml": SUV_PEAK_VOLUME_ML,
                     "body_hu_threshold": BODY_HU, "tissue_density_g_per_ml": TISSUE_DENSITY,
                     "age_bands": AGE_BANDS, "bmi_bands": BMI_BANDS},
        "reference": {"path": str(ref_cohort.root), "n_cases": len(ref), "source": ref_source},
        "synthetic": {"description": syn_desc, "n_cases": len(syn),
                      "generator_sha256": getattr(syn_gen, "sha256", None),
                      "generator_settings": getattr(syn_gen, "settings", None)},
        "comparison": comparison,
        "baseline": None if base_cmp is None else {
            "description": "parametric phantom generated for the reference demographics",
            "generator_sha256": baseline.sha256, "same_as_synthetic": base is syn, "comparison": base_cmp},
        "fidelity": fidelity,
        "memorisation": memo,
        "cases": {name: [{"case_id": s.case_id, "demographics": s.demographics.to_dict() if s.demographics else None,
                          **s.meta, "values": s.values} for s in group]
                  for name, group in (("reference", ref), ("synthetic", syn), ("baseline", base)) if group is not None},
    }
    out.mkdir(parents=True, exist_ok=True)
    result["plots"] = write_plots(out, ref, syn, comparison, fidelity) if plots else []
    result = _clean(result)
    atomic_write_text(out / "report.md", render_report(result))
    atomic_write_json(out / "metrics.json", result)
    return result


def _clean(obj):
    """JSON-safe copy: NaN/inf -> None, numpy scalars -> Python, tuples -> lists."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


# --- the report --------------------------------------------------------------------------------------------------


def _f(x, digits: int = 1, sign: bool = False) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    if abs(x) >= 1e4:
        return f"{x:+.0f}" if sign else f"{x:.0f}"
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def _ordinal(p: float) -> str:
    if p != int(p):
        return f"{p:g}th"
    n = int(p)
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _q(q) -> str:
    if q is None:
        return "–"
    return f"{q:.2g}" if q >= 1e-3 else "<0.001"


def _organ_table(cmp: dict) -> list[str]:
    rows = {(r["organ"], r["metric"]): r for r in cmp["rows"] if r["cell"] == "all"}
    lines = ["| organ | n ref / syn | volume ref (ml) | syn | dev % | SUVmean ref | syn | dev % | q | "
             "SUVmax dev % | SUVpeak dev % | CT median ref (HU) | syn | Δ HU | main part ref (%) | syn |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def key(o):
        d = rows[(o, "suv_mean")]["deviation_pct"]
        return -abs(d) if d is not None else 0.0

    for organ in sorted(ORGANS, key=key):
        v, s, mx, pk, ct, mp = (rows[(organ, m)] for m in ORGAN_METRICS)
        lines.append(
            f"| {organ} | {s['n_ref']} / {s['n_syn']} | {_f(v['ref_mean'])} | {_f(v['syn_mean'])} | "
            f"{_f(v['deviation_pct'], 1, True)} | {_f(s['ref_mean'], 2)} | {_f(s['syn_mean'], 2)} | "
            f"{_f(s['deviation_pct'], 1, True)} | {_q(s['q'])} | {_f(mx['deviation_pct'], 1, True)} | "
            f"{_f(pk['deviation_pct'], 1, True)} | {_f(ct['ref_mean'], 0)} | {_f(ct['syn_mean'], 0)} | "
            f"{_f(ct['difference'], 0, True)} | {_f(mp['ref_mean'])} | {_f(mp['syn_mean'])} |")
    lines += ["", "| whole body | ref mean | syn mean | dev % | W1 | KS | q |", "|---|---|---|---|---|---|---|"]
    for m in BODY_METRICS:
        r = rows[("body", m)]
        lines.append(f"| {m} | {_f(r['ref_mean'])} | {_f(r['syn_mean'])} | {_f(r['deviation_pct'], 1, True)} | "
                     f"{_f(r['wasserstein'], 2)} | {_f(r['ks'], 2)} | {_q(r['q'])} |")
    return lines


def _top_deviations(cmp: dict, n: int = 25) -> list[str]:
    rows = [r for r in cmp["rows"] if r["cell"] != "all" and r["deviation_pct"] is not None
            and r["metric"] in ("volume_ml", "suv_mean", "suv_max", "suv_peak")]
    rows.sort(key=lambda r: -abs(r["deviation_pct"]))
    lines = ["| subgroup | organ | metric | n ref / syn | ref mean | syn mean | dev % | W1 | KS | q |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows[:n]:
        lines.append(f"| {r['cell']} | {r['organ']} | {r['metric']} | {r['n_ref']} / {r['n_syn']} | "
                     f"{_f(r['ref_mean'], 2)} | {_f(r['syn_mean'], 2)} | {_f(r['deviation_pct'], 1, True)} | "
                     f"{_f(r['wasserstein'], 2)} | {_f(r['ks'], 2)} | {_q(r['q'])} |")
    if not rows:
        lines.append("| (no subgroup cell reached the minimum size) | | | | | | | | | |")
    return lines


def render_report(result: dict) -> str:
    """``report.md`` from the result of :func:`evaluate_cohorts`."""
    cmp, s = result["comparison"], result["comparison"]["summary"]
    settings = result["settings"]
    lines = [
        "# synthaug evaluation",
        "",
        f"Reference: `{result['reference']['path']}` ({result['reference']['n_cases']} cases, "
        f"{result['reference']['source']}). Synthetic: {result['synthetic']['description']} "
        f"({result['synthetic']['n_cases']} cases). Seed {settings['seed']}; subgroup cells need at least "
        f"{settings['min_cell']} cases on each side; p-values: two-sample KS, Benjamini-Hochberg q "
        f"(FDR {settings['alpha']}). Definitions: `docs/evaluation.md`.",
        "",
        "## Summary",
        "",
        f"- SUVmean, all cases: median |deviation| {_f(s['suv_mean_abs_deviation_pct_median'])} % over "
        f"{s['organs_compared']} organs, largest {_f(s['suv_mean_abs_deviation_pct_max'])} % "
        f"({s['suv_mean_worst_organ'] or '–'}); {s['organs_suv_mean_within_5pct']} of {s['organs_compared']} "
        f"organs within 5 %.",
        f"- {s['significant']} of {s['tests']} comparisons (subgroup x organ x metric) differ after "
        f"Benjamini-Hochberg correction (q < {s['alpha']}).",
    ]
    fid = result["fidelity"]
    for quantity in ("height", "weight"):
        syn = fid[quantity]["synthetic"]
        lines.append(f"- Conditioning, {quantity}: Pearson r {_f(syn['pearson_r'], 2)}, calibrated MAE "
                     f"{_f(syn['mae_calibrated_requested_units'])} {'cm' if quantity == 'height' else 'kg'} "
                     f"(reference itself: {_f(fid[quantity]['reference']['mae_calibrated_requested_units'])}).")
    memo = result.get("memorisation")
    if memo:
        lines.append(f"- Memorisation: {memo['n_flagged']} of {len(memo['cases'])} synthetic cases "
                     f"({_f(100 * (memo['fraction_flagged'] or 0.0))} %) within {memo['margin']:g} x the "
                     f"{_ordinal(memo['percentile'])} percentile of training nearest-neighbour distances of a training case.")
    if result["reference"]["source"] == "phantom":
        lines.append("- Note: the reference is itself a phantom cohort, so the phantom baseline is trivially "
                     "close to it; on real data the baseline table is the headline comparison.")
    lines += ["", "## Organ-wise agreement, all cases (largest SUVmean deviation first)", "", *_organ_table(cmp),
              "", "## Largest deviations by subgroup", ""]
    lines += [f"Cells reported: {', '.join(c['name'] for c in cmp['cells'])}.", "", *_top_deviations(cmp)]
    base = result.get("baseline")
    lines += ["", "## Baseline: parametric phantom vs reference", ""]
    if base is None:
        lines.append("No baseline was computed.")
    else:
        b = base["comparison"]["summary"]
        note = " (the synthetic cases are themselves the phantom)" if base["same_as_synthetic"] else ""
        lines += [f"The phantom generated for the reference demographics{note}: SUVmean median |deviation| "
                  f"{_f(b['suv_mean_abs_deviation_pct_median'])} %, largest {_f(b['suv_mean_abs_deviation_pct_max'])} "
                  f"% ({b['suv_mean_worst_organ'] or '–'}); {b['significant']} of {b['tests']} comparisons differ "
                  f"(q < {b['alpha']}).", "", *_organ_table(base["comparison"])]
    lines += ["", "## Conditioning fidelity", "",
              "Measured height: head-foot extent of the body mask; measured weight: body mass from tissue "
              "densities. Calibration `measured = a * requested + b` fitted on the reference cohort.", "",
              "| quantity | cohort | n | Pearson r | raw MAE | calibration a, b | calibrated MAE | "
              "calibrated MAE (requested units) |", "|---|---|---|---|---|---|---|---|"]
    for quantity, unit, munit in (("height", "cm", "mm"), ("weight", "kg", "kg")):
        cal = fid[quantity]["calibration"]
        cal_s = "–" if cal is None else f"{cal['a']:.3g}, {cal['b']:.3g}"
        for name in ("reference", "synthetic"):
            r = fid[quantity][name]
            lines.append(f"| {quantity} | {name} | {r['n']} | {_f(r['pearson_r'], 2)} | {_f(r['mae_raw'])} {unit} | "
                         f"{cal_s} | {_f(r['mae_calibrated'])} {munit} | "
                         f"{_f(r['mae_calibrated_requested_units'])} {unit} |")
    lines += ["", "## Memorisation", ""]
    if not memo:
        lines.append("Not checked (no training cohort given).")
    else:
        tn = memo["training_nn"]
        lines += [f"Feature: {memo['feature']}. Training nearest-neighbour distances: min {tn['min']:.4g}, median "
                  f"{tn['median']:.4g}, max {tn['max']:.4g} (n = {tn['n']}); threshold ({memo['margin']:g} x the "
                  f"{_ordinal(memo['percentile'])} percentile) {memo['threshold']:.4g}. Synthetic nearest-training distances: min "
                  f"{_f(memo['synthetic_nn']['min'], 4)}, median {_f(memo['synthetic_nn']['median'], 4)}. "
                  f"Flagged: {memo['n_flagged']} of {len(memo['cases'])}.", ""]
        if memo["flagged"]:
            lines += ["| synthetic case | nearest training case | distance |", "|---|---|---|"]
            for c in [c for c in memo["cases"] if c["flagged"]][:20]:
                lines.append(f"| {c['case_id']} | {c['nearest_training_case']} | {c['distance']:.4g} |")
    if result.get("plots"):
        lines += ["", "## Plots", ""]
        lines += [f"![{p}]({p})" for p in result["plots"]]
    return "\n".join(lines) + "\n"


# --- plots ---------------------------------------------------------------------------------------------------


def _save_png(fig, path: Path) -> None:
    """Save ``fig`` atomically as a PNG below :data:`MAX_PNG_BYTES` (lowering the resolution if needed)."""
    import matplotlib.pyplot as plt

    data = b""
    for dpi in (90, 72, 56, 44, 34):
        buf = _io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
        data = buf.getvalue()
        if len(data) < MAX_PNG_BYTES:
            break
    plt.close(fig)
    atomic_write_bytes(path, data)


def write_plots(out: Path, ref: Sequence[CaseSummary], syn: Sequence[CaseSummary], comparison: dict,
                fidelity: dict) -> list[str]:
    """Box plots, deviation heat map, requested-vs-measured scatter and an image montage; returns file names."""
    import matplotlib

    matplotlib.use("Agg")
    files = []
    for metric in ("suv_mean", "volume_ml"):
        _save_png(_boxplot(ref, syn, comparison, metric), out / f"boxplot_{metric}.png")
        files.append(f"boxplot_{metric}.png")
    _save_png(_heatmap(comparison), out / "deviation_heatmap.png")
    files.append("deviation_heatmap.png")
    _save_png(_scatter(fidelity), out / "conditioning.png")
    files.append("conditioning.png")
    fig = _montage(ref, syn)
    if fig is not None:
        _save_png(fig, out / "montage.png")
        files.append("montage.png")
    return files


REF_COLOUR, SYN_COLOUR = "#9e9e9e", "#d95f02"
METRIC_TITLES = {"suv_mean": "SUVmean", "volume_ml": "volume (ml)", "suv_max": "SUVmax", "suv_peak": "SUVpeak"}


def _single_factor_cells(ref, syn, comparison) -> list[tuple[str, np.ndarray, np.ndarray]]:
    names = {c["name"] for c in comparison["cells"] if len(c["factors"]) <= 1}
    cells = subgroup_cells([s.demographics for s in ref], [s.demographics for s in syn], 1)
    return [(c["name"], c["ref_index"], c["syn_index"]) for c in cells if c["name"] in names]


def _boxplot(ref, syn, comparison, metric):
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    rt, st = _table(ref), _table(syn)
    cells = _single_factor_cells(ref, syn, comparison)
    ncols = 4
    nrows = math.ceil(len(ORGANS) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 2.6 * nrows), squeeze=False)
    for ax, organ in zip(axes.ravel(), ORGANS):
        for values, k, dx, colour in ((rt[(organ, metric)], 1, -0.2, REF_COLOUR), (st[(organ, metric)], 2, 0.2,
                                                                                    SYN_COLOUR)):
            data, pos = [], []
            for g, cell in enumerate(cells):
                v = values[cell[k]]
                v = v[np.isfinite(v)]
                if v.size:
                    data.append(v)
                    pos.append(g + dx)
            if data:
                ax.boxplot(data, positions=pos, widths=0.36, patch_artist=True, showfliers=False,
                           medianprops={"color": "black", "linewidth": 1}, boxprops={"facecolor": colour})
        ax.set_title(organ, fontsize=9)
        ax.set_xticks(range(len(cells)))
        ax.set_xticklabels([c[0] for c in cells], rotation=60, fontsize=7, ha="right")
        ax.tick_params(axis="y", labelsize=7)
    for ax in axes.ravel()[len(ORGANS):]:
        ax.axis("off")
    axes.ravel()[-1].legend(handles=[Patch(color=REF_COLOUR, label="reference"), Patch(color=SYN_COLOUR,
                            label="synthetic")], loc="center", fontsize=9)
    fig.suptitle(f"{METRIC_TITLES.get(metric, metric)} by organ and subgroup", fontsize=11)
    fig.tight_layout()
    return fig


def _heatmap(comparison):
    import matplotlib.pyplot as plt

    cells = [c["name"] for c in comparison["cells"]]
    rows = {(r["cell"], r["organ"], r["metric"]): r["deviation_pct"] for r in comparison["rows"]}
    fig, axes = plt.subplots(1, 2, figsize=(max(9.0, 2.5 + 0.64 * len(cells)), 5.0), squeeze=False)
    for ax, metric in zip(axes[0], ("suv_mean", "volume_ml")):
        m = np.array([[rows.get((c, o, metric)) if rows.get((c, o, metric)) is not None else np.nan for c in cells]
                      for o in ORGANS], dtype=float)
        finite = np.abs(m[np.isfinite(m)])
        vmax = float(min(max(finite.max() if finite.size else 0.0, 5.0), 50.0))
        im = ax.imshow(m, cmap="RdBu_r", vmin=-vmax, vmax=vmax, aspect="auto")
        ax.set_yticks(range(len(ORGANS)))
        ax.set_yticklabels(ORGANS, fontsize=8)
        ax.set_xticks(range(len(cells)))
        ax.set_xticklabels(cells, rotation=75, fontsize=7, ha="right")
        ax.set_title(f"{METRIC_TITLES[metric]} deviation (%)", fontsize=10)
        fig.colorbar(im, ax=ax, fraction=0.04)
    fig.tight_layout()
    return fig


def _scatter(fidelity):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    for ax, (quantity, unit, munit) in zip(axes, (("height", "cm", "mm"), ("weight", "kg", "kg"))):
        entry = fidelity[quantity]
        for name, style in (("reference", {"s": 36, "facecolors": "none", "edgecolors": "#555555"}),
                            ("synthetic", {"s": 12, "color": SYN_COLOUR, "alpha": 0.7})):
            pts = entry[name]["points"]
            if pts:
                ax.scatter([p["requested"] for p in pts], [p["measured"] for p in pts], **style,
                           label=f"{name} (r={_f(entry[name]['pearson_r'], 2)})")
        cal = entry["calibration"]
        xs = [p["requested"] for n in ("reference", "synthetic") for p in entry[n]["points"]]
        if cal is not None and xs:
            x = np.array([min(xs), max(xs)])
            ax.plot(x, cal["a"] * x + cal["b"], color="black", linewidth=1, label="reference calibration")
        ax.set_xlabel(f"requested {quantity} ({unit})")
        ax.set_ylabel(f"measured {entry['measured']} ({munit})")
        ax.legend(fontsize=8)
    fig.suptitle("Conditioning fidelity", fontsize=11)
    fig.tight_layout()
    return fig


def _demo_distance(a: Demographics | None, b: Demographics | None) -> float:
    if a is None or b is None:
        return 1e6
    d = 0.0 if a.sex == b.sex else 100.0
    for field_name, scale in (("age", 15.0), ("height_cm", 10.0), ("weight_kg", 15.0)):
        x, y = getattr(a, field_name), getattr(b, field_name)
        d += 3.0 if x is None or y is None else abs(x - y) / scale
    return d


def montage_pairs(ref: Sequence[CaseSummary], syn: Sequence[CaseSummary], n: int = 4) -> list[tuple[int, int]]:
    """Up to ``n`` (reference, synthetic) index pairs with matched demographics, spread over the reference cohort."""
    if not ref or not syn:
        return []
    order = sorted(range(len(ref)), key=lambda i: (str(getattr(ref[i].demographics, "sex", "")),
                                                   getattr(ref[i].demographics, "height_cm", None) or 0.0,
                                                   ref[i].case_id))
    picks = sorted({order[int(round(k))] for k in np.linspace(0, len(order) - 1, min(n, len(order)))})
    pairs = []
    for i in picks:
        linked = [j for j, s in enumerate(syn) if s.meta.get("reference_case") == ref[i].case_id]
        j = linked[0] if linked else min(range(len(syn)), key=lambda j: (_demo_distance(ref[i].demographics,
                                                                                          syn[j].demographics), j))
        pairs.append((i, j))
    return pairs


def _label(s: CaseSummary) -> str:
    d = s.demographics
    if d is None:
        return s.case_id
    parts = [d.sex or "?", "?" if d.age is None else f"{d.age:.0f} y", "?" if d.height_cm is None else
             f"{d.height_cm:.0f} cm", "?" if d.weight_kg is None else f"{d.weight_kg:.0f} kg"]
    return " ".join(parts)


def _montage(ref, syn):
    import matplotlib.pyplot as plt

    pairs = montage_pairs(ref, syn)
    if not pairs:
        return None
    fig, axes = plt.subplots(2, 2 * len(pairs), figsize=(2.0 * 2 * len(pairs), 7.0), squeeze=False)
    for p, (i, j) in enumerate(pairs):
        for k, (s, tag) in enumerate(((ref[i], "reference"), (syn[j], "synthetic"))):
            col = 2 * p + k
            t = s.thumbs
            axes[0, col].imshow(t["pet_mip"].astype(np.float32), cmap="gray_r", vmin=0, vmax=5.0, aspect=t["aspect"],
                                interpolation="nearest")
            axes[1, col].imshow(t["ct_slice"].astype(np.float32), cmap="gray", vmin=-400, vmax=600,
                                aspect=t["aspect"], interpolation="nearest")
            axes[0, col].set_title(f"{tag}\n{s.case_id[:18]}\n{_label(s)}", fontsize=7)
            for r in range(2):
                axes[r, col].set_xticks([])
                axes[r, col].set_yticks([])
    axes[0, 0].set_ylabel("PET MIP (SUV 0-5)", fontsize=8)
    axes[1, 0].set_ylabel("CT coronal (-400..600 HU)", fontsize=8)
    fig.tight_layout()
    return fig

"""Cohort comparisons of the evaluation: subgroup cells, per-metric statistics with the
Benjamini-Hochberg correction, conditioning fidelity and the memorisation check.

Everything here works on :class:`~synthaug.evaluation.cases.CaseSummary` lists (or plain arrays)
and returns JSON-ready dicts; the definitions are in ``docs/evaluation.md``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np

from ..core.demographics import Demographics
from .cases import CaseSummary
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
                   "brain_to_bladder_mm", "body_mass_kg", "lesion_volume_ml", "lesion_count", "lesion_suv_max", "lesion_suv_mean")


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


def metric_table(summaries: Sequence[CaseSummary]) -> dict[tuple[str, str], np.ndarray]:
    """(organ, metric) -> values over the cases."""
    keys = [(o, m) for o in ORGANS for m in ORGAN_METRICS] + [("body", m) for m in BODY_METRICS]
    return {k: np.array([s.values[k[0]][k[1]] for s in summaries], dtype=float) for k in keys}


def compare_cohorts(ref: Sequence[CaseSummary], syn: Sequence[CaseSummary], *, min_cell: int = 5,
                    alpha: float = 0.05) -> dict:
    """Every (subgroup cell, organ, metric): synthetic vs reference (see :func:`compare_samples`), BH-corrected."""
    cells = subgroup_cells([s.demographics for s in ref], [s.demographics for s in syn], min_cell)
    rt, st = metric_table(ref), metric_table(syn)
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


#: quantity -> (demographics field, measurement, factor from measurement to the requested unit for the raw MAE,
#: ``None`` where the measurement is not the requested quantity itself and no raw MAE is meant). Height is
#: measured twice: by the body's extent, which the field of view cuts (on whole-body scans it follows the
#: protocol more than the person), and by the brain-to-bladder distance, which lies inside every such scan.
FIDELITY_QUANTITIES = {
    "height": ("height_cm", "body_extent_mm", 0.1),
    "height_landmarks": ("height_cm", "brain_to_bladder_mm", None),
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
    """Requested vs measured height (body extent; brain-to-bladder distance) and weight (estimated body mass).

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
                         "mae_raw": float(np.mean(np.abs(y * to_requested - x))) if x.size and to_requested else math.nan,
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

"""The evaluation's text outputs: ``report.md`` (tables, largest deviations first) and ``metrics.json``.

:func:`render_report` turns the result of :func:`synthaug.evaluation.evaluate.evaluate_cohorts`
into markdown; :func:`write_report` makes the result JSON-safe and writes both files.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..core.io import atomic_write_json, atomic_write_text
from .compare import FIDELITY_QUANTITIES
from .metrics import BODY_METRICS, ORGAN_METRICS, ORGANS


def json_safe(obj):
    """JSON-safe copy: NaN/inf -> None, numpy scalars -> Python, tuples -> lists."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def write_report(out: Path, result: dict) -> dict:
    """Write ``report.md`` and ``metrics.json`` of ``result`` into ``out``; returns the JSON-safe result."""
    result = json_safe(result)
    atomic_write_text(out / "report.md", render_report(result))
    atomic_write_json(out / "metrics.json", result)
    return result


# --- formatting -----------------------------------------------------------------------------------------------


def fmt(x, digits: int = 1, sign: bool = False) -> str:
    """A number for a table: ``digits`` decimals (none from 1e4 on), ``+`` with ``sign``, ``–`` for None/NaN."""
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
            f"| {organ} | {s['n_ref']} / {s['n_syn']} | {fmt(v['ref_mean'])} | {fmt(v['syn_mean'])} | "
            f"{fmt(v['deviation_pct'], 1, True)} | {fmt(s['ref_mean'], 2)} | {fmt(s['syn_mean'], 2)} | "
            f"{fmt(s['deviation_pct'], 1, True)} | {_q(s['q'])} | {fmt(mx['deviation_pct'], 1, True)} | "
            f"{fmt(pk['deviation_pct'], 1, True)} | {fmt(ct['ref_mean'], 0)} | {fmt(ct['syn_mean'], 0)} | "
            f"{fmt(ct['difference'], 0, True)} | {fmt(mp['ref_mean'])} | {fmt(mp['syn_mean'])} |")
    lines += ["", "| whole body | ref mean | syn mean | dev % | W1 | KS | q |", "|---|---|---|---|---|---|---|"]
    for m in BODY_METRICS:
        r = rows[("body", m)]
        lines.append(f"| {m} | {fmt(r['ref_mean'])} | {fmt(r['syn_mean'])} | {fmt(r['deviation_pct'], 1, True)} | "
                     f"{fmt(r['wasserstein'], 2)} | {fmt(r['ks'], 2)} | {_q(r['q'])} |")
    return lines


def _top_deviations(cmp: dict, n: int = 25) -> list[str]:
    rows = [r for r in cmp["rows"] if r["cell"] != "all" and r["deviation_pct"] is not None
            and r["metric"] in ("volume_ml", "suv_mean", "suv_max", "suv_peak")]
    rows.sort(key=lambda r: -abs(r["deviation_pct"]))
    lines = ["| subgroup | organ | metric | n ref / syn | ref mean | syn mean | dev % | W1 | KS | q |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows[:n]:
        lines.append(f"| {r['cell']} | {r['organ']} | {r['metric']} | {r['n_ref']} / {r['n_syn']} | "
                     f"{fmt(r['ref_mean'], 2)} | {fmt(r['syn_mean'], 2)} | {fmt(r['deviation_pct'], 1, True)} | "
                     f"{fmt(r['wasserstein'], 2)} | {fmt(r['ks'], 2)} | {_q(r['q'])} |")
    if not rows:
        lines.append("| (no subgroup cell reached the minimum size) | | | | | | | | | |")
    return lines


# --- report.md ------------------------------------------------------------------------------------------------


def render_report(result: dict) -> str:
    """``report.md`` from the result of :func:`synthaug.evaluation.evaluate.evaluate_cohorts`."""
    cmp = result["comparison"]
    lines = _summary(result)
    lines += ["", "## Organ-wise agreement, all cases (largest SUVmean deviation first)", "", *_organ_table(cmp),
              "", "## Largest deviations by subgroup", ""]
    lines += [f"Cells reported: {', '.join(c['name'] for c in cmp['cells'])}.", "", *_top_deviations(cmp)]
    lines += _baseline_section(result.get("baseline"))
    lines += _fidelity_section(result["fidelity"])
    lines += _memorisation_section(result.get("memorisation"))
    if result.get("plots"):
        lines += ["", "## Plots", ""]
        lines += [f"![{p}]({p})" for p in result["plots"]]
    return "\n".join(lines) + "\n"


def _summary(result: dict) -> list[str]:
    """The title, what was compared, and the summary's bullet points."""
    s = result["comparison"]["summary"]
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
        f"- SUVmean, all cases: median |deviation| {fmt(s['suv_mean_abs_deviation_pct_median'])} % over "
        f"{s['organs_compared']} organs, largest {fmt(s['suv_mean_abs_deviation_pct_max'])} % "
        f"({s['suv_mean_worst_organ'] or '–'}); {s['organs_suv_mean_within_5pct']} of {s['organs_compared']} "
        f"organs within 5 %.",
        f"- {s['significant']} of {s['tests']} comparisons (subgroup x organ x metric) differ after "
        f"Benjamini-Hochberg correction (q < {s['alpha']}).",
    ]
    fid = result["fidelity"]
    for quantity, (field_name, measure, _) in FIDELITY_QUANTITIES.items():
        if quantity not in fid:  # results written before the quantity was measured
            continue
        syn, unit = fid[quantity]["synthetic"], _units(field_name, measure)[0]
        lines.append(f"- Conditioning, {quantity} ({measure}): Pearson r {fmt(syn['pearson_r'], 2)}, calibrated MAE "
                     f"{fmt(syn['mae_calibrated_requested_units'])} {unit} "
                     f"(reference itself: {fmt(fid[quantity]['reference']['mae_calibrated_requested_units'])}).")
    memo = result.get("memorisation")
    if memo:
        lines.append(f"- Memorisation: {memo['n_flagged']} of {len(memo['cases'])} synthetic cases "
                     f"({fmt(100 * (memo['fraction_flagged'] or 0.0))} %) within {memo['margin']:g} x the "
                     f"{_ordinal(memo['percentile'])} percentile of training nearest-neighbour distances of a training case.")
    if result["reference"]["source"] == "phantom":
        lines.append("- Note: the reference is itself a phantom cohort, so the phantom baseline is trivially "
                     "close to it; on real data the baseline table is the headline comparison.")
    return lines


def _baseline_section(base: dict | None) -> list[str]:
    lines = ["", "## Baseline: parametric phantom vs reference", ""]
    if base is None:
        lines.append("No baseline was computed.")
    else:
        b = base["comparison"]["summary"]
        note = " (the synthetic cases are themselves the phantom)" if base["same_as_synthetic"] else ""
        lines += [f"The phantom generated for the reference demographics{note}: SUVmean median |deviation| "
                  f"{fmt(b['suv_mean_abs_deviation_pct_median'])} %, largest {fmt(b['suv_mean_abs_deviation_pct_max'])} "
                  f"% ({b['suv_mean_worst_organ'] or '–'}); {b['significant']} of {b['tests']} comparisons differ "
                  f"(q < {b['alpha']}).", "", *_organ_table(base["comparison"])]
    return lines


def _units(field_name: str, measure: str) -> tuple[str, str]:
    """The units of a fidelity quantity's requested field and measurement, as their names end
    (``height_cm``, ``body_extent_mm``)."""
    return field_name.rsplit("_", 1)[1], measure.rsplit("_", 1)[1]


def _fidelity_section(fid: dict) -> list[str]:
    lines = ["", "## Conditioning fidelity", "",
             "Measured height: head-foot extent of the body mask (`height`), which the field of view cuts, and the "
             "distance along the body axis between the brain's and the bladder's centroids (`height_landmarks`), "
             "which it does not; measured weight: body mass from tissue densities. Calibration "
             "`measured = a * requested + b` fitted on the reference cohort.", "",
             "| quantity | cohort | n | Pearson r | raw MAE | calibration a, b | calibrated MAE | "
             "calibrated MAE (requested units) |", "|---|---|---|---|---|---|---|---|"]
    for quantity, (field_name, measure, _) in FIDELITY_QUANTITIES.items():
        if quantity not in fid:
            continue
        unit, munit = _units(field_name, measure)
        cal = fid[quantity]["calibration"]
        cal_s = "–" if cal is None else f"{cal['a']:.3g}, {cal['b']:.3g}"
        for name in ("reference", "synthetic"):
            r = fid[quantity][name]
            lines.append(f"| {quantity} | {name} | {r['n']} | {fmt(r['pearson_r'], 2)} | {fmt(r['mae_raw'])} {unit} | "
                         f"{cal_s} | {fmt(r['mae_calibrated'])} {munit} | "
                         f"{fmt(r['mae_calibrated_requested_units'])} {unit} |")
    return lines


def _memorisation_section(memo: dict | None) -> list[str]:
    lines = ["", "## Memorisation", ""]
    if not memo:
        lines.append("Not checked (no training cohort given).")
        return lines
    tn = memo["training_nn"]
    lines += [f"Feature: {memo['feature']}. Training nearest-neighbour distances: min {tn['min']:.4g}, median "
              f"{tn['median']:.4g}, max {tn['max']:.4g} (n = {tn['n']}); threshold ({memo['margin']:g} x the "
              f"{_ordinal(memo['percentile'])} percentile) {memo['threshold']:.4g}. Synthetic nearest-training distances: min "
              f"{fmt(memo['synthetic_nn']['min'], 4)}, median {fmt(memo['synthetic_nn']['median'], 4)}. "
              f"Flagged: {memo['n_flagged']} of {len(memo['cases'])}.", ""]
    if memo["flagged"]:
        lines += ["| synthetic case | nearest training case | distance |", "|---|---|---|"]
        for c in [c for c in memo["cases"] if c["flagged"]][:20]:
            lines.append(f"| {c['case_id']} | {c['nearest_training_case']} | {c['distance']:.4g} |")
    return lines

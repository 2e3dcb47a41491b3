"""Measure the demo weights against the held-out phantom test cohort for the model card.

Runs ``synthaug.evaluation.evaluate.evaluate_cohorts`` (the full report) and adds the model card's
acceptance checks: per organ and sex, mean volume and mean SUV within 10 % of the test
cohort; organ median HU and mean SUV inside the phantom's documented ranges (the labels
match the images); brain > liver > muscle/soft tissue > fat SUV ordering; conditioning
correlations. Writes ``acceptance.json`` and ``acceptance.md`` next to the report. The
volume and SUV checks are also made for the report's phantom baseline (fresh phantoms for
the test cohort's demographics, other seeds): how often the phantom generator itself passes
them against its own test cohort is the noise floor of the 10 % check. Beside the means, the
distribution-level agreement (``distribution``): how many of the report's subgroup x organ x metric
comparisons (two-sample KS) differ after the Benjamini-Hochberg correction, in all and per metric,
for the synthetic cases and the phantom baseline, and per organ the deviation of the mean SUVmax and
SUVpeak over all cases, with the organs whose mean peak is off by more than 10 %.

    python scripts/evaluate_demo_weights.py --weights synthaug/weights \
        --reference data/phantom_test --training data/phantom_train --out synthaug/weights/evaluation

Sampling dominates the time; to use every core, generate the synthetic cohort first in
parallel shards (one thread each) and pass it with ``--synthetic``:

    for i in 0 1; do OMP_NUM_THREADS=1 synthaug generate --weights synthaug/weights --format nifti \
        --demographics data/phantom_test/demographics.csv --out runs/eval_syn --shard $i/2 & done; wait
    synthaug cache merge runs/eval_syn
    python scripts/evaluate_demo_weights.py --synthetic runs/eval_syn --reference data/phantom_test ...

To redo only the acceptance checks of an existing report (e.g. after this script changed):

    python scripts/evaluate_demo_weights.py --metrics runs/eval/metrics.json --out runs/eval
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from synthaug.core.io import atomic_write_json, atomic_write_text
from synthaug.core.labels import ORGAN_LABELS, ORGAN_PARTS
from synthaug.data.cache import load_manifest
from synthaug.evaluation.evaluate import evaluate_cohorts
from synthaug.phantom.tables import ORGAN_HU_RANGE, ORGAN_SUV_RANGE
from synthaug.sampling.cascade import CascadedSampler

ORGANS = [name for i, name in ORGAN_LABELS.items() if i != 0]
ORDER = ("brain", "liver", "soft_tissue", "body_fat")


def _values(cases, organ, metric, sex=None) -> list[float]:
    """The finite values of ``metric`` for ``organ`` over ``cases`` (of one sex if given)."""
    vals = [c["values"].get(organ, {}).get(metric) for c in cases
            if sex is None or (c.get("demographics") or {}).get("sex") == sex]
    return [v for v in vals if v is not None and np.isfinite(v)]


def _mean_of(vals: list[float]) -> float:
    return float(np.mean(vals)) if vals else float("nan")


def _mean(cases, organ, metric, sex=None):
    return _mean_of(_values(cases, organ, metric, sex))


def _interval_pct(ref_vals: list[float], syn_vals: list[float], r: float) -> float:
    """Half-width of the 95 % interval of the difference of the two means (Welch, normal
    approximation), in % of the reference mean: how far two cohorts of these sizes drawn from
    one population typically land apart, i.e. the sampling noise of the deviation."""
    if len(ref_vals) < 2 or len(syn_vals) < 2 or not r:
        return float("nan")
    se = np.sqrt(np.var(ref_vals, ddof=1) / len(ref_vals) + np.var(syn_vals, ddof=1) / len(syn_vals))
    return float(100.0 * 1.96 * se / abs(r))


def _organ_sex_rows(ref, syn) -> list[dict]:
    """Per organ and sex: the mean volume and SUV of ``ref`` and ``syn``, the deviation and its
    sampling interval."""
    rows = []
    for organ in ORGANS:
        for sex in ("M", "F"):
            row = {"organ": organ, "sex": sex}
            for metric in ("volume_ml", "suv_mean"):
                rv, sv = _values(ref, organ, metric, sex), _values(syn, organ, metric, sex)
                r, s = _mean_of(rv), _mean_of(sv)
                row[metric] = {"reference": r, "synthetic": s, "deviation_pct": 100.0 * (s - r) / r if r else float("nan"),
                               "interval95_pct": _interval_pct(rv, sv, r)}
            rows.append(row)
    return rows


def _share_within(rows, metric: str, pct: float = 10.0) -> float:
    return float(np.mean([abs(r[metric]["deviation_pct"]) <= pct for r in rows]))


def _beyond_noise(rows, metric: str, pct: float = 10.0) -> list[str]:
    """The cells out of ``pct`` whose 95 % interval lies wholly outside it too: shortfalls that
    sampling noise of cohorts this size does not explain."""
    return [f"{r['organ']} ({r['sex']})" for r in rows
            if abs(r[metric]["deviation_pct"]) - r[metric]["interval95_pct"] > pct]


LESION_METRICS = ("lesion_count", "lesion_volume_ml", "lesion_suv_max", "lesion_suv_mean")


def _lesion_rows(ref, syn) -> list[dict]:
    """Per diagnosis (and over all cases with one of the lesion diagnoses): the share of cases
    with lesions, the mean lesion count and volume, and the median of the cases' lesion SUVmax
    and SUVmean, for ``ref`` and ``syn``."""
    def of(cases, dx):
        return [c for c in cases if ((c.get("demographics") or {}).get("diagnosis") or "unknown") in dx]

    rows = []
    groups = [(dx, (dx,)) for dx in ("LYMPHOMA", "MELANOMA", "LUNG_CANCER", "NEGATIVE")]
    for name, dx in groups + [("any lesion diagnosis", ("LYMPHOMA", "MELANOMA", "LUNG_CANCER"))]:
        row = {"diagnosis": name}
        for side, cases in (("reference", of(ref, dx)), ("synthetic", of(syn, dx))):
            body = [c["values"].get("body", {}) for c in cases]
            count = [b.get("lesion_count") for b in body if b.get("lesion_count") is not None]
            entry = {"n": len(cases), "with_lesions": float(np.mean([n > 0 for n in count])) if count else float("nan")}
            for m in LESION_METRICS:
                vals = [b.get(m) for b in body if b.get(m) is not None and np.isfinite(b.get(m))]
                agg = np.median if m in ("lesion_suv_max", "lesion_suv_mean") else np.mean
                entry[m] = float(agg(vals)) if vals else float("nan")
            row[side] = entry
        rows.append(row)
    return rows


PEAK_METRICS = ("suv_max", "suv_peak")


def _finite(v) -> bool:
    return v is not None and np.isfinite(v)


def _comparison_counts(cmp: dict | None, alpha: float) -> dict | None:
    """How many of the report's subgroup x organ x metric comparisons were tested (a finite BH q) and
    how many differ (q < ``alpha``), in all and per metric (the report's metric names, in its order);
    ``None`` without a comparison."""
    if not cmp:
        return None
    tested = [r for r in cmp["rows"] if _finite(r.get("q"))]
    by_metric: dict[str, dict] = {}
    for r in tested:
        entry = by_metric.setdefault(r["metric"], {"comparisons": 0, "differ": 0})
        entry["comparisons"] += 1
        entry["differ"] += int(r["q"] < alpha)
    return {"comparisons": len(tested), "differ": sum(e["differ"] for e in by_metric.values()), "by_metric": by_metric}


def _peak_rows(ref, syn, base, cmp: dict | None) -> list[dict]:
    """Per organ, all cases pooled: mean SUVmax and SUVpeak of ``ref`` and ``syn``, the deviation
    with its sampling interval, the phantom baseline's deviation where there is one, and the
    report's 1-Wasserstein distance, KS statistic and BH q of the cell "all" where it has them."""
    stats = {(r["organ"], r["metric"]): r for r in (cmp or {}).get("rows", []) if r["cell"] == "all"}
    rows = []
    for organ in ORGANS:
        row = {"organ": organ}
        for metric in PEAK_METRICS:
            rv, sv = _values(ref, organ, metric), _values(syn, organ, metric)
            r, s = _mean_of(rv), _mean_of(sv)
            entry = {"reference": r, "synthetic": s, "deviation_pct": 100.0 * (s - r) / r if r else float("nan"),
                     "interval95_pct": _interval_pct(rv, sv, r)}
            if base:
                b = _mean(base, organ, metric)
                entry["baseline_deviation_pct"] = 100.0 * (b - r) / r if r else float("nan")
            if (organ, metric) in stats:
                entry.update({k: stats[(organ, metric)].get(k) for k in ("wasserstein", "ks", "q")})
            row[metric] = entry
        rows.append(row)
    return rows


def _out_of(rows, metric: str, key: str = "deviation_pct", pct: float = 10.0) -> list[str]:
    """The organs whose ``key`` of ``metric`` is more than ``pct`` % off."""
    return [r["organ"] for r in rows if _finite(r[metric].get(key)) and abs(r[metric][key]) > pct]


def distribution(result: dict) -> dict:
    """The distribution-level agreement next to the means: comparisons that differ (BH q < alpha) for
    the synthetic cases and the phantom baseline, and the per-organ SUVmax / SUVpeak deviations."""
    cmp = result.get("comparison")
    alpha = float(((cmp or {}).get("summary") or {}).get("alpha", 0.05))
    base = result["cases"].get("baseline") or []
    peaks = _peak_rows(result["cases"]["reference"], result["cases"]["synthetic"], base, cmp)
    out = {"alpha": alpha, "synthetic": _comparison_counts(cmp, alpha),
           "baseline": _comparison_counts((result.get("baseline") or {}).get("comparison"), alpha),
           "peaks": peaks}
    for metric in PEAK_METRICS:
        out[f"{metric}_out_10pct"] = _out_of(peaks, metric)
        if base:
            out[f"baseline_{metric}_out_10pct"] = _out_of(peaks, metric, "baseline_deviation_pct")
    return out


def acceptance(result: dict) -> dict:
    ref, syn = result["cases"]["reference"], result["cases"]["synthetic"]
    rows = _organ_sex_rows(ref, syn)
    base = result["cases"].get("baseline") or []
    base_rows = _organ_sex_rows(ref, base) if base else None
    for row, b in zip(rows, base_rows or []):
        row["baseline_deviation_pct"] = {m: b[m]["deviation_pct"] for m in ("volume_ml", "suv_mean")}

    def within(cases, organ, metric, lo, hi):
        vals = _values(cases, organ, metric)
        return (float(np.mean([lo <= v <= hi for v in vals])) if vals else float("nan")), len(vals)

    ranges = {organ: {"hu_in_range": within(syn, organ, "ct_median_hu", *ORGAN_HU_RANGE[organ])[0],
                      "suv_in_range": within(syn, organ, "suv_mean", *ORGAN_SUV_RANGE[organ])[0],
                      "present_in": within(syn, organ, "volume_ml", 1e-9, np.inf)[1] / len(syn)}
              for organ in ORGANS}
    for organ in ORGAN_PARTS:  # whole or in pieces: the labels' shape, which the means above do not see
        ranges[organ]["main_part_pct"] = {"reference": _mean(ref, organ, "main_part_pct"),
                                          "synthetic": _mean(syn, organ, "main_part_pct")}
    for organ in ORGANS if base else ():
        ranges[organ]["baseline_hu_in_range"] = within(base, organ, "ct_median_hu", *ORGAN_HU_RANGE[organ])[0]
    ordered = []
    for c in syn:
        v = [c["values"].get(o, {}).get("suv_mean") for o in ORDER]
        ordered.append(all(x is not None and np.isfinite(x) for x in v) and all(a > b for a, b in zip(v, v[1:])))
    fid = result["fidelity"]
    return {
        "organ_sex_rows": rows,
        "volume_within_10pct": _share_within(rows, "volume_ml"),
        "suv_within_10pct": _share_within(rows, "suv_mean"),
        "volume_out_beyond_noise": _beyond_noise(rows, "volume_ml"),
        "suv_out_beyond_noise": _beyond_noise(rows, "suv_mean"),
        "baseline": None if base_rows is None else {
            "n": len(base), "volume_within_10pct": _share_within(base_rows, "volume_ml"),
            "suv_within_10pct": _share_within(base_rows, "suv_mean"),
            "volume_out_beyond_noise": _beyond_noise(base_rows, "volume_ml"),
            "suv_out_beyond_noise": _beyond_noise(base_rows, "suv_mean")},
        "ranges": ranges,
        "suv_ordering_fraction": float(np.mean(ordered)),
        "height_r": fid["height"]["synthetic"]["pearson_r"] if fid.get("height", {}).get("synthetic") else None,
        "height_landmarks_r": (fid["height_landmarks"]["synthetic"]["pearson_r"]
                               if fid.get("height_landmarks", {}).get("synthetic") else None),
        "weight_r": fid["weight"]["synthetic"]["pearson_r"] if fid.get("weight", {}).get("synthetic") else None,
        "n_synthetic": len(syn), "n_reference": len(ref),
        "lesions": _lesion_rows(ref, syn),
        "distribution": distribution(result),
    }


def _pct(v: float) -> str:
    return "n/a" if not np.isfinite(v) else f"{100 * v:.0f} %"


def _num(v: float) -> str:
    return "n/a" if not np.isfinite(v) else f"{v:.1f}"


def _dev(d: dict) -> str:
    """A deviation with its 95 % sampling interval where one was measured."""
    hw = d["interval95_pct"]
    return f"{d['deviation_pct']:+.1f}" + (f" ± {hw:.1f}" if np.isfinite(hw) else "")


def _flagged(checks: dict) -> str:
    """The cells out of 10 % beyond the sampling noise, for volume and SUV."""
    return (f"volume {', '.join(checks['volume_out_beyond_noise']) or 'none'}; "
            f"SUV {', '.join(checks['suv_out_beyond_noise']) or 'none'}")


def render(acc: dict, header: str) -> str:
    base = acc.get("baseline")
    lines = [header, "", f"Synthetic cases: {acc['n_synthetic']}, reference (held-out phantom test cohort): {acc['n_reference']}"
             + (f", phantom baseline (fresh phantoms for the reference demographics): {base['n']}." if base else "."), "",
             "Deviations are of the synthetic mean from the reference mean, ± the half-width of the 95 % interval "
             "of that difference from the two cohorts' spread and sizes (Welch): a deviation within it is sampling noise.", "",
             "| organ | sex | volume ref (ml) | volume syn (ml) | dev % |" + (" phantom dev % |" if base else "")
             + " SUVmean ref | SUVmean syn | dev % |" + (" phantom dev % |" if base else ""),
             "|---|---|---|---|---|" + ("---|" if base else "") + "---|---|---|" + ("---|" if base else "")]
    for r in acc["organ_sex_rows"]:
        v, s, b = r["volume_ml"], r["suv_mean"], r.get("baseline_deviation_pct")
        lines.append(f"| {r['organ']} | {r['sex']} | {v['reference']:.0f} | {v['synthetic']:.0f} | {_dev(v)} | "
                     + (f"{b['volume_ml']:+.1f} | " if b else "")
                     + f"{s['reference']:.2f} | {s['synthetic']:.2f} | {_dev(s)} |"
                     + (f" {b['suv_mean']:+.1f} |" if b else ""))
    floor = (lambda key: f" (phantom baseline: {100 * base[key]:.0f} %)") if base else (lambda key: "")
    lines += ["", f"- organ x sex cells with mean volume within 10 %: {100 * acc['volume_within_10pct']:.0f} %{floor('volume_within_10pct')}",
              f"- organ x sex cells with mean SUV within 10 %: {100 * acc['suv_within_10pct']:.0f} %{floor('suv_within_10pct')}",
              "- cells out of 10 % beyond the sampling noise (the ± 95 % interval of the deviation, Welch, lies wholly "
              f"outside 10 %): {_flagged(acc)}" + (f" (phantom baseline: {_flagged(base)})" if base else ""),
              f"- brain > liver > soft tissue > fat SUVmean ordering: {100 * acc['suv_ordering_fraction']:.0f} % of cases (floor: 95 %)",
              f"- requested height vs brain-to-bladder distance, Pearson r: {acc['height_landmarks_r']:.2f} (floor: 0.8)"
              if acc.get("height_landmarks_r") is not None else "- height (landmarks) r: n/a",
              f"- requested height vs body extent, which the field of view cuts, Pearson r: {acc['height_r']:.2f}"
              if acc["height_r"] is not None else "- height (extent) r: n/a",
              f"- requested weight vs body mass, Pearson r: {acc['weight_r']:.2f} (floor: 0.8)" if acc["weight_r"] is not None else "- weight r: n/a",
              "", "Labels vs images: share of synthetic cases whose organ median HU / mean SUV, measured inside the "
              "generated label, falls in the phantom's documented range (`synthaug.phantom.tables.ORGAN_HU_RANGE`, `ORGAN_SUV_RANGE`); "
              "main part: mean share of the organ's volume in its largest connected components, as many as it has parts "
              "(`main_part_pct`), reference / synthetic.", "",
              "| organ | present in | HU in range | SUV in range |" + (" phantom HU in range |" if base else "") + " main part (%) |",
              "|---|---|---|---|" + ("---|" if base else "") + "---|"]
    for organ, r in acc["ranges"].items():
        part = r.get("main_part_pct")
        lines.append(f"| {organ} | {100 * r['present_in']:.0f} % | {100 * r['hu_in_range']:.0f} % | {100 * r['suv_in_range']:.0f} % |"
                     + (f" {100 * r['baseline_hu_in_range']:.0f} % |" if "baseline_hu_in_range" in r else "")
                     + (f" {_num(part['reference'])} / {_num(part['synthetic'])} |" if part else " – |"))
    if acc.get("lesions"):
        lines += ["", "Lesions per diagnosis, reference / synthetic: cases, share of cases with lesions, mean lesion "
                  "count (26-connected components) and volume, median of the cases' lesion SUVmax and SUVmean.", "",
                  "| diagnosis | cases | with lesions | lesions per case | volume (ml) | SUVmax | SUVmean |",
                  "|---|---|---|---|---|---|---|"]
        for r in acc["lesions"]:
            a, b = r["reference"], r["synthetic"]
            lines.append(f"| {r['diagnosis']} | {a['n']} / {b['n']} | {_pct(a['with_lesions'])} / {_pct(b['with_lesions'])} | "
                         f"{_num(a['lesion_count'])} / {_num(b['lesion_count'])} | {_num(a['lesion_volume_ml'])} / "
                         f"{_num(b['lesion_volume_ml'])} | {_num(a['lesion_suv_max'])} / {_num(b['lesion_suv_max'])} | "
                         f"{_num(a['lesion_suv_mean'])} / {_num(b['lesion_suv_mean'])} |")
    lines += _render_distribution(acc.get("distribution"))
    return "\n".join(lines) + "\n"


def _opt(v, fmt: str) -> str:
    """``v`` in ``fmt``, ``n/a`` where missing or not finite."""
    return format(v, fmt) if _finite(v) else "n/a"


def _q(q) -> str:
    return "n/a" if not _finite(q) else ("<0.001" if q < 1e-3 else f"{q:.2g}")


def _counted(c: dict | None) -> str:
    return "not recorded" if c is None else f"{c['differ']} of {c['comparisons']}"


def _render_distribution(dist: dict | None) -> list[str]:
    """The distribution-level section of ``acceptance.md`` (nothing for files made before it existed)."""
    if not dist:
        return []
    syn, base = dist["synthetic"], dist["baseline"]
    has_base = any("baseline_deviation_pct" in r[m] for r in dist["peaks"] for m in PEAK_METRICS)
    lines = ["", "Distribution-level agreement: subgroup x organ x metric comparisons of the report (two-sample KS, "
             f"Benjamini-Hochberg q < {dist['alpha']:g}) that differ, synthetic: {_counted(syn)}"
             + (f"; phantom baseline: {_counted(base)}" if base else "") + "."]
    if syn:
        lines += ["", "| metric | comparisons | differ |" + (" phantom baseline differ |" if base else ""),
                  "|---|---|---|" + ("---|" if base else "")]
        for metric, c in syn["by_metric"].items():
            b = (base or {}).get("by_metric", {}).get(metric)
            lines.append(f"| {metric} | {c['comparisons']} | {c['differ']} |"
                         + (f" {b['differ'] if b else 'n/a'} |" if base else ""))
    lines += ["", "SUVmax and SUVpeak per organ, all cases: mean reference / synthetic, deviation of the synthetic "
              "mean in % ± the half-width of its 95 % interval (Welch)" + (", the phantom baseline's deviation" if has_base else "")
              + "; 1-Wasserstein distance (W1, SUV), KS statistic and BH q of the report's cell \"all\".", ""]
    head = " mean ref / syn | dev % |" + (" phantom dev % |" if has_base else "") + " W1 | KS | q |"
    lines += ["| organ |" + head.replace(" mean", " SUVmax").replace(" dev %", " SUVmax dev %", 1)
              + head.replace(" mean", " SUVpeak").replace(" dev %", " SUVpeak dev %", 1),
              "|---|" + "---|" * (2 * head.count("|"))]
    for r in dist["peaks"]:
        cells = []
        for m in PEAK_METRICS:
            e = r[m]
            cells.append(f" {_opt(e['reference'], '.2f')} / {_opt(e['synthetic'], '.2f')} | "
                         + (_dev(e) if _finite(e["deviation_pct"]) else "n/a") + " |"
                         + (f" {_opt(e.get('baseline_deviation_pct'), '+.1f')} |" if has_base else "")
                         + f" {_opt(e.get('wasserstein'), '.2f')} | {_opt(e.get('ks'), '.2f')} | {_q(e.get('q'))} |")
        lines.append(f"| {r['organ']} |" + "".join(cells))
    lines.append("")
    for m, name in (("suv_peak", "SUVpeak"), ("suv_max", "SUVmax")):
        lines.append(f"- organs whose mean {name} is more than 10 % off: "
                     f"{', '.join(dist[f'{m}_out_10pct']) or 'none'}"
                     + (f" (phantom baseline: {', '.join(dist[f'baseline_{m}_out_10pct']) or 'none'})"
                        if f"baseline_{m}_out_10pct" in dist else ""))
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default=None)
    ap.add_argument("--synthetic", default=None, help="a pre-generated cache of these weights' cases (synthaug generate)")
    ap.add_argument("--stages", default="cascade", choices=("cascade", "global"))
    ap.add_argument("--reference", help="the held-out phantom test cohort (required unless --metrics)")
    ap.add_argument("--training")
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int)
    ap.add_argument("--sr-steps", type=int)
    ap.add_argument("--sigma-min", type=float)
    ap.add_argument("--guidance", type=float, help="classifier-free guidance scale (default: the weights')")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="no phantom baseline, no plots (for choosing sampler settings)")
    ap.add_argument("--metrics", help="redo only the acceptance checks, from this existing report's metrics.json")
    args = ap.parse_args()
    out = Path(args.out)
    if args.metrics:
        result = json.loads(Path(args.metrics).read_text())
        previous = json.loads((out / "acceptance.json").read_text()) if (out / "acceptance.json").exists() else {}
        _write(out, {**acceptance(result), "settings": {},
                     **{k: previous[k] for k in ("seconds", "command", "settings") if k in previous},
                     "checks_redone_with": f"python scripts/evaluate_demo_weights.py --metrics {args.metrics} --out {args.out}"})
        return
    if not args.reference:
        ap.error("--reference is required (or --metrics to redo the checks of an existing report)")
    if args.synthetic:
        manifest = load_manifest(args.synthetic)
        synthetic, settings = args.synthetic, {**manifest["settings"], "model_sha256": manifest["generator_sha256"]}
    else:
        synthetic = CascadedSampler.from_pretrained(args.weights, stages=args.stages).configure(
            steps=args.steps, sr_steps=args.sr_steps, sigma_min=args.sigma_min, guidance=args.guidance)
        settings = synthetic.settings
    t0 = time.time()
    result = evaluate_cohorts(args.reference, synthetic, args.out, training=args.training, seed=args.seed,
                              baseline=None if args.quick else "phantom", plots=not args.quick,
                              synthetic_label=f"demo weights ({settings.get('stages', args.stages)}), {json.dumps(settings)}")
    acc = acceptance(result)
    acc["seconds"] = time.time() - t0
    acc["command"] = "python scripts/evaluate_demo_weights.py " + " ".join(
        f"--{k.replace('_', '-')}" + ("" if v is True else f" {v}") for k, v in vars(args).items() if v not in (None, False))
    acc["settings"] = settings
    _write(out, acc)


def _write(out: Path, acc: dict) -> None:
    atomic_write_json(out / "acceptance.json", acc)
    redone = f"; checks redone with `{acc['checks_redone_with']}`" if "checks_redone_with" in acc else ""
    atomic_write_text(out / "acceptance.md", render(acc, f"## Acceptance checks ({acc['settings'].get('stages', 'cascade')})"
                                                     f"\n\n`{acc.get('command', '')}`{redone}"))
    print(render(acc, "## Acceptance checks"))


if __name__ == "__main__":
    main()

"""The model card's acceptance checks (scripts/evaluate_demo_weights.py) on hand-made reports."""

from __future__ import annotations

import json
import sys

import pytest
from helpers import load_script


@pytest.fixture(scope="module")
def script():
    return load_script("evaluate_demo_weights")


def _case(sex: str, scale: float, hu: float = 40.0) -> dict:
    values = {o: {"volume_ml": 100.0 * scale, "suv_mean": 2.0, "ct_median_hu": hu} for o in
              ("body_fat", "soft_tissue", "bone", "brain", "lungs", "heart", "liver", "spleen", "kidneys",
               "urinary_bladder", "aorta")}
    for organ, suv in (("brain", 6.0), ("liver", 2.5), ("soft_tissue", 0.9), ("body_fat", 0.4)):
        values[organ]["suv_mean"] = suv
    return {"demographics": {"sex": sex}, "values": values}


def _report(syn_scale: float, baseline_scale: float | None) -> dict:
    cases = {"reference": [_case("M", 1.0), _case("F", 1.0)],
             "synthetic": [_case("M", syn_scale), _case("F", syn_scale, hu=-500.0)]}
    if baseline_scale is not None:
        cases["baseline"] = [_case("M", baseline_scale), _case("F", baseline_scale)]
    return {"cases": cases, "fidelity": {"height": {"synthetic": {"pearson_r": 0.9}},
                                         "height_landmarks": {"synthetic": {"pearson_r": 0.95}}, "weight": {"synthetic": None}}}


def test_checks_count_cells_within_ten_percent_for_synthetic_and_baseline(script):
    acc = script.acceptance(_report(1.2, 1.05))
    assert acc["volume_within_10pct"] == 0.0 and acc["suv_within_10pct"] == 1.0
    assert acc["baseline"] == {"n": 2, "volume_within_10pct": 1.0, "suv_within_10pct": 1.0,
                               "volume_out_beyond_noise": [], "suv_out_beyond_noise": []}
    row = acc["organ_sex_rows"][0]
    assert row["volume_ml"]["deviation_pct"] == pytest.approx(20.0)
    assert row["baseline_deviation_pct"]["volume_ml"] == pytest.approx(5.0)
    assert acc["ranges"]["liver"]["hu_in_range"] == 0.5  # the female synthetic case's -500 HU is out
    assert acc["ranges"]["liver"]["baseline_hu_in_range"] == 1.0
    assert acc["suv_ordering_fraction"] == 1.0 and acc["height_r"] == 0.9 and acc["weight_r"] is None
    assert acc["height_landmarks_r"] == 0.95
    text = script.render(acc, "## t")
    assert "brain-to-bladder distance, Pearson r: 0.95 (floor: 0.8)" in text
    assert "body extent, which the field of view cuts, Pearson r: 0.90\n" in text  # shown, without a floor
    assert "phantom dev %" in text and "(phantom baseline: 100 %)" in text
    assert "(phantom baseline: volume none; SUV none)" in text  # one case per sex: no interval, nothing flagged


def test_lesion_table_per_diagnosis(script):
    report = _report(1.0, None)
    lesions = {"reference": [(3, 12.0, 9.0, 4.0), (0, 0.0, float("nan"), float("nan"))],
               "synthetic": [(1, 6.0, 5.0, 3.0), (1, 2.0, 7.0, 2.0)]}
    for side, values in lesions.items():
        for case, (n, ml, mx, mean) in zip(report["cases"][side], values):
            case["demographics"]["diagnosis"] = "LYMPHOMA"
            case["values"]["body"] = {"lesion_count": n, "lesion_volume_ml": ml, "lesion_suv_max": mx, "lesion_suv_mean": mean}
    acc = script.acceptance(report)
    row = {r["diagnosis"]: r for r in acc["lesions"]}["LYMPHOMA"]
    assert row["reference"]["n"] == 2 and row["reference"]["with_lesions"] == 0.5
    assert row["reference"]["lesion_count"] == 1.5 and row["reference"]["lesion_suv_max"] == 9.0  # NaN left out
    assert row["synthetic"]["with_lesions"] == 1.0 and row["synthetic"]["lesion_suv_max"] == 6.0  # median
    text = script.render(acc, "## t")
    assert "| LYMPHOMA | 2 / 2 | 50 % / 100 % | 1.5 / 1.0 | 6.0 / 4.0 | 9.0 / 6.0 | 4.0 / 2.5 |" in text
    assert "| MELANOMA | 0 / 0 | n/a / n/a |" in text


def test_checks_without_a_baseline_leave_its_columns_out(script):
    acc = script.acceptance(_report(1.0, None))
    assert acc["baseline"] is None and acc["volume_within_10pct"] == 1.0
    text = script.render(acc, "## t")
    assert "phantom dev" not in text and "phantom baseline" not in text and "| brain | M | 100 | 100 | +0.0 | 6.00 | 6.00 | +0.0 |" in text


def test_metrics_redo_the_checks_and_keep_the_report_command(script, tmp_path, monkeypatch, capsys):
    (tmp_path / "metrics.json").write_text(json.dumps(_report(1.2, 1.0)))
    (tmp_path / "acceptance.json").write_text(json.dumps({"command": "python scripts/x --out o", "settings": {"stages": "cascade"}}))
    monkeypatch.setattr(sys, "argv", ["x", "--metrics", str(tmp_path / "metrics.json"), "--out", str(tmp_path)])
    script.main()
    acc = json.loads((tmp_path / "acceptance.json").read_text())
    assert acc["command"] == "python scripts/x --out o" and acc["volume_within_10pct"] == 0.0
    assert "--metrics" in acc["checks_redone_with"]
    md = (tmp_path / "acceptance.md").read_text()
    assert md.startswith("## Acceptance checks (cascade)") and "checks redone with" in md
    capsys.readouterr()


def test_reference_is_required_without_metrics(script, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["x", "--out", str(tmp_path)])
    with pytest.raises(SystemExit) as exc:
        script.main()
    assert exc.value.code == 2 and "--reference is required" in capsys.readouterr().err


def test_main_part_column_averages_the_organs_with_a_part_count(script):
    report = _report(1.0, None)
    for case, part in zip(report["cases"]["synthetic"], (60.0, 80.0)):
        case["values"]["aorta"]["main_part_pct"] = part
    for case in report["cases"]["reference"]:
        case["values"]["aorta"]["main_part_pct"] = 100.0
    acc = script.acceptance(report)
    assert acc["ranges"]["aorta"]["main_part_pct"] == {"reference": 100.0, "synthetic": 70.0}
    assert "main_part_pct" not in acc["ranges"]["bone"]  # scattered by nature: no part count
    text = script.render(acc, "## t")
    assert "| aorta | 100 % | 50 % | 100 % | 100.0 / 70.0 |" in text
    assert "| liver | 100 % | 50 % | 100 % | n/a / n/a |" in text  # reports made before the metric existed


def test_deviation_interval_and_cells_out_beyond_the_sampling_noise(script):
    """With several cases per sex the deviation gets a Welch 95 % interval; a cell counts as
    out beyond the noise only when the whole interval is outside 10 %."""
    report = _report(1.0, None)
    ref_m = [_case("M", s) for s in (0.9, 1.0, 1.1)]
    syn_m = [_case("M", s) for s in (1.35, 1.4, 1.45)]  # +40 %, tight: beyond the noise
    ref_f = [_case("F", s) for s in (0.5, 1.0, 1.5)]
    syn_f = [_case("F", s) for s in (0.7, 1.2, 1.7)]   # +20 %, wide: within the noise
    report["cases"]["reference"], report["cases"]["synthetic"] = ref_m + ref_f, syn_m + syn_f
    acc = script.acceptance(report)
    rows = {(r["organ"], r["sex"]): r for r in acc["organ_sex_rows"]}
    m, f = rows[("liver", "M")]["volume_ml"], rows[("liver", "F")]["volume_ml"]
    se_m = ((0.01 / 3 + 0.0025 / 3) ** 0.5) * 100.0  # sample variances 0.01 and 0.0025 (x100 ml)^2
    assert m["deviation_pct"] == pytest.approx(40.0) and m["interval95_pct"] == pytest.approx(1.96 * se_m, rel=1e-6)
    assert f["deviation_pct"] == pytest.approx(20.0) and f["interval95_pct"] > 10.0
    assert "liver (M)" in acc["volume_out_beyond_noise"] and "liver (F)" not in acc["volume_out_beyond_noise"]
    assert acc["suv_out_beyond_noise"] == []  # identical SUVs: zero interval, zero deviation
    text = script.render(acc, "## t")
    assert f"| liver | M | 100 | 140 | +40.0 ± {1.96 * se_m:.1f} |" in text
    assert "beyond the sampling noise" in text and "SUV none" in text


def _row(metric: str, q: float | None, cell: str = "all", organ: str = "liver") -> dict:
    return {"cell": cell, "organ": organ, "metric": metric, "q": q}


def _with_peaks(report: dict, syn_peak: dict[str, float], base_peak: dict[str, float] | None = None) -> dict:
    """Every case's SUVpeak 2.0 and SUVmax 4.0, except the synthetic (and baseline) cases' SUVpeak of the
    organs named."""
    for side, cases in report["cases"].items():
        for case in cases:
            for organ, values in case["values"].items():
                peak = {"synthetic": syn_peak, "baseline": base_peak or {}}.get(side, {}).get(organ, 2.0)
                values.update({"suv_max": 4.0, "suv_peak": peak})
    return report


def test_distribution_counts_the_comparisons_that_differ_per_metric(script):
    """Tested comparisons are those with a BH q; they differ when q < alpha (q == alpha does not)."""
    report = _report(1.0, 1.0)
    report["comparison"] = {"summary": {"alpha": 0.05}, "rows": [
        _row("volume_ml", 0.01), _row("volume_ml", 0.05), _row("volume_ml", 0.5, cell="M"),
        _row("suv_peak", 0.001), _row("suv_peak", 0.049, organ="heart"), _row("suv_max", 0.2),
        _row("main_part_pct", None), _row("main_part_pct", float("nan"), organ="aorta"),
        _row("lesion_count", 0.0001, organ="body")]}
    report["baseline"] = {"comparison": {"summary": {"alpha": 0.05}, "rows": [
        _row("volume_ml", 0.9), _row("suv_peak", 0.02), _row("suv_max", 0.3)]}}
    dist = script.acceptance(report)["distribution"]
    assert dist["alpha"] == 0.05
    assert dist["synthetic"] == {"comparisons": 7, "differ": 4, "by_metric": {
        "volume_ml": {"comparisons": 3, "differ": 1}, "suv_peak": {"comparisons": 2, "differ": 2},
        "suv_max": {"comparisons": 1, "differ": 0}, "lesion_count": {"comparisons": 1, "differ": 1}}}
    assert dist["baseline"] == {"comparisons": 3, "differ": 1, "by_metric": {
        "volume_ml": {"comparisons": 1, "differ": 0}, "suv_peak": {"comparisons": 1, "differ": 1},
        "suv_max": {"comparisons": 1, "differ": 0}}}
    text = script.render(script.acceptance(report), "## t")
    assert "synthetic: 4 of 7; phantom baseline: 1 of 3." in text
    assert "| volume_ml | 3 | 1 | 0 |" in text and "| lesion_count | 1 | 1 | n/a |" in text


def test_distribution_peak_deviations_and_the_organs_off_by_more_than_ten_percent(script):
    report = _with_peaks(_report(1.0, 1.0), {"liver": 2.5, "brain": 1.9, "lungs": 2.19, "heart": 2.21, "spleen": 1.5},
                         {"liver": 2.1, "kidneys": 2.4})
    report["comparison"] = {"summary": {"alpha": 0.05}, "rows": [
        {**_row("suv_peak", 0.03), "wasserstein": 0.5, "ks": 1.0},
        {**_row("suv_peak", 0.01, cell="M"), "wasserstein": 9.0, "ks": 0.1}]}  # a subgroup's: not the pooled one
    dist = script.acceptance(report)["distribution"]
    peaks = {r["organ"]: r for r in dist["peaks"]}
    assert peaks["liver"]["suv_peak"]["deviation_pct"] == pytest.approx(25.0)
    assert peaks["brain"]["suv_peak"]["deviation_pct"] == pytest.approx(-5.0)
    assert peaks["liver"]["suv_peak"]["baseline_deviation_pct"] == pytest.approx(5.0)
    assert peaks["liver"]["suv_peak"]["reference"] == 2.0 and peaks["liver"]["suv_peak"]["synthetic"] == 2.5
    assert peaks["liver"]["suv_peak"]["wasserstein"] == 0.5 and peaks["liver"]["suv_peak"]["q"] == 0.03
    assert "q" not in peaks["brain"]["suv_peak"]  # no pooled comparison for it in the report
    assert peaks["liver"]["suv_max"]["deviation_pct"] == 0.0
    assert peaks["lungs"]["suv_peak"]["deviation_pct"] == pytest.approx(9.5)
    assert dist["suv_peak_out_10pct"] == ["heart", "liver", "spleen"]  # lungs +9.5 % is not out; ORGANS order
    assert dist["suv_max_out_10pct"] == []
    assert dist["baseline_suv_peak_out_10pct"] == ["kidneys"] and dist["baseline_suv_max_out_10pct"] == []
    text = script.render(script.acceptance(report), "## t")
    assert ("| liver | 4.00 / 4.00 | +0.0 ± 0.0 | +0.0 | n/a | n/a | n/a | 2.00 / 2.50 | +25.0 ± 0.0 | +5.0 | 0.50 | 1.00 "
            "| 0.03 |") in text  # identical cases per side: a zero interval
    assert ("- organs whose mean SUVpeak is more than 10 % off: heart, liver, spleen "
            "(phantom baseline: kidneys)") in text
    assert "- organs whose mean SUVmax is more than 10 % off: none (phantom baseline: none)" in text


def test_distribution_without_a_comparison_or_baseline(script):
    """A report without comparisons (or baseline) leaves the counts unrecorded; the peaks come from the cases."""
    report = _with_peaks(_report(1.0, None), {"liver": 1.7})
    acc = script.acceptance(report)
    dist = acc["distribution"]
    assert dist["synthetic"] is None and dist["baseline"] is None
    assert dist["suv_peak_out_10pct"] == ["liver"] and "baseline_suv_peak_out_10pct" not in dist
    text = script.render(acc, "## t")
    assert "that differ, synthetic: not recorded." in text
    assert "phantom baseline" not in text and "phantom dev" not in text
    assert "- organs whose mean SUVpeak is more than 10 % off: liver\n" in text
    del acc["distribution"]  # acceptance files made before it: no section
    assert "Distribution-level" not in script.render(acc, "## t")

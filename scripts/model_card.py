"""The model card's measured numbers, generated from the results files they come from.

Every table of measurements in ``synthaug/weights/README.md`` sits between two markers,
``<!-- card:NAME begin (scripts/model_card.py) -->`` and ``<!-- card:NAME end -->``, and is rewritten
whole from one results file (the evaluation log: from the acceptance files it lists). Each table
names its results file and the short generator digest (weights + calibration, as cases record it)
it was measured on, marked where that is not the shipped weights'. ``--write`` regenerates the
blocks; ``--check`` (used by the tests) fails when a block is not what the results files say.

    python scripts/model_card.py --write
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # results_tables.py, shared with readme_status.py

from results_tables import (  # noqa: E402
    REPO,
    load,
    measured_on,
    replace_block,
    shipped_digest,
    value_range,
    weights_cell,
)

CARD = REPO / "synthaug" / "weights" / "README.md"
DEV = "synthaug/weights/evaluation/acceptance.json"
FINAL = "synthaug/weights/evaluation/final_test/acceptance.json"
GLOBAL_JSON, SR_JSON = "synthaug/weights/global.json", "synthaug/weights/sr.json"

#: Each evaluation of shipped weights on a phantom cohort: (date, cohort, acceptance file). The date is
#: the one thing the acceptance files do not record; weights and results come from the file.
#: Earlier snapshots' evaluations stay in the log: their files move to benchmarks/results/ (marked stale)
#: when a new snapshot ships.
EVALUATIONS: list[tuple[str, str, str]] = [
    ("2026-12-06", "development, phantom version 1, seed 1000", "benchmarks/results/acceptance_3456cb89_development.json"),
    ("2026-12-06", "**final test, phantom version 1, seed 4711, its one evaluation**",
     "benchmarks/results/acceptance_3456cb89_final_test.json"),
    ("2026-12-07", "development, phantom version 2, seed 1000", "benchmarks/results/acceptance_f4c44e48_development.json"),
    ("2026-12-07", "**final test, phantom version 2, seed 4711, its one evaluation**",
     "benchmarks/results/acceptance_f4c44e48_final_test.json"),
    ("2026-12-07", "development, phantom version 3, seed 1000, organ labels as drawn",
     "benchmarks/results/acceptance_08a48e61_raw_labels_development.json"),
    ("2026-12-07", "**final test, phantom version 3, seed 5000, organ labels as drawn, its one evaluation**",
     "benchmarks/results/acceptance_08a48e61_raw_labels_final_test.json"),
    ("2026-12-07", "development, phantom version 3, seed 1000, stray label pieces relabelled (the default)", DEV),
    ("2026-12-07", "**final test, phantom version 3, seed 5000, stray label pieces relabelled, its one evaluation**",
     FINAL),
    ("2026-12-07", "development, phantom version 3, seed 1000, lesion uptake fitted to real tumours (the sampler's "
     "default since; the rows above painted the phantom's)",
     "benchmarks/results/acceptance_08a48e61_fitted_lesions_development.json"),
]


def begin(name: str) -> str:
    return f"<!-- card:{name} begin (scripts/model_card.py) -->"


def end(name: str) -> str:
    return f"<!-- card:{name} end -->"


def _link(rel: str) -> str:
    """``rel`` (relative to the repository) as a Markdown link from the card's folder."""
    return f"[`{rel}`]({os.path.relpath(REPO / rel, CARD.parent)})"


def _caption(rel: str, data: dict, sha: str | None, shipped: str, what: str = "") -> str:
    command = data.get("command")
    redone = data.get("checks_redone_with")
    return (f"*Results file {_link(rel)}{what}; measured on: {weights_cell(sha, shipped, data.get('stale'))}"
            + (f"; made with `{command}`" if command else "")
            + (f"; checks recomputed from its metrics.json with `{redone}`" if redone else "") + ".*")


def _num(x: float | None, fmt: str = ".2f") -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def _cells(d: dict, key: str, n: int) -> str:
    """A share of the ``n`` organ x sex cells as a count."""
    return f"{round(d[key] * n)} of {n}"


def _flagged(d: dict) -> str:
    return " / ".join(", ".join(d[k]) or "none" for k in ("volume_out_beyond_noise", "suv_out_beyond_noise"))


# -- the evaluation log ------------------------------------------------------------------------------

def _result(d: dict) -> str:
    base, n = d.get("baseline"), len(d["organ_sex_rows"])
    fresh = (f" (fresh phantoms for the same demographics: {_cells(base, 'suv_within_10pct', n)} and "
             f"{_cells(base, 'volume_within_10pct', n)})") if base else ""
    return (f"SUVs {_cells(d, 'suv_within_10pct', n)}, volumes {_cells(d, 'volume_within_10pct', n)} organ x sex cells "
            f"within 10 %{fresh}; out of 10 % beyond their 95 % sampling interval (volume / SUV): {_flagged(d)}; "
            f"weight r {d['weight_r']:.2f}, height r {d['height_r']:.2f}{landmarks_note(d)}; brain > liver > soft tissue > fat in "
            f"{100 * d['suv_ordering_fraction']:.0f} % of cases")


def landmarks_note(d: dict) -> str:
    """The landmark-based height r where the evaluation measured it (from 2026-12-07 on)."""
    r = d.get("height_landmarks_r")
    return "" if r is None else f" by the body's extent, {r:.2f} by the brain-to-bladder distance (the floor's)"


def height_rows(d: dict) -> list[str]:
    """The height checks: the floor is on the brain-to-bladder distance where it was measured; the body
    extent, which the field of view cuts, is shown beside it without one. Evaluations from before carry
    the floor on the extent, as they were judged."""
    extent = "requested height vs body extent, Pearson r"
    if d.get("height_landmarks_r") is None:
        return [f"| {extent} | 0.8 | {d['height_r']:.2f} | – |"]
    return [f"| requested height vs brain-to-bladder distance, Pearson r | 0.8 | {d['height_landmarks_r']:.2f} | – |",
            f"| {extent} (the field of view cuts it) | – | {d['height_r']:.2f} | – |"]


def evaluation_log(shipped: str) -> str:
    lines = ["| date | weights | cohort | result | results file |", "|---|---|---|---|---|"]
    for date, cohort, rel in EVALUATIONS:
        d = load(rel)
        # a log names the weights each evaluation measured, the shipped ones or an earlier snapshot (no stale note)
        lines.append(f"| {date} | {weights_cell(measured_on(d), shipped)} | {cohort}, "
                     f"{d['n_reference']} cases | {_result(d)} | {_link(rel)} |")
    return "\n".join(lines) + "\n"


# -- acceptance checks on one cohort -----------------------------------------------------------------

def _dev(cell: dict) -> str:
    """A deviation in % with the half-width of its 95 % interval, bold when outside 10 %."""
    text = f"{cell['deviation_pct']:+.1f}"
    if math.isfinite(cell.get("interval95_pct", math.nan)):
        text += f" ± {cell['interval95_pct']:.1f}"
    return f"**{text}**" if abs(cell["deviation_pct"]) > 10 else text


def _cell(row: dict | None, key: str) -> str:
    return _dev(row[key]) if row else "–"


def acceptance(d: dict) -> str:
    base, ranges, n = d.get("baseline"), d["ranges"], len(d["organ_sex_rows"])

    def in_range(key: str) -> int:
        return sum(r[key] == 1.0 for r in ranges.values())

    parts = {organ: r["main_part_pct"] for organ, r in ranges.items() if "main_part_pct" in r}
    worst = min(parts, key=lambda o: parts[o]["synthetic"])
    lesions = next((r for r in d.get("lesions", []) if r["diagnosis"] == "any lesion diagnosis"), None)
    lines = [f"{d['n_synthetic']} synthetic cases for the demographics of {d['n_reference']} cohort cases"
             + (f"; fresh phantoms: {base['n']} phantoms for the same demographics, other seeds." if base else "."), "",
             "| check | floor | synthetic | fresh phantoms |", "|---|---|---|---|",
             f"| organ x sex cells, mean volume within 10 % | all | {_cells(d, 'volume_within_10pct', n)} | "
             + (_cells(base, "volume_within_10pct", n) if base else "–") + " |",
             f"| organ x sex cells, mean SUV within 10 % | all | {_cells(d, 'suv_within_10pct', n)} | "
             + (_cells(base, "suv_within_10pct", n) if base else "–") + " |",
             f"| cells out of 10 % beyond their 95 % sampling interval (volume / SUV) | – | {_flagged(d)} | "
             + (_flagged(base) if base else "–") + " |",
             f"| organs whose median HU / mean SUV inside the generated labels is in the phantom's range in every case "
             f"| – | {in_range('hu_in_range')} / {in_range('suv_in_range')} of {len(ranges)} | "
             f"{in_range('baseline_hu_in_range')} of {len(ranges)} (HU) |",
             f"| brain > liver > soft tissue > fat SUVmean, share of cases | 95 % | "
             f"{100 * d['suv_ordering_fraction']:.0f} % | – |",
             *height_rows(d),
             f"| requested weight vs body mass, Pearson r | 0.8 | {d['weight_r']:.2f} | – |",
             f"| organ label in one piece: lowest mean share of an organ's volume in its largest part | – | "
             f"{worst} {parts[worst]['synthetic']:.1f} % (cohort {parts[worst]['reference']:.1f} %) | – |"]
    if lesions:
        a, b = lesions["reference"], lesions["synthetic"]
        lines.append(f"| cases of a lesion diagnosis with lesions (lesion prior) | – | "
                     f"{round(b['with_lesions'] * b['n'])} of {b['n']} (cohort {round(a['with_lesions'] * a['n'])} "
                     f"of {a['n']}) | – |")
    lines += _distribution_rows(d.get("distribution"))
    lines += ["", "Deviation of the synthetic mean from the cohort's, % ± the half-width of its 95 % interval "
              "(Welch); **bold**: outside 10 %.", "",
              "| organ | volume, M | volume, F | SUVmean, M | SUVmean, F |", "|---|---|---|---|---|"]
    rows = {(r["organ"], r["sex"]): r for r in d["organ_sex_rows"]}
    for organ in dict.fromkeys(r["organ"] for r in d["organ_sex_rows"]):
        m, f = rows.get((organ, "M")), rows.get((organ, "F"))
        lines.append(f"| {organ} | {_cell(m, 'volume_ml')} | {_cell(f, 'volume_ml')} | {_cell(m, 'suv_mean')} | "
                     f"{_cell(f, 'suv_mean')} |")
    if d.get("lesions"):
        lines += ["", "Lesions (from the lesion prior) per diagnosis, cohort / synthetic: mean lesions and volume per "
                  "case, median of the cases' lesion SUVmax and SUVmean.", "",
                  "| diagnosis | cases | lesions per case | volume (ml) | SUVmax | SUVmean |", "|---|---|---|---|---|---|"]
        for r in d["lesions"]:
            a, b = r["reference"], r["synthetic"]
            pairs = " | ".join(f"{_num(a[k], '.1f')} / {_num(b[k], '.1f')}"
                               for k in ("lesion_count", "lesion_volume_ml", "lesion_suv_max", "lesion_suv_mean"))
            lines.append(f"| {r['diagnosis'].lower().replace('_', ' ')} | {a['n']} / {b['n']} | {pairs} |")
    lines += _distribution_tables(d.get("distribution"))
    return "\n".join(lines) + "\n"


# -- distribution-level agreement (acceptance files from when evaluate_demo_weights.py records it) ---

#: The report's metrics in its order; others (none today) follow alphabetically.
METRIC_ORDER = ("volume_ml", "suv_mean", "suv_max", "suv_peak", "ct_median_hu", "main_part_pct", "body_volume_ml",
                "body_extent_mm", "body_mass_kg", "lesion_volume_ml", "lesion_count", "lesion_suv_max", "lesion_suv_mean")
NOT_RECORDED = "not recorded for this evaluation"


def _differ(counts: dict | None) -> str:
    return f"{counts['differ']} of {counts['comparisons']}" if counts else "–"


def _organs(dist: dict, key: str) -> str:
    return (", ".join(dist[key]) or "none") if key in dist else "–"


def _distribution_rows(dist: dict | None) -> list[str]:
    """The distribution-level rows of the checks table."""
    if not dist:
        return ["| subgroup x organ x metric comparisons that differ (two-sample KS, Benjamini-Hochberg) | – | "
                f"{NOT_RECORDED} | – |",
                f"| organs whose mean SUVpeak / SUVmax, all cases, is more than 10 % off | – | {NOT_RECORDED} | – |"]
    return [f"| subgroup x organ x metric comparisons that differ (two-sample KS, Benjamini-Hochberg q < {dist['alpha']:g}) "
            f"| – | {_differ(dist['synthetic'])} | {_differ(dist['baseline'])} |",
            f"| organs whose mean SUVpeak, all cases, is more than 10 % off | – | {_organs(dist, 'suv_peak_out_10pct')} | "
            f"{_organs(dist, 'baseline_suv_peak_out_10pct')} |",
            f"| organs whose mean SUVmax, all cases, is more than 10 % off | – | {_organs(dist, 'suv_max_out_10pct')} | "
            f"{_organs(dist, 'baseline_suv_max_out_10pct')} |"]


def _peak_dev(e: dict, key: str = "deviation_pct") -> str:
    """A peak deviation in % (with its interval for the synthetic cases), bold when outside 10 %; – when missing."""
    v = e.get(key)
    if v is None or not math.isfinite(v):
        return "–"
    return _dev({"deviation_pct": v, **({"interval95_pct": e["interval95_pct"]} if key == "deviation_pct" else {})})


def _distribution_tables(dist: dict | None) -> list[str]:
    """Per metric, the comparisons that differ; per organ, the SUVmax and SUVpeak deviations."""
    if not dist:  # the checks table says it was not recorded
        return []
    lines = []
    syn, base = dist["synthetic"], dist["baseline"] or {}
    if syn:
        metrics = [m for m in METRIC_ORDER if m in syn["by_metric"]] + sorted(set(syn["by_metric"]) - set(METRIC_ORDER))
        lines += ["", "Subgroup x organ x metric comparisons of the report (two-sample KS) that differ after the "
                  f"Benjamini-Hochberg correction (q < {dist['alpha']:g}), per metric.", "",
                  "| metric | synthetic | fresh phantoms |", "|---|---|---|"]
        lines += [f"| {m} | {_differ(syn['by_metric'][m])} | {_differ(base.get('by_metric', {}).get(m))} |"
                  for m in metrics]
    lines += ["", "SUVmax and SUVpeak per organ, all cases: deviation of the synthetic mean from the cohort's, % ± the "
              "half-width of its 95 % interval (Welch), **bold**: outside 10 %; the fresh phantoms' deviation; "
              "1-Wasserstein distance (SUV) and KS statistic of the synthetic cases.", "",
              "| organ | SUVmax | SUVmax, fresh phantoms | SUVmax W1 / KS | SUVpeak | SUVpeak, fresh phantoms | "
              "SUVpeak W1 / KS |", "|---|---|---|---|---|---|---|"]
    for r in dist["peaks"]:
        cells = [f"{_peak_dev(r[m])} | {_peak_dev(r[m], 'baseline_deviation_pct')} | "
                 f"{_num(r[m].get('wasserstein'))} / {_num(r[m].get('ks'))}" for m in ("suv_max", "suv_peak")]
        lines.append(f"| {r['organ']} | " + " | ".join(cells) + " |")
    return lines


# -- calibration: what the networks produce, what calibration adds -----------------------------------

def weights_digest(folder: Path = CARD.parent) -> str:
    """The generator digest of the weights folder whose JSON files hold the calibration tables."""
    from synthaug.core.checkpoint import read_config
    from synthaug.model.stages import StageConfig
    from synthaug.sampling.cascade import generator_digest

    raws = [read_config(folder / stage) for stage in ("global", "sr")]
    return generator_digest([(r["sha256"], StageConfig.from_dict(r)) for r in raws])


def _pct(x: float, target: float) -> str:
    return f"{100 * (x / target - 1):+.1f} %" if target else "–"


def calibration(d: dict) -> str:
    labels, intensity, spread = d["label_calibration"], d["intensity_calibration"], d["level_spread"]
    volumes = labels["mean_voxels"]
    lines = [f"Stage weights `{d['sha256'][:8]}`. On the calibration's own {labels['cases']} samples for the "
             f"demographics of training cases (seeds {labels['seeds']}), before and after calibration, against its "
             f"targets from the training cohort (volumes: {labels['volume_cases']} cases; intensities: "
             f"{intensity['target_cases']} cases; HU level spread: the training cases' sd of each case's organ "
             "median). In-sample: calibration is fitted to reach these targets on these samples; held-out results "
             "are the acceptance tables above.", "",
             "| class | label volume vs target, before → after | mean SUV vs target, before → after | "
             "median HU, before → after (target) | per-case HU level sd, before → after (target) |",
             "|---|---|---|---|---|"]
    for organ, v in volumes.items():
        if organ == "background":
            continue
        suv, hu, sd = (intensity["mean_suv"].get(organ), intensity["median_hu"].get(organ), spread.get(organ))
        lines.append(
            f"| {organ} | {_pct(v['uncalibrated'], v['training'])} → {_pct(v['calibrated'], v['training'])} | "
            + (f"{_pct(suv['generated'], suv['training'])} → {_pct(suv['calibrated'], suv['training'])}" if suv else "–")
            + " | " + (f"{hu['generated']:.0f} → {hu['calibrated']:.0f} ({hu['training']:.0f})" if hu else "–")
            + " | " + (f"{sd['generated_sd']:.1f} → {sd['calibrated_sd']:.1f} ({sd['training_sd']:.1f})" if sd else "–")
            + " |")
    return "\n".join(lines) + "\n"


# -- benchmarks ------------------------------------------------------------------------------------

def realism(d: dict) -> str:
    # The columns the file has (scripts/realism_table.py: phantom v1 to v3, the cascade with and without the scanner).
    order = ("real", "phantom", "cascade")
    groups = tuple(sorted((g for g in d["groups"] if d["groups"][g]),
                          key=lambda g: (next((i for i, o in enumerate(order) if g.startswith(o)), len(order)), g)))
    demo = d["demographics"]

    def row(what: str, read: Callable[[dict], float | None], fmt: str) -> str:
        cells = []
        for g in groups:
            values = [v for v in (read(c) for c in d["groups"][g]) if v is not None]
            cells.append(value_range(values, fmt) if values else "–")
        return f"| {what} | " + " | ".join(cells) + " |"

    def liver(key: str, prefer_labels: bool) -> Callable[[dict], float | None]:
        def read(case: dict) -> float | None:
            voi = case.get("liver_from_labels") if prefer_labels and case.get("liver_from_labels", {}).get("found") \
                else case.get("liver")
            return voi[key] if voi and voi.get("found") else None
        return read

    lines = [f"The real whole-body FDG PET of the reference set ({demo['sex']}, {demo['age']:.0f} y, "
             f"{demo['height_cm']:.0f} cm, {demo['weight_kg']:.0f} kg) beside {len(d['groups']['cascade'])} cases per "
             "generator for the same demographics; \"+scan\": with the scanner model "
             f"`{d['scanner']['name']}`. Ranges are over the cases.", "",
             "| | " + " | ".join(groups) + " |", "|---" * (len(groups) + 1) + "|",
             row("body SUV median", lambda c: c["body"]["suv_median"], ".2f"),
             row("body SUV 90th percentile", lambda c: c["body"]["suv_p90"], ".2f"),
             row("body volume in the field of view (l)", lambda c: c["body"]["volume_l"], ".1f"),
             row("arms seen apart from the body (mm)", lambda c: c["body"].get("arms_mm"), ".0f"),
             row("liver VOI SUVmean (from the labels; real: found without)", liver("suv_mean", True), ".2f"),
             row("liver VOI noise, CoV (from the labels; real: found without)", liver("cov", True), ".2f"),
             row("liver VOI noise, CoV (found without labels)", liver("cov", False), ".2f")]
    return "\n".join(lines) + "\n"


def twins(d: dict) -> str:
    r = d["results"]
    s1, ph = r["stage1"], r["phantom"]
    design = r["design"]
    settings = design["stage1_settings"]

    def both(read: Callable[[dict], str]) -> str:
        return f"{read(s1)} | {read(ph)}"

    def dice(n: dict) -> str:
        return " / ".join(f"{n[f'dice_{o}']['mean']:.3f}" for o in ("brain", "lungs", "liver"))

    def same(q: dict) -> str:
        return f"{q['same_sign_pct']:.0f} %"

    lines = [f"{len(design['people'])} people from `sample_population({len(design['people'])}, "
             f"{design['population_seed']})`, each swept in weight, height and age with one seed; stage 1 only "
             f"(`{settings['sampler']}`, {settings['steps']} steps, lesions `{settings['lesions']}`), against the "
             f"phantom (version {r['phantom_version']}) for the same people.", "",
             "| measure | stage 1 | phantom |", "|---|---|---|",
             "| weight twins: body mass vs requested weight, within-set Pearson r / slope (kg per kg) | "
             + both(lambda g: f"{g['weight']['effectiveness_mass']['within_set_r']:.3f} / "
                              f"{g['weight']['effectiveness_mass']['within_set_slope']:.2f}") + " |",
             "| height twins: body extent vs requested height, within-set Pearson r / slope (mm per cm) | "
             + both(lambda g: f"{g['height']['effectiveness_extent']['within_set_r']:.3f} / "
                              f"{g['height']['effectiveness_extent']['within_set_slope']:.1f}") + " |",
             "| weight-twin neighbours: Dice brain / lungs / liver | " + both(lambda g: dice(g["weight"]["neighbours"])) + " |",
             "| the same person from two seeds: Dice brain / lungs / liver | "
             + both(lambda g: dice(g["no_twin"]["same_person_two_seeds"])) + " |",
             "| neighbours from two independent seeds: Dice brain / lungs / liver | "
             + both(lambda g: dice(g["no_twin"]["neighbours"])) + " |",
             "| weight-twin neighbours: body extent change (mm) / brain volume change | "
             + both(lambda g: f"{g['weight']['neighbours']['extent_mm']['mean']:.1f} / "
                              f"{g['weight']['neighbours']['brain_pct']['mean']:.1f} %") + " |",
             "| height-twin neighbours: body mass change / brain volume change | "
             + both(lambda g: f"{g['height']['neighbours']['mass_pct']['mean']:.1f} % / "
                              f"{g['height']['neighbours']['brain_pct']['mean']:.1f} %") + " |",
             "| age twins: body extent change (mm) / mass change / brain volume change | "
             + both(lambda g: f"{g['age']['neighbours']['extent_mm']['mean']:.1f} / "
                              f"{g['age']['neighbours']['mass_pct']['mean']:.1f} % / "
                              f"{g['age']['neighbours']['brain_pct']['mean']:.1f} %") + " |",
             "| weight twins: same sign of the two weight steps, body volume / body fat / liver SUVmean | "
             + both(lambda g: " / ".join(same(g["weight"]["smoothness"][k])
                                         for k in ("body_volume_ml", "body_fat_ml", "liver_suv_mean"))) + " |",
             "| without twins (independent seeds): same sign, liver SUVmean | "
             + both(lambda g: same(g["no_twin"]["smoothness"]["liver_suv_mean"])) + " |"]
    return "\n".join(lines) + "\n"


def lesion_insertion(d: dict) -> str:
    arms = (("insertion", "inserted (default appearance)"), ("prior_fitted", "lesion prior, fitted uptake"),
            ("phantom_painting", "lesion prior, phantom's rule"), ("real_crops", "real sarcoma crops"))
    held_out = d.get("by_role", {}).get("test", {})

    def iqr(q: dict, fmt: str = ".2f") -> str:
        return f"{q['median']:{fmt}} [{q['p25']:{fmt}}-{q['p75']:{fmt}}]"

    def row(what: str, read: Callable[[dict], str], source: dict = d) -> str:
        return f"| {what} | " + " | ".join(read(source[k]) if source.get(k) else "–" for k, _ in arms) + " |"

    def quartiles(key: str, fmt: str = ".2f") -> Callable[[dict], str]:
        return lambda a: iqr(a[key], fmt) if a.get(key) else "–"

    def agree(key: str) -> Callable[[dict], str]:
        def read(a: dict) -> str:
            if "agreement" not in a:
                return "–"
            q = a["agreement"][key]
            return f"{q['median']:.2f} [{q['min']:.2f}-{q['max']:.2f}]"
        return read

    lines = ["One sarcoma-sized lesion per real tumour crop put into the real whole-body PET by insertion "
             "(`RandLesionInsertd`'s default appearance) and by the lesion prior of generated cases (its default, "
             "fitted uptake, and the phantom's uniform rule), measured as the real crops are; no network is involved. "
             "The uptake was fitted on the crops of even case number; the held-out rows are the odd ones "
             "(docs/lesions.md). Median [interquartile range]; agreement: median [min-max].", "",
             "| | " + " | ".join(name for _, name in arms) + " |", "|---" * (len(arms) + 1) + "|",
             row("lesions", lambda a: str(a["n"])),
             row("SUVmax", quartiles("suv_max", ".1f")),
             row("SUVmean / SUVmax", quartiles("mean_over_max")),
             row("SUVmean / SUVmax, held-out crops", quartiles("mean_over_max"), held_out),
             row("measured / planned SUVmax", quartiles("suv_max_over_planned")),
             row("edge width (mm)", quartiles("edge_width_mm", ".1f")),
             row("edge width (mm), held-out crops", quartiles("edge_width_mm", ".1f"), held_out),
             row("surrounding SUV", quartiles("surround_suv")),
             row("share of the lesion mask where the PET rose", agree("mask_rise_share")),
             row("share of the inserted activity inside the mask", agree("activity_in_mask")),
             row("activity beyond the PSF's reach", agree("activity_beyond_reach"))]
    return "\n".join(lines) + "\n"


def downstream(d: dict) -> str:
    def ci(q: dict, sign: str = "") -> str:
        return f"{q['mean']:{sign}.3f} [{q['low']:{sign}.3f}, {q['high']:{sign}.3f}]"

    seeds = sorted({s for r in d["summary"] for s in r["seeds"]})
    diffs = [r[k] for r in d["summary"] for k in r if k.startswith("lesion_dice_vs_")]
    spanning = sum(q["low"] <= 0 <= q["high"] for q in diffs)
    lines = [f"Mean over seeds {', '.join(map(str, seeds))} with the 95 % t-interval; paired: the difference to the "
             "baseline arm at the same number of real cases and seed (`shift_synth`: to `shift_real_only`). "
             "The \"real\" cases are a phantom cohort (see the command). Paired lesion-Dice intervals that "
             f"contain zero: {spanning} of {len(diffs)}.", "",
             "| arm | real cases | lesion Dice | minus the baseline, paired | organ Dice (mean) |", "|---|---|---|---|---|"]
    for r in d["summary"]:
        diff = next((r[k] for k in r if k.startswith("lesion_dice_vs_")), None)
        lines.append(f"| `{r['arm']}` | {r['n_real']} | {ci(r['lesion_dice'])} | {ci(diff, '+') if diff else '–'} | "
                     f"{ci(r['organ_dice_mean'])} |")
    return "\n".join(lines) + "\n"


# -- the blocks --------------------------------------------------------------------------------------

def _from_file(rel: str, body: Callable[[dict], str], digest: Callable[[dict], str | None] = measured_on,
               what: str = "") -> Callable[[str], str]:
    def render(shipped: str) -> str:
        data = load(rel)
        return f"{_caption(rel, data, digest(data), shipped, what)}\n\n{body(data)}"
    return render


_CALIBRATION = " (`label_calibration`, `intensity_calibration`, `level_spread`)"

#: name -> how to render the block for the given shipped generator digest.
BLOCKS: dict[str, Callable[[str], str]] = {
    "evaluation-log": evaluation_log,
    "development": _from_file(DEV, acceptance),
    "final-test": _from_file(FINAL, acceptance),
    "calibration-global": _from_file(GLOBAL_JSON, calibration, lambda d: weights_digest(), _CALIBRATION),
    "calibration-sr": _from_file(SR_JSON, calibration, lambda d: weights_digest(), _CALIBRATION),
    "realism": _from_file("benchmarks/results/realism.json", realism),
    "twins": _from_file("benchmarks/results/twins.json", twins),
    "lesion-insertion": _from_file("benchmarks/results/lesion_insertion.json", lesion_insertion),
    "downstream": _from_file("benchmarks/results/downstream.json", downstream),
}


def markers() -> list[tuple[str, str]]:
    """Each generated block's (begin, end) markers."""
    return [(begin(name), end(name)) for name in BLOCKS]


def render(card: str, shipped: str) -> str:
    """``card`` with every generated block regenerated."""
    for name, block in BLOCKS.items():
        card = replace_block(card, begin(name), end(name), block(shipped),
                             f"the model card has no block {name!r} ({begin(name)} ... {end(name)})")
    return card


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help="regenerate the model card's tables")
    mode.add_argument("--check", action="store_true", help="exit 1 when a table of the model card is out of date")
    args = parser.parse_args(argv)
    card = CARD.read_text()
    new = render(card, shipped_digest())
    if args.check:
        if new != card:
            print("the model card's tables differ from the results files: run scripts/model_card.py --write")
            return 1
        return 0
    CARD.write_text(new)
    print(f"wrote the tables of {CARD}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

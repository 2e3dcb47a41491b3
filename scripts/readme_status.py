"""The README's status table, generated from the results files it cites.

Each row reads one number from one results file and says which weights it was measured on: the
short generator digest (weights + calibration, as cases record it), marked where that is not the
shipped weights' or where the file says it is stale. ``--write`` puts the table between the
README's status markers; ``--check`` (used by the tests) fails when the README's table is not what
the results files say.

    python scripts/readme_status.py --write
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # results_tables.py, shared with model_card.py

from results_tables import (  # noqa: E402
    REPO,
    get,
    load,
    measured_on,
    replace_block,
    shipped_digest,
    value_range,
    weights_cell,
)

README = REPO / "README.md"
BEGIN, END = "<!-- status:begin (scripts/readme_status.py) -->", "<!-- status:end -->"


def _liver_cov(group: str, key: str = "liver_from_labels") -> Callable[[dict], str]:
    return lambda d: value_range([c[key]["cov"] for c in d["groups"][group] if c.get(key, {}).get("found")], ".2f")


#: (what, results file relative to the repository, how to read the value from it).
ROWS: list[tuple[str, str, Callable[[dict], str]]] = [
    ("Organ x sex mean SUVs within 10 % of the development phantom cohort (version 3, seed 1000)",
     "synthaug/weights/evaluation/acceptance.json",
     lambda d: f"{round(d['suv_within_10pct'] * len(d['organ_sex_rows']))} of {len(d['organ_sex_rows'])}"),
    ("Organ x sex mean volumes within 10 % of the development phantom cohort (version 3, seed 1000)",
     "synthaug/weights/evaluation/acceptance.json",
     lambda d: f"{round(d['volume_within_10pct'] * len(d['organ_sex_rows']))} of {len(d['organ_sex_rows'])}"),
    ("Organ x sex mean SUVs / volumes within 10 % of the final test cohort (phantom version 3, seed 5000, evaluated once)",
     "synthaug/weights/evaluation/final_test/acceptance.json",
     lambda d: " / ".join(f"{round(d[k] * len(d['organ_sex_rows']))} of {len(d['organ_sex_rows'])}"
                          for k in ("suv_within_10pct", "volume_within_10pct"))),
    ("Requested vs generated body weight / height (brain-to-bladder distance), Pearson r",
     "synthaug/weights/evaluation/acceptance.json", lambda d: f"{d['weight_r']:.2f} / {d['height_landmarks_r']:.2f}"),
    ("Liver VOI noise (CoV) of cascade cases without the scanner model (the networks' own PET); real FDG PET: "
     "see next row", "benchmarks/results/realism.json", _liver_cov("cascade")),
    ("Liver VOI noise (CoV) of the real whole-body PET (liver found without labels)", "benchmarks/results/realism.json",
     _liver_cov("real", "liver")),
    ("Liver VOI noise (CoV) of cascade cases with the default scanner model", "benchmarks/results/realism.json",
     _liver_cov("cascade+scan")),
    ("Body volume in the field of view (l), same demographics: cascade cases with the default scanner model / "
     "the real whole-body PET", "benchmarks/results/realism.json",
     lambda d: " / ".join(value_range([c["body"]["volume_l"] for c in d["groups"][g]], ".1f")
                          for g in ("cascade+scan", "real"))),
    ("Lesions' SUVmean / SUVmax at the held-out real sarcomas' sizes, median: inserted / generated cases' lesion "
     "prior (real: next row)", "benchmarks/results/lesion_insertion.json",
     lambda d: " / ".join(f"{get(d, 'by_role', 'test', k, 'mean_over_max', 'median'):.2f}"
                          for k in ("insertion", "prior_fitted"))),
    ("Held-out real sarcomas' SUVmean / SUVmax, median (the uptake was fitted on the others)",
     "benchmarks/results/lesion_insertion.json",
     lambda d: f"{get(d, 'by_role', 'test', 'real_crops', 'mean_over_max', 'median'):.2f}"),
    ("Downstream lesion Dice, 4 real cases: real only / + synthaug 1:2 / + copy-paste / + phantom, mean over seeds",
     "benchmarks/results/downstream.json", lambda d: " / ".join(
         f"{_summary(d, arm, 4)['lesion_dice']['mean']:.3f}"
         for arm in ("real_only", "real_synth_1to2", "real_copypaste", "real_phantom"))
     + f" ({len(d['arguments']['seeds'])} seeds)"),
    ("Downstream: lesion Dice of + synthaug 1:2 minus real only, 4 real cases, paired, 95 % interval",
     "benchmarks/results/downstream.json", lambda d: _paired(_summary(d, "real_synth_1to2", 4))),
    ("Downstream shift scenario (no BMI >= 30 in training): + synthaug for the missing group minus real only",
     "benchmarks/results/downstream.json", lambda d: _paired(_summary(d, "shift_synth", 8), "shift_real_only")),
    ("Seconds per demo case, whole cascade, one CPU thread", "benchmarks/results/speed.json",
     lambda d: f"{get(d, 'results', 'timing', 'cascade', 'seconds_per_case'):.1f} s"),
    ("Cache reads (.npy) vs the same cases as .nii.gz", "benchmarks/results/io.json",
     lambda d: f"{get(d, 'results', 'read_speedup_vs_nii_gz', 'npy'):.1f}x faster"),
]


def _summary(d: dict, arm: str, n_real: int) -> dict:
    return next(r for r in d["summary"] if r["arm"] == arm and r["n_real"] == n_real)


def _paired(row: dict, baseline: str = "real_only") -> str:
    diff = row[f"lesion_dice_vs_{baseline}"]
    return f"{diff['mean']:+.3f} [{diff['low']:+.3f}, {diff['high']:+.3f}]"


def table(shipped: str) -> str:
    lines = ["| measured | value | results file | weights |", "|---|---|---|---|"]
    for what, rel, read in ROWS:
        data = load(rel)
        weights = weights_cell(measured_on(data), shipped, data.get("stale"))
        lines.append(f"| {what} | {read(data)} | [{Path(rel).name}]({rel}) | {weights} |")
    return "\n".join(lines) + "\n"


def render(readme: str, shipped: str) -> str:
    """``readme`` with its status block regenerated."""
    return replace_block(readme, BEGIN, END, table(shipped), f"README.md has no status block ({BEGIN} ... {END})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help="regenerate the README's status table")
    mode.add_argument("--check", action="store_true", help="exit 1 when the README's table is out of date")
    args = parser.parse_args(argv)
    readme = README.read_text()
    new = render(readme, shipped_digest())
    if args.check:
        if new != readme:
            print("README.md's status table differs from the results files: run scripts/readme_status.py --write")
            return 1
        return 0
    README.write_text(new)
    print(f"wrote the status table of {README}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

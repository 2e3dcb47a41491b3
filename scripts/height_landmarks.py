"""How well a generator follows the requested height, measured where the field of view cannot cut it.

``synthaug evaluate`` correlates the requested height with the body's extent along z. That extent ends
where the field of view ends: the demo grid (1024 mm) cuts phantom version 3's bodies of people taller
than about 170 cm, and its scan end is drawn per case, so even the phantom itself reaches only r 0.88 on
it (version 2: 0.96). This script sets beside it the distance along z between the brain's and the urinary
bladder's centroids in the organ labels, which lies inside every field of view from the head to the
thighs and grows with height (about 4.8 mm per cm in the phantom), for a reference cohort and a
synthetic cohort of the same demographics (row by row, as ``synthaug generate --demographics`` writes it).
Its body extent is the labelled voxels' (no CT threshold, slices counted), a stand-in for the evaluation's
(CT body mask, first to last slice): on the phantom-v3 development cohort they give r 0.737 and 0.744.

    python scripts/height_landmarks.py --reference data/phantom_v3_dev --synthetic runs/eval_syn_v3_dev \
        --out benchmarks/results/height_landmarks_candidate_v3.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from synthaug.core.io import ORGANS_FILE, Cohort, atomic_write_json, read_nifti
from synthaug.evaluation.metrics import landmark_distance_mm

MEASURES = ("body_extent_mm", "brain_to_bladder_mm")


def landmarks(organs: np.ndarray, affine: np.ndarray) -> dict[str, float]:
    """The body's extent along z (mm; voxels with any label) and the z distance between the brain's and
    the urinary bladder's centroids (mm; NaN when either is missing; ``synthaug evaluate``'s measure)."""
    dz = float(abs(affine[2, 2]))
    return {"body_extent_mm": float((organs > 0).any(axis=(0, 1)).sum()) * dz,
            "brain_to_bladder_mm": landmark_distance_mm(organs, 2, dz)}


def cohort_landmarks(root: str | Path) -> tuple[list[float], list[dict[str, float]]]:
    """Requested heights and landmarks of every case of a cohort, in its demographics' order."""
    cohort = Cohort(root)
    if not cohort.has_organs:
        raise SystemExit(f"{root}: every case needs {ORGANS_FILE}")
    heights, marks = [], []
    for case_id in cohort:
        organs, affine = read_nifti(cohort.path(case_id) / ORGANS_FILE)
        heights.append(float(cohort.demographics[case_id].height_cm))
        marks.append(landmarks(organs, affine))
    return heights, marks


def fidelity(heights: list[float], marks: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Per measure: Pearson r with the requested height and the slope (mm per cm), over the cases that have it."""
    out = {}
    h = np.asarray(heights)
    for measure in MEASURES:
        v = np.array([m[measure] for m in marks])
        ok = np.isfinite(v)
        out[measure] = {"pearson_r": float(np.corrcoef(h[ok], v[ok])[0, 1]),
                        "slope_mm_per_cm": float(np.polyfit(h[ok], v[ok], 1)[0]), "n": int(ok.sum())}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference", required=True, help="a cohort with organ labels")
    ap.add_argument("--synthetic", required=True, help="a cohort of the same demographics, row by row")
    ap.add_argument("--out", help="write the result as JSON")
    args = ap.parse_args(argv)
    ref_h, ref_m = cohort_landmarks(args.reference)
    syn_h, syn_m = cohort_landmarks(args.synthetic)
    if not np.allclose(ref_h, syn_h, atol=0.05):
        raise SystemExit(f"{args.synthetic}: its heights are not {args.reference}'s row by row")
    manifest = Path(args.synthetic) / "manifest.json"
    result = {"command": "python scripts/height_landmarks.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "reference": args.reference, "synthetic": args.synthetic,
              "generator_sha256": json.loads(manifest.read_text()).get("generator_sha256") if manifest.is_file() else None,
              "reference_fidelity": fidelity(ref_h, ref_m), "synthetic_fidelity": fidelity(syn_h, syn_m)}
    for measure in MEASURES:
        r, s = result["reference_fidelity"][measure], result["synthetic_fidelity"][measure]
        print(f"{measure}: reference r {r['pearson_r']:.3f} ({r['slope_mm_per_cm']:.1f} mm/cm), "
              f"synthetic r {s['pearson_r']:.3f} ({s['slope_mm_per_cm']:.1f} mm/cm), {s['n']} cases")
    if args.out:
        atomic_write_json(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

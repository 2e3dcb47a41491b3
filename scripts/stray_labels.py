"""The stray pieces of organ labels in a cohort: what ``synthaug.core.labels.clean_organ_map`` relabels.

For each case, each piece of an organ's label that :func:`~synthaug.core.labels.stray_label_pieces` calls
stray: the organ, its size, its distance from the organ's kept pieces and the labels it borders (the
labels its voxels take when relabelled); per organ, how many cases have such pieces and how large and far
they are. Run it on a cohort sampled with ``--raw-labels`` (or before the clean-up existed) to see what
the sampler's default removes; on a cleaned cohort it finds nothing.

    python scripts/stray_labels.py runs/eval_syn_v3_dev --out benchmarks/results/stray_labels.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

from synthaug.core.io import Cohort, atomic_write_json
from synthaug.core.labels import (
    ORGAN_LABELS,
    ORGAN_PARTS,
    STRAY_MAX_FRACTION,
    STRAY_MIN_GAP_MM,
    clean_organ_map,
    stray_label_pieces,
)


def case_pieces(organs: np.ndarray, spacing) -> tuple[list[dict], dict[str, int]]:
    """The stray pieces of one organ map and, per label, how many voxels the clean-up gives it."""
    spacing = np.asarray(spacing, dtype=np.float64)
    stray = stray_label_pieces(organs, spacing)
    cleaned, _ = clean_organ_map(organs, spacing)
    pieces, n = ndimage.label(stray, structure=np.ones((3, 3, 3), dtype=bool))
    voxel_ml = float(np.prod(spacing)) / 1000.0
    rows = []
    distance_to_kept: dict[int, np.ndarray | None] = {}  # per organ: mm to its kept pieces, one transform each
    for i in range(1, n + 1):
        piece = pieces == i
        organ = int(np.bincount(organs[piece]).argmax())
        if organ not in distance_to_kept:
            kept = (organs == organ) & ~stray
            distance_to_kept[organ] = ndimage.distance_transform_edt(~kept, sampling=spacing) if kept.any() else None
        gap = None if distance_to_kept[organ] is None else float(distance_to_kept[organ][piece].min())
        becomes = np.bincount(cleaned[piece], minlength=len(ORGAN_LABELS))
        rows.append({"organ": ORGAN_LABELS[organ], "voxels": int(piece.sum()), "ml": round(piece.sum() * voxel_ml, 2),
                     "gap_mm": None if gap is None else round(gap, 1),
                     "becomes": {ORGAN_LABELS[k]: int(v) for k, v in enumerate(becomes) if v}})
    gained = np.bincount(cleaned[stray], minlength=len(ORGAN_LABELS))
    return rows, {ORGAN_LABELS[k]: int(v) for k, v in enumerate(gained) if v}


def summarise(cases: dict[str, list[dict]]) -> dict[str, dict]:
    """Per organ: cases with stray pieces, pieces per case (median, max), sizes (ml) and gaps (mm)."""
    out = {}
    for organ in ORGAN_PARTS:
        per_case = [[p for p in rows if p["organ"] == organ] for rows in cases.values()]
        found = [p for rows in per_case for p in rows]
        if not found:
            out[organ] = {"cases_with_pieces": 0}
            continue
        counts = [len(rows) for rows in per_case]
        gaps = [p["gap_mm"] for p in found if p["gap_mm"] is not None]
        out[organ] = {"cases_with_pieces": sum(c > 0 for c in counts), "pieces": len(found),
                      "pieces_per_case_median": float(np.median(counts)), "pieces_per_case_max": max(counts),
                      "ml_min": min(p["ml"] for p in found), "ml_median": float(np.median([p["ml"] for p in found])),
                      "ml_max": max(p["ml"] for p in found),
                      "gap_mm_min": min(gaps) if gaps else None, "gap_mm_median": float(np.median(gaps)) if gaps else None,
                      "ml_per_case_mean": round(sum(p["ml"] for p in found) / len(per_case), 2)}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("cohort", type=Path, help="a cohort or `synthaug generate` cache (NIfTI)")
    p.add_argument("--out", type=Path, required=True, help="results JSON")
    args = p.parse_args(argv)
    try:
        cohort = Cohort(args.cohort)
    except (FileNotFoundError, ValueError) as err:
        print(f"stray_labels: error: {err}", file=sys.stderr)
        return 2
    manifest = args.cohort / "manifest.json"
    header = json.loads(manifest.read_text()) if manifest.is_file() else {}
    cases, relabelled = {}, {}
    for cid in cohort.case_ids:
        case = cohort.load(cid)
        cases[cid], relabelled[cid] = case_pieces(case.organs, case.spacing)
    voxels = [sum(p["voxels"] for p in rows) for rows in cases.values()]
    result = {"command": "python scripts/stray_labels.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "cohort": str(args.cohort), "n_cases": len(cases),
              "generator": {"sha256": header.get("generator_sha256"), "settings": header.get("settings")},
              "rule": {"max_fraction": STRAY_MAX_FRACTION, "min_gap_mm": STRAY_MIN_GAP_MM},
              "voxels_relabelled_per_case": {"median": float(np.median(voxels)) if voxels else 0.0,
                                             "max": max(voxels, default=0),
                                             "cases_with_any": sum(v > 0 for v in voxels)},
              "labels_given": {k: sum(r.get(k, 0) for r in relabelled.values()) for k in ORGAN_LABELS.values()
                               if any(k in r for r in relabelled.values())},
              "organs": summarise(cases), "cases": cases}
    atomic_write_json(args.out, result)
    print(json.dumps({k: result[k] for k in ("n_cases", "voxels_relabelled_per_case", "labels_given")}, indent=1))
    for organ, row in result["organs"].items():
        print(organ, row)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Per-organ median CT (HU) of the real TotalSegmentator example against the phantom (docs/phantom.md).

Real: ``../shared/reference/totalseg_example/example_ct_sm.nii.gz`` with its ``example_seg`` labels (v2 "total"
map), each organ eroded by one voxel; unlabelled voxels of -200..-30 HU stand for fat. Phantom: the median HU of
each eroded organ of ``--cases`` population cases (``sample_population(n, seed=21)``, seeds 100+) on the demo grid.

    python scripts/phantom_ct_check.py --cases 3 --version 2
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy import ndimage

from synthaug.core.demographics import sample_population
from synthaug.core.io import read_nifti
from synthaug.core.labels import ORGAN_IDS
from synthaug.phantom.body import make_phantom

REAL = Path(__file__).resolve().parents[2] / "shared" / "reference" / "totalseg_example"
#: TotalSegmentator v2 "total" labels of each organ (those present in the example crop).
REAL_LABELS = {"liver": [5], "spleen": [1], "kidney right": [2], "kidney left": [3], "aorta": [52],
               "lungs": list(range(10, 15)), "stomach": [6], "back muscle": [86, 87], "vertebrae": list(range(26, 51)),
               "ribs": list(range(92, 116)), "costal cartilage": [117]}


def _median(ct: np.ndarray, mask: np.ndarray) -> float:
    core = ndimage.binary_erosion(mask)
    return float(np.median(ct[core if core.sum() >= 20 else mask]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=3)
    ap.add_argument("--version", type=int, default=2)
    args = ap.parse_args()
    ct, _ = read_nifti(REAL / "example_ct_sm.nii.gz", np.float32)
    seg, _ = read_nifti(REAL / "example_seg.nii.gz")
    print("| real organ | median HU |\n|---|---|")
    for name, labels in REAL_LABELS.items():
        mask = np.isin(seg, labels)
        if mask.any():
            print(f"| {name} | {_median(ct, mask):.0f} |")
    print(f"| fat (unlabelled, -200..-30 HU) | {np.median(ct[(seg == 0) & (ct > -200) & (ct < -30)]):.0f} |")
    rows: dict[str, list[float]] = {k: [] for k in ORGAN_IDS if k != "background"}
    for i, d in enumerate(sample_population(args.cases, seed=21)):
        case = make_phantom(d, seed=100 + i, version=args.version)
        for name, values in rows.items():
            mask = case.organs == ORGAN_IDS[name]
            if mask.any():
                values.append(_median(case.ct, mask))
    print(f"\n| phantom v{args.version} organ | median HU, mean ± sd over {args.cases} cases |\n|---|---|")
    for name, values in rows.items():
        print(f"| {name} | {np.mean(values):.0f} ± {np.std(values):.0f} |")


if __name__ == "__main__":
    main()

"""Voxel by voxel, how far the same cases in two folders differ (e.g. one generator run twice).

For every case id present in both folders (every ``--every``-th of them): the share of voxels
with the same organ and lesion label, and the largest |SUV| and |HU| difference; then the
extremes over the cases.

    python scripts/case_differences.py runs/eval_syn_onepatch runs/eval_syn_final --every 6
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from synthaug.core.io import CT_FILE, read_case


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("first")
    ap.add_argument("second")
    ap.add_argument("--every", type=int, default=1, help="compare every k-th common case")
    args = ap.parse_args()
    a, b = Path(args.first), Path(args.second)
    common = sorted(p.name for p in a.iterdir() if (p / CT_FILE).is_file() and (b / p.name / CT_FILE).is_file())
    if not common:
        raise SystemExit(f"no case folder is in both {a} and {b}")
    rows = []
    for case_id in common[:: args.every]:
        x, y = read_case(a / case_id), read_case(b / case_id)
        if x.shape != y.shape:
            raise SystemExit(f"case {case_id}: shapes differ, {x.shape} vs {y.shape}")
        rows.append((float((x.organs == y.organs).mean()), float(((x.lesions > 0) == (y.lesions > 0)).mean()),
                     float(np.abs(x.pet - y.pet).max()), float(np.abs(x.ct - y.ct).max())))
        print(f"{case_id}: organ labels {100 * rows[-1][0]:.4f} % equal, lesion labels {100 * rows[-1][1]:.4f} %, "
              f"max |dSUV| {rows[-1][2]:.2g}, max |dHU| {rows[-1][3]:.2g}")
    r = np.asarray(rows)
    print(f"{len(rows)} of {len(common)} common cases: organ labels at least {100 * r[:, 0].min():.4f} % equal, "
          f"lesion labels at least {100 * r[:, 1].min():.4f} %, max |dSUV| {r[:, 2].max():.2g}, max |dHU| {r[:, 3].max():.2g}")


if __name__ == "__main__":
    main()

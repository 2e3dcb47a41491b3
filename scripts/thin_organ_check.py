"""Whether thin organs stay whole on the global grid, under each organ rule, and in stage-1 samples.

For the first ``--cases`` cases of a cohort: each thin organ's (``synthaug.model.preprocess.THIN_ORGANS``)
share of its global-grid voxels in its largest part (``main_part_pct``) and its voxel count
under ``organ_rule`` "argmax" and "thin", its volume in global voxels on the source grid,
and which classes the thin rule takes its extra voxels from. With ``--samples N``, also the
same share in N stage-1 samples of ``--weights`` (demographics of the first N cases, seed i).

    python scripts/thin_organ_check.py --data data/phantom_train --cases 60 --samples 4
"""

from __future__ import annotations

import argparse
from collections import Counter

import numpy as np

from synthaug.core.io import Cohort
from synthaug.core.labels import ORGAN_IDS, ORGAN_LABELS
from synthaug.evaluation.metrics import main_part_pct
from synthaug.model.preprocess import ORGAN_RULES, THIN_ORGANS, to_grid
from synthaug.model.stages import default_stage_config


def _summary(parts: list[float]) -> str:
    a = np.asarray(parts)
    return f"mean {a.mean():.1f} %, median {np.median(a):.1f} %, whole in {int((a >= 99.95).sum())} of {a.size}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--cases", type=int, default=60)
    ap.add_argument("--preset", default="demo")
    ap.add_argument("--samples", type=int, default=0, help="stage-1 samples of --weights to measure too")
    ap.add_argument("--weights", default=None, help="weights folder (default: the shipped demo weights)")
    args = ap.parse_args()
    grid = default_stage_config("global", args.preset).global_grid
    cohort = Cohort(args.data)
    ids = cohort.case_ids[: args.cases]
    for organ in THIN_ORGANS:
        label = ORGAN_IDS[organ]
        parts = {rule: [] for rule in ORGAN_RULES}
        voxels = {rule: [] for rule in ORGAN_RULES}
        source, taken = [], Counter()
        for case_id in ids:
            case = cohort.load(case_id)
            source.append((case.organs == label).sum() * case.voxel_volume_ml * 1000.0 / float(np.prod(grid.spacing)))
            maps = {rule: to_grid(case, grid, organ_rule=rule).organs for rule in ORGAN_RULES}
            for rule, organs in maps.items():
                parts[rule].append(main_part_pct(organs == label))
                voxels[rule].append(int((organs == label).sum()))
            added = (maps["thin"] == label) & (maps["argmax"] != label)
            taken.update(maps["argmax"][added].tolist())
        n = len(ids)
        print(f"{organ}, {n} cases of {args.data}, global grid {grid.shape} at {grid.spacing[0]:g} mm:")
        print(f"  its volume on the source grid: {np.mean(source):.1f} global voxels per case")
        for rule in ORGAN_RULES:
            print(f"  {rule:6s}: {np.mean(voxels[rule]):.1f} voxels per case; largest part {_summary(parts[rule])}")
        print("  the thin rule takes per case: "
              + ", ".join(f"{ORGAN_LABELS[c]} {k / n:.1f}" for c, k in taken.most_common()))
    if args.samples:
        from synthaug.sampling.cascade import CascadedSampler

        sampler = CascadedSampler.from_pretrained(args.weights, stages="global")
        demos = [cohort.demographics[c] for c in cohort.case_ids[: args.samples]]
        cases = sampler.sample(demos, seed=list(range(args.samples)))
        for organ in THIN_ORGANS:
            got = [main_part_pct(c.organs == ORGAN_IDS[organ]) for c in cases]
            print(f"{organ} in {args.samples} stage-1 samples ({sampler.global_config.organ_rule} training targets): "
                  f"largest part {_summary(got)}")


if __name__ == "__main__":
    main()

"""Where the per-case spread of the cascade's organ HU comes from: stage 1 or stage 2.

For the first cases of a cohort, each organ's median HU in the calibrated global stage's
sample (seed i for case i, the seeds ``synthaug generate`` and the evaluation use) and in
the cohort case resampled to the global grid as in training; with ``--final`` (the
evaluation's ``metrics.json`` of the whole cascade on the same demographics and seeds) also
the spread of the final cases' medians and their correlation with stage 1's. A spread
well above the training cases' that the final cases share says the global stage sets the
organs' level per case and the SR stage keeps it.

    python scripts/stage1_organ_hu.py --weights synthaug/weights --cohort data/phantom_test \\
        --cases 20 --final synthaug/weights/evaluation/metrics.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from synthaug.core.case import Case  # noqa: E402
from synthaug.core.io import Cohort  # noqa: E402
from synthaug.evaluation.metrics import ORGANS, organ_measurements  # noqa: E402
from synthaug.model.channels import decode  # noqa: E402
from synthaug.model.preprocess import to_grid  # noqa: E402
from synthaug.sampling.cascade import CascadedSampler  # noqa: E402


def _medians(case: Case) -> dict[str, float]:
    return {name: row["ct_median_hu"] for name, row in organ_measurements(case).items()}


def _finite(values: list[float]) -> np.ndarray:
    v = np.asarray(values, np.float64)
    return v[np.isfinite(v)]  # an organ a case lacks has no median


def _sd(values: list[float]) -> float:
    v = _finite(values)
    return float(v.std()) if len(v) > 1 else math.nan


def _median(values: list[float]) -> float:
    v = _finite(values)
    return float(np.median(v)) if len(v) else math.nan


def collect(weights: str | None, cohort: Cohort, cases: int) -> tuple[dict, dict]:
    """Per organ, the median HU of each of the first ``cases`` cases: in the global stage's
    calibrated sample for its demographics (seed = case index), and in the case itself
    resampled to the global grid."""
    sampler = CascadedSampler.from_pretrained(weights, stages="global")
    cfg = sampler.global_config
    stage1 = {name: [] for name in ORGANS}
    truth = {name: [] for name in ORGANS}
    for i in range(cases):
        case_id = cohort.case_ids[i]
        x = decode(sampler.sample_global([cohort.demographics[case_id]], [i])[0])
        generated = Case(x["ct"], x["pet"], x["organs"], x["lesions"], cfg.global_grid.affine)
        resampled = to_grid(cohort.load(case_id), cfg.global_grid, **cfg.resampling(cfg.global_grid))
        for name, v in _medians(generated).items():
            stage1[name].append(v)
        for name, v in _medians(resampled).items():
            truth[name].append(v)
    return stage1, truth


def report(stage1: dict, truth: dict, final: dict | None = None) -> list[str]:
    """One line per organ: the cohort's and stage 1's median and sd of the per-case medians,
    with ``final`` the final cases' sd and their correlation with stage 1's."""
    head = f"{'organ':16s} {'cohort median':>13s} {'sd':>6s} {'stage 1 median':>14s} {'sd':>6s}"
    lines = [head + (f" {'final sd':>9s} {'r(stage 1, final)':>18s}" if final else "")]
    for name in ORGANS:
        line = (f"{name:16s} {_median(truth[name]):13.1f} {_sd(truth[name]):6.1f} "
                f"{_median(stage1[name]):14.1f} {_sd(stage1[name]):6.1f}")
        if final:
            a, b = np.asarray(stage1[name], np.float64), np.asarray(final[name], np.float64)
            ok = np.isfinite(a) & np.isfinite(b)
            r = np.corrcoef(a[ok], b[ok])[0, 1] if ok.sum() > 2 and a[ok].std() > 0 and b[ok].std() > 0 else math.nan
            line += f" {_sd(final[name]):9.1f} {r:18.2f}"
        lines.append(line)
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", default=None, help="weights folder (default: the shipped demo weights)")
    p.add_argument("--cohort", required=True, help="cohort whose demographics (and cases) to use")
    p.add_argument("--cases", type=int, default=20, help="its first N cases (default 20)")
    p.add_argument("--final", help="metrics.json of `synthaug evaluate` on the whole cascade, same cohort and seeds")
    args = p.parse_args(argv)

    cohort = Cohort(args.cohort)
    if not 2 <= args.cases <= len(cohort):
        p.error(f"--cases {args.cases}: need 2..{len(cohort)} (the cohort's size)")
    final = None
    if args.final:
        try:
            rows = json.loads(Path(args.final).read_text())["cases"]["synthetic"][:args.cases]
            final = {name: [r["values"][name]["ct_median_hu"] for r in rows] for name in ORGANS}
            seeds, heights = [r["seed"] for r in rows], [r["demographics"]["height_cm"] for r in rows]
        except (OSError, ValueError, KeyError, TypeError) as err:
            p.error(f"--final {args.final}: not a readable evaluation metrics.json ({type(err).__name__}: {err})")
        wanted = [cohort.demographics[cohort.case_ids[i]].height_cm for i in range(args.cases)]
        if seeds != list(range(args.cases)) or not np.allclose(heights, wanted, atol=0.05):
            p.error(f"--final {args.final}: its first {args.cases} synthetic cases are not seeds 0..{args.cases - 1} "
                    f"for the demographics of {args.cohort}")
    stage1, truth = collect(args.weights, cohort, args.cases)
    print(f"organ median HU over {args.cases} cases of {args.cohort} (stage 1 on the global grid)")
    print("\n".join(report(stage1, truth, final)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``synthaug evaluate``: organ-wise volume/SUV agreement per subgroup, conditioning fidelity, memorisation."""

from __future__ import annotations

import argparse
import os
import sys

from .arguments import refuse_existing

HELP = "Compare synthetic PET/CT with a reference cohort: organ volumes and SUVs per subgroup, fidelity, memorisation."

EPILOG = """\
synthetic cases (one of):
  --synthetic DIR          a cohort folder in the AutoPET layout (with ORGANS.nii.gz per case)
  --weights W|demo         generate --n-per-case cases per reference case with the diffusion cascade,
                           for the reference case's demographics (demo = the shipped demo weights)
  --phantom                the same with the parametric phantom (on the reference grid)

written to --out:
  metrics.json             everything: per-case measurements, every subgroup x organ x metric comparison,
                           fidelity, memorisation, settings
  report.md                tables (largest deviations first), baseline, fidelity and memorisation sections
  *.png                    box plots, deviation heat map, requested-vs-measured scatter, image montage

The parametric phantom, generated for the reference demographics, is always evaluated
as the baseline (unless --no-baseline). Real cohorts without ORGANS.nii.gz need
--organs-dir with one TotalSegmentator v2 "total" segmentation per case
(<case>.nii.gz or <case>/). Definitions: docs/evaluation.md.
"""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("--reference", required=True, metavar="COHORT_DIR",
                        help="reference cohort (AutoPET layout with demographics.csv)")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--synthetic", metavar="DIR", help="synthetic cohort folder")
    src.add_argument("--weights", metavar="W", help="generator weights to sample from, or 'demo'")
    src.add_argument("--phantom", action="store_true", help="evaluate the parametric phantom")
    parser.add_argument("--n-per-case", type=int, default=1, metavar="K",
                        help="synthetic cases per reference case with --weights/--phantom (default: 1)")
    parser.add_argument("--batch-size", type=int, default=1, metavar="B",
                        help="cases per generator call with --weights/--phantom (default: 1; results do not change)")
    parser.add_argument("--training", metavar="DIR", help="training cohort for the memorisation check")
    parser.add_argument("--organs-dir", metavar="DIR", help="organ segmentations of the reference cases")
    parser.add_argument("--organs-map", choices=("totalseg", "synthaug"), default="totalseg",
                        help="label ids in --organs-dir: TotalSegmentator v2 'total' (default) or the synthaug map")
    parser.add_argument("--out", required=True, metavar="REPORT_DIR", help="report folder")
    parser.add_argument("--seed", type=int, default=0, help="seed of generated case i is SEED + i (default: 0)")
    parser.add_argument("--min-cell", type=int, default=5, metavar="N",
                        help="smallest subgroup cell (cases per side) that is reported (default: 5)")
    parser.add_argument("--memorisation-percentile", type=float, default=1.0, metavar="P",
                        help="flag a synthetic case whose nearest training case is at most M x the P-th percentile "
                             "of training nearest-neighbour distances away (default P: 1)")
    parser.add_argument("--memorisation-margin", type=float, default=0.5, metavar="M",
                        help="M in that rule (default: 0.5; see docs/evaluation.md)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the parametric-phantom baseline table")
    parser.add_argument("--force", action="store_true", help="write into an existing --out folder")


def run(args: argparse.Namespace) -> int:
    from ..core.io import Cohort
    from ..evaluation.evaluate import evaluate_cohorts

    if args.n_per_case < 1:
        raise ValueError(f"--n-per-case={args.n_per_case} must be >= 1")
    if args.n_per_case != 1 and args.synthetic is not None:
        raise ValueError("--n-per-case only applies with --weights or --phantom")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size={args.batch_size} must be >= 1")
    if args.min_cell < 1:
        raise ValueError(f"--min-cell={args.min_cell} must be >= 1")
    if not 0.0 <= args.memorisation_percentile <= 100.0:
        raise ValueError(f"--memorisation-percentile={args.memorisation_percentile} must be in [0, 100]")
    refuse_existing([args.out], args.force)
    reference = Cohort(args.reference)  # missing folder or demographics.csv: error before loading a model
    for flag, path in (("--synthetic", args.synthetic), ("--training", args.training), ("--organs-dir", args.organs_dir)):
        if path is not None and not os.path.isdir(path):
            raise FileNotFoundError(f"{flag}: folder not found: {path}")
    if args.weights not in (None, "demo") and not os.path.exists(args.weights):
        raise FileNotFoundError(f"--weights: not found: {args.weights}")

    synthetic, label = args.synthetic, None
    if args.phantom:
        from ..evaluation.evaluate import reference_grid
        from ..sampling.generator import PhantomGenerator

        synthetic = PhantomGenerator(grid=reference_grid(reference))
        label = f"parametric phantom ({args.n_per_case} per reference case)"
    elif args.weights is not None:
        try:
            from ..sampling.cascade import CascadedSampler
        except ImportError as err:
            raise RuntimeError(f"the diffusion cascade is not available ({err}); use --phantom or --synthetic") from None
        synthetic = CascadedSampler.from_pretrained(None if args.weights == "demo" else args.weights)
        label = f"diffusion cascade {args.weights} ({args.n_per_case} per reference case)"

    result = evaluate_cohorts(
        reference, synthetic, args.out, training=args.training, baseline=None if args.no_baseline else "phantom",
        n_per_case=args.n_per_case, batch_size=args.batch_size, organs_dir=args.organs_dir, organs_map=args.organs_map, min_cell=args.min_cell,
        memorisation_percentile=args.memorisation_percentile, memorisation_margin=args.memorisation_margin, seed=args.seed, progress=sys.stderr.isatty(),
        synthetic_label=label,
    )
    s = result["comparison"]["summary"]
    print(f"wrote {os.path.join(args.out, 'report.md')} and metrics.json ({len(result['plots'])} plots)")
    print(f"SUVmean, all cases: median |deviation| {_pct(s['suv_mean_abs_deviation_pct_median'])}, largest "
          f"{_pct(s['suv_mean_abs_deviation_pct_max'])} ({s['suv_mean_worst_organ']}); "
          f"{s['significant']} of {s['tests']} comparisons differ (BH q < {s['alpha']})")
    if result.get("memorisation"):
        m = result["memorisation"]
        print(f"memorisation: {m['n_flagged']} of {len(m['cases'])} synthetic cases flagged")
    return 0


def _pct(x) -> str:
    return "–" if x is None else f"{x:.1f} %"

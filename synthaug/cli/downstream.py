"""``synthaug downstream``: train one segmentation model under several data arms and compare them on real cases."""

from __future__ import annotations

import argparse

HELP = ("Measure whether synthetic cases improve a segmentation model: one fixed MONAI recipe, several data arms, "
        "seeds and confidence intervals, scored on held-out real cases (resumable).")

EPILOG = """\
arms (each run for every --n-real and --seeds value):
  real_only              real cases, MONAI spatial + intensity augmentation (every arm gets it)
  real_copypaste         + lesion copy-paste between the real cases (TumorCP / CarveMix style)
  real_phantom           + as many fresh phantom cases, demographics matched
  real_synth_1to1        + one synthetic case per real case, demographics matched
  real_synth_1to2        + two synthetic cases per real case
  synth_only             synthetic cases only (as many as the largest --n-real), tested on real cases
  shift                  real cases without --shift-group, tested on that subgroup, without
                         (shift_real_only) and with (shift_synth) synthetic cases of the subgroup
  real_lesion_insertion  + RandLesionInsertd (reported "not available" until it exists)

written to --out:
  results.json           every arm x n_real x seed x metric, the arguments, cohort ids, generator sha256
  report.md, downstream.png   table (mean [95 % interval] over seeds) and Dice vs number of real cases
  runs/*.json            one file per finished run: a re-run skips them
  synthetic/, phantom/   cases generated for the arms (resumable caches)

docs/downstream.md describes the recipe, the metrics and the nnU-Net route.
"""

#: Library parameter -> command-line flag where the two names differ (``synthaug.cli.cli_message`` maps the rest).
PARAMETER_FLAGS = {"spacing_mm": "--spacing", "sampler_steps": "--steps"}


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``downstream`` options to ``parser``."""
    from synthaug.evaluation.downstream import ARMS, TASKS, DownstreamConfig

    d = DownstreamConfig(real="", out="")
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("--real", help="real training cohort (AutoPET layout)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (re-run to resume)")
    parser.add_argument("--test", help="held-out real test cohort (default: split --test-fraction off --real)")
    parser.add_argument("--test-fraction", type=float, default=d.test_fraction,
                        help=f"share of --real used for testing without --test (default {d.test_fraction})")
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--synthetic", metavar="DIR", help="a `synthaug generate` cache (or cohort) of synthetic cases")
    src.add_argument("--weights", metavar="DIR",
                     help="sample the synthetic cases from these weights (default: the shipped demo weights)")
    parser.add_argument("--arms", nargs="+", default=list(d.arms), choices=ARMS, metavar="ARM",
                        help="arms to run (default: all; see below)")
    parser.add_argument("--n-real", nargs="+", type=int, default=list(d.n_real), metavar="N",
                        help=f"numbers of real training cases (default {' '.join(map(str, d.n_real))})")
    parser.add_argument("--seeds", nargs="+", type=int, default=list(d.seeds), metavar="S",
                        help="one run per seed and arm (default 0 1 2)")
    parser.add_argument("--tasks", nargs="+", default=list(d.tasks), choices=TASKS, help="default: both")
    parser.add_argument("--n-val", type=int, default=d.n_val, help=f"real validation cases (default {d.n_val})")
    parser.add_argument("--spacing", type=float, default=d.spacing_mm,
                        help=f"isotropic working grid in mm (default {d.spacing_mm:g})")
    parser.add_argument("--patch", type=int, nargs=3, default=list(d.patch), metavar=("X", "Y", "Z"),
                        help="training patch in voxels (default 32 32 32)")
    parser.add_argument("--batch-size", type=int, default=d.batch_size, help=f"default {d.batch_size}")
    parser.add_argument("--iterations", type=int, default=d.iterations, help=f"default {d.iterations}")
    parser.add_argument("--lr", type=float, default=d.lr, help=f"Adam learning rate (default {d.lr:g})")
    parser.add_argument("--channels", type=int, nargs="+", default=list(d.channels),
                        help="U-Net channels per level (default 8 16 32 64)")
    parser.add_argument("--lesion-patch-fraction", type=float, default=d.lesion_patch_fraction,
                        help="share of patches centred on a lesion (default 1/3)")
    parser.add_argument("--copypaste-prob", type=float, default=d.copypaste_prob, help="default 0.5")
    parser.add_argument("--shift-group", default=d.shift_group,
                        help=f"subgroup left out in the shift arm, e.g. 'bmi>=30', 'age>70', 'sex=F' "
                             f"(default {d.shift_group})")
    parser.add_argument("--synth-seed", type=int, default=d.synth_seed,
                        help="seed of generated cases and of the test/validation split (default 0)")
    parser.add_argument("--steps", type=int, help="stage-1 sampler steps when generating (default: the weights')")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (one line per run instead)")
    parser.add_argument("--report-only", action="store_true",
                        help="only rewrite report.md and downstream.png from --out/results.json; with the run's "
                             "arguments, first collect results.json from the runs finished so far")


def run(args: argparse.Namespace) -> int:
    """Run or resume the benchmark (or rewrite its report); returns the exit code."""
    from synthaug.evaluation.downstream import DownstreamConfig, refresh_results, run_downstream, write_report

    if args.report_only and not args.real:
        path = write_report(args.out)
        print(f"report: {path}")
        return 0
    if not args.real:
        raise ValueError("--real is required (unless --report-only)")
    cfg = DownstreamConfig(
        real=args.real, out=args.out, test=args.test, test_fraction=args.test_fraction,
        synthetic=args.synthetic, weights=args.weights, arms=tuple(args.arms), n_real=tuple(args.n_real),
        seeds=tuple(args.seeds), tasks=tuple(args.tasks), n_val=args.n_val, spacing_mm=args.spacing,
        patch=tuple(args.patch), batch_size=args.batch_size, iterations=args.iterations, lr=args.lr,
        channels=tuple(args.channels), lesion_patch_fraction=args.lesion_patch_fraction,
        copypaste_prob=args.copypaste_prob, shift_group=args.shift_group, synth_seed=args.synth_seed,
        sampler_steps=args.steps, threads=args.threads, progress=not args.no_progress)
    if args.report_only:  # with the run's arguments: collect the runs finished so far (the run may go on)
        results = refresh_results(cfg)
        print(f"{sum(r.get('status') == 'done' for r in results['runs'])} finished runs -> {args.out}/report.md")
        return 0
    results = run_downstream(cfg)
    state = "complete" if results["complete"] else "INCOMPLETE"
    print(f"{len(results['runs'])} runs ({state}) -> {args.out}/results.json, report.md")
    return 0

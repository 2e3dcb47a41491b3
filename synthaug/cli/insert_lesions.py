"""``synthaug insert-lesions``: an augmented copy of a cohort with lesions inserted into its PET/CT."""

from __future__ import annotations

import argparse

HELP = "Insert FDG-avid lesions (with exact masks) into the PET/CT of a cohort: an augmented copy in the AutoPET layout."

EPILOG = """\
input (--cohort, AutoPET layout, only read):
  <case>/CTres.nii.gz, SUV.nii.gz       CT (HU) and PET (SUV), required
  <case>/SEG.nii.gz                     existing lesions (kept in the mask), optional
  <case>/ORGANS.nii.gz                  synthaug organ map; or TotalSegmentator 'total' output in --organs-dir
  demographics.csv                      its diagnosis column drives the lesion model

written to --out (same layout; each case whole or not at all; a re-run resumes):
  <case>/{CTres,SUV,SEG}.nii.gz, ORGANS.nii.gz where the input had it, meta.json (the lesions)
  demographics.csv, insert_lesions.json (the settings), insert_lesions_summary.json
"""

#: Library parameter -> command-line flag, for error messages.
PARAMETER_FLAGS = {"cohort_dir": "--cohort"}


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``insert-lesions`` options to ``parser``."""
    from synthaug.core.demographics import DIAGNOSES
    from synthaug.phantom.scanner import SCANNER_PRESETS

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("--cohort", required=True, metavar="DIR", help="input cohort (AutoPET layout)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output cohort folder (outside --cohort)")
    parser.add_argument("--seed", required=True, type=int, metavar="N", help="seed of every lesion draw")
    parser.add_argument("--diagnosis", choices=DIAGNOSES, help="diagnosis for every case (default: demographics.csv)")
    parser.add_argument("--organs-dir", metavar="DIR",
                        help="TotalSegmentator 'total' outputs (<case>.nii.gz or <case>/) for cases without ORGANS")
    parser.add_argument("--scanner", default="default", choices=["default", *sorted(SCANNER_PRESETS)],
                        help="the scanner whose PSF and noise the lesions get (default: %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Check every case, then write the augmented cohort."""
    from synthaug.data.insertion import insert_cohort
    from synthaug.phantom.lesion_paint import LesionAppearance

    summary = insert_cohort(args.cohort, args.out, seed=args.seed, diagnosis=args.diagnosis,
                            organs_dir=args.organs_dir, appearance=LesionAppearance(scanner=args.scanner),
                            progress=not args.no_progress)
    print(f"wrote {len(summary['written'])} case(s) to {args.out}, skipped {len(summary['skipped'])} already done")
    return 0

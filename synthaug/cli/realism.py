"""``synthaug realism``: realism measures of PET volumes in SUV (body, liver VOI, texture, lesions)."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "Measure body SUV quantiles, the liver VOI's mean and CoV, noise texture and lesion profiles of PET volumes."

EPILOG = """\
inputs (one or more):
  a NIfTI file         a PET in SUV (with --ct / --organs / --lesions for a single file)
  a cohort folder      AutoPET layout: <case>/SUV.nii.gz with CTres.nii.gz, and SEG / ORGANS when present

written to --out:
  realism.json         every measure of every input (definitions: docs/realism.md)
  realism.md           one column per input
"""


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``realism`` options to ``parser``."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="PET NIfTI files (SUV) or cohort folders")
    parser.add_argument("--out", required=True, metavar="DIR", help="report folder")
    parser.add_argument("--ct", metavar="NIFTI", help="CT (HU) of a single PET input: the body outline comes from it")
    parser.add_argument("--organs", metavar="NIFTI", help="synthaug organ map of a single PET input (liver = 7)")
    parser.add_argument("--lesions", metavar="NIFTI", help="lesion mask of a single PET input")
    parser.add_argument("--body-from-pet", action="store_true",
                        help="outline the body from the PET even where a CT is present")


def _measure_inputs(args: argparse.Namespace) -> dict[str, dict]:
    from synthaug.core.io import Cohort
    from synthaug.evaluation.realism import measure, measure_files

    extras = {"ct_path": args.ct, "organs_path": args.organs, "lesions_path": args.lesions}
    if any(extras.values()) and (len(args.inputs) != 1 or Path(args.inputs[0]).is_dir()):
        raise ValueError("--ct/--organs/--lesions go with exactly one PET NIfTI input")
    if args.body_from_pet:
        extras["ct_path"] = None
    results: dict[str, dict] = {}
    for item in args.inputs:
        path = Path(item)
        if path.is_dir():
            cohort = Cohort(path, require_demographics=False)
            for case_id in cohort:
                case = cohort.load(case_id, require_lesions=False)
                ct = None if args.body_from_pet else case.ct
                results[f"{path.name}/{case_id}"] = measure(case.pet, case.affine, ct=ct, organs=case.organs,
                                                            lesions=case.lesions)
                print(f"measured {path.name}/{case_id}")
        elif path.is_file():
            results[path.name] = measure_files(path, **extras)
            print(f"measured {path.name}")
        else:
            raise FileNotFoundError(f"input not found: {path}")
    return results


def run(args: argparse.Namespace) -> int:
    """Measure every input and write realism.json and realism.md to ``--out``."""
    from synthaug.core.io import atomic_write_json, atomic_write_text
    from synthaug.evaluation.realism import markdown_table

    results = _measure_inputs(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "realism.json", results)
    atomic_write_text(out / "realism.md", markdown_table(results))
    print(f"wrote {out / 'realism.json'} and {out / 'realism.md'}")
    return 0

"""``synthaug prepare``: read AutoPET as users have it and write a synthaug cohort."""

from __future__ import annotations

import argparse
import json

HELP = "Turn an AutoPET download (TCIA NIfTI or nnU-Net release) into a synthaug cohort with demographics."


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", required=True, metavar="DIR",
                        help="AutoPET as downloaded: the folder of PETCT_<id> folders (TCIA NIfTI conversion) "
                             "or the nnU-Net release (imagesTr/, labelsTr/, fdg_metadata.csv); never modified")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="cohort folder to write (<case_id>/{CTres,SUV,SEG}.nii.gz, demographics.csv, cases.csv, "
                             "prepare_report.json); re-running on it updates it in place")
    parser.add_argument("--dicom", metavar="DICOM_ROOT",
                        help="the DICOM download (PETCT_<id>/<study>/<series>/*.dcm): one header per series is read for "
                             "age, sex, height (PatientSize) and weight (PatientWeight)")
    parser.add_argument("--metadata", metavar="CSV",
                        help="fdg_metadata.csv (Subject ID, Study UID, Study Date, File Location, diagnosis, age, sex, ...); "
                             "default: <source>/fdg_metadata.csv if present")
    how = parser.add_mutually_exclusive_group()
    how.add_argument("--copy", dest="mode", action="store_const", const="copy",
                     help="copy the images (default: symbolic links, copies where links fail)")
    how.add_argument("--link", dest="mode", action="store_const", const="symlink",
                     help="symbolic links only; fail instead of copying where links are not possible")
    parser.set_defaults(mode="auto")
    parser.add_argument("--verify", action="store_true",
                        help="also decompress every image to catch truncated files (about 1 s per AutoPET-sized image; "
                             "the default reads headers only, about 1 ms per study)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON instead of the summary")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def run(args: argparse.Namespace) -> int:
    from ..data.prepare import AlreadyPreparedError, format_report, prepare_autopet

    try:
        report = prepare_autopet(
            args.source, args.out, dicom=args.dicom, metadata=args.metadata, mode=args.mode,
            verify=args.verify, progress=not args.no_progress,
        )
    except AlreadyPreparedError as err:
        print(f"synthaug prepare: {err}")
        return 0
    print(json.dumps(report, indent=2, sort_keys=True) if args.json else format_report(report))
    return 0

"""Subcommands of the ``synthaug`` CLI.

Each module here defines ``HELP`` (one line), ``configure(parser)`` and ``run(args) -> int``;
``synthaug.cli.COMMANDS`` lists them. Modules import their heavy dependencies inside ``run``.
"""

import argparse
from collections.abc import Iterable
from pathlib import Path


def add_lesions_argument(p: argparse.ArgumentParser) -> None:
    """``--lesions``, shared by the commands that sample the cascade (choices: ``synthaug.phantom.lesions.LESION_MODES``)."""
    from ..phantom.lesions import LESION_MODES

    p.add_argument("--lesions", choices=LESION_MODES,
                   help="fitted (default): add lesions from the diagnosis-conditioned lesion model to what the "
                        "networks draw, their uptake fitted to real tumours and imaged once by the scanner model "
                        "when it is on; prior: the lesion model painted as before 'fitted' (the phantom's uniform "
                        "uptake and PSF); model: only what the networks draw (the demo weights draw none)")


def add_scanner_argument(p: argparse.ArgumentParser) -> None:
    """``--scanner``, shared by the commands that sample the cascade (``synthaug.phantom.scanner`` presets)."""
    from ..phantom.scanner import SCANNER_PRESETS

    p.add_argument("--scanner", choices=("off", "default", *sorted(SCANNER_PRESETS)),
                   help="image the PET as this scanner would (resolution and count noise) as the last step; "
                        "default: what the weights name (weights trained on the activity name a scanner, as the "
                        "demo weights do; weights trained on imaged PET name none), off: the networks' PET as it is")


def add_clean_labels_argument(p: argparse.ArgumentParser) -> None:
    """``--raw-labels``, shared by the commands that sample the cascade (``synthaug.core.labels.clean_organ_map``)."""
    p.add_argument("--raw-labels", dest="clean_labels", action="store_false",
                   help="keep the organ labels as the networks draw them; by default stray pieces of an organ's "
                        "label far from the organ (a few voxels of spleen label on the heart's rim) get the label "
                        "around them")


def refuse_existing(paths: Iterable[str | Path], force: bool) -> None:
    """Stop before any work when a command would overwrite what a previous run wrote: the first of
    ``paths`` that exists, unless ``--force``."""
    if force:
        return
    for path in map(Path, paths):
        if path.exists():
            raise FileExistsError(f"{path} already exists; pass --force to overwrite or choose another --out")

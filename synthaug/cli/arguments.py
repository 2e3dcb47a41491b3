"""Subcommands of the ``synthaug`` CLI.

Each module here defines ``HELP`` (one line), ``configure(parser)`` and ``run(args) -> int``;
``synthaug.cli.COMMANDS`` lists them. Modules import their heavy dependencies inside ``run``.
"""

import argparse
from collections.abc import Iterable
from pathlib import Path


def add_lesions_argument(p: argparse.ArgumentParser) -> None:
    """``--lesions``, shared by the commands that sample the cascade (choices: ``synthaug.phantom.lesions.LESION_MODES``)."""
    p.add_argument("--lesions", choices=("prior", "model"),
                   help="prior (default): add lesions from the diagnosis-conditioned lesion model to what the "
                        "networks draw; model: only what the networks draw (the demo weights draw none)")


def refuse_existing(paths: Iterable[str | Path], force: bool) -> None:
    """Stop before any work when a command would overwrite what a previous run wrote: the first of
    ``paths`` that exists, unless ``--force``."""
    if force:
        return
    for path in map(Path, paths):
        if path.exists():
            raise FileExistsError(f"{path} already exists; pass --force to overwrite or choose another --out")

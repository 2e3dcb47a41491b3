"""Subcommands of the ``synthaug`` CLI.

Each module here defines ``HELP`` (one line), ``configure(parser)`` and ``run(args) -> int``;
``synthaug.cli.COMMANDS`` lists them. Modules import their heavy dependencies inside ``run``.
"""

import argparse


def add_lesions_argument(p: argparse.ArgumentParser) -> None:
    """``--lesions``, shared by the commands that sample the cascade (choices: ``synthaug.phantom.lesions.LESION_MODES``)."""
    p.add_argument("--lesions", choices=("prior", "model"),
                   help="prior (default): add lesions from the diagnosis-conditioned lesion model to what the "
                        "networks draw; model: only what the networks draw (the demo weights draw none)")

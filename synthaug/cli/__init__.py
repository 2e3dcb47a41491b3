"""The ``synthaug`` command line."""

from __future__ import annotations

import argparse
import re
import sys
import warnings
from collections.abc import Callable
from importlib import import_module

from .. import __version__
from ..core.demographics import OutOfDistributionWarning

#: (subcommand, module in synthaug.cli); the order is the order in ``--help``.
COMMANDS: list[tuple[str, str]] = [
    ("sample", "sample"),
    ("phantom", "phantom"),
    ("train", "train"),
    ("calibrate", "calibrate"),
    ("prepare", "prepare"),
    ("export-nnunet", "export_nnunet"),
    ("generate", "generate"),
    ("cache", "cache"),
    ("evaluate", "evaluate"),
    ("realism", "realism"),
    ("downstream", "downstream"),
    ("insert-lesions", "insert_lesions"),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="synthaug",
        description="Synthesise demography-conditioned whole-body FDG PET/CT with labels for segmentation training.",
    )
    parser.add_argument("--version", action="version", version=f"synthaug {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in COMMANDS:
        module = import_module(f"synthaug.cli.{module_name}")
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.configure(p)
        p.set_defaults(_run=module.run, _flags=getattr(module, "PARAMETER_FLAGS", {}))
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; bad input ends with one ``synthaug: error: ...`` line and exit code 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 0
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warning(warnings.showwarning)
            return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("synthaug: interrupted; finished work is kept, re-run to resume", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, FileExistsError, OSError, RuntimeError) as err:
        print(f"synthaug: error: {cli_message(str(err), args._flags)}", file=sys.stderr)
        return 2


def cli_message(text: str, flags: dict[str, str]) -> str:
    """A library message for the command line: each `parameter` the library names becomes the flag
    that sets it (``--`` + its name with dashes, or the command's ``PARAMETER_FLAGS`` where they differ)."""
    return re.sub(r"`([a-z][a-z0-9_]*)`", lambda m: flags.get(m[1], "--" + m[1].replace("_", "-")), text)


def _one_line_warning(default: Callable) -> Callable:
    """``warnings.showwarning`` that prints the library's own warnings (out-of-distribution
    demographics) as one ``synthaug: warning: ...`` line, and any other warning as ``default`` does."""

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, OutOfDistributionWarning):
            print(f"synthaug: warning: {message}", file=file or sys.stderr)
        else:
            default(message, category, filename, lineno, file, line)
    return show

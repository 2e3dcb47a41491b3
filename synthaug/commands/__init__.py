"""Subcommands of the ``synthaug`` CLI.

Each module here defines ``HELP`` (one line), ``configure(parser)`` and ``run(args) -> int``;
``synthaug.cli.COMMANDS`` lists them. Modules import their heavy dependencies inside ``run``.
"""

"""The ``trainerkit`` command: train, watch, list, tail logs, cancel.

``main()`` is the console script's entry point (``python -m trainerkit`` runs
it too). Only argparse is imported to build the parser, so ``--help`` stays
fast; each command imports what it needs, and ``rich`` is imported only to
draw a progress bar on a terminal. See ``docs/cli.md``.
"""

from __future__ import annotations

from typing import Optional, Sequence

from .exit_codes import ExitCode


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``trainerkit`` with ``argv`` (default: ``sys.argv[1:]``); return the
    exit status (see :class:`ExitCode`). Usage errors exit through argparse
    (``SystemExit`` with status 2)."""
    from .parser import build_parser

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return int(ExitCode.USAGE)
    name = args.command
    if name == "config":
        name = f"config {args.config_command}"
    from .commands import run_command

    return run_command(name, args)


__all__ = ["ExitCode", "main"]

"""Entry point of the ``medanomaly`` command."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from medanomaly import __version__
from medanomaly.errors import MedanomalyError

#: Subcommand modules under ``medanomaly.cli``; each has ``add_parser(subparsers)`` and ``run(args) -> int``.
COMMANDS = (
    "train", "score", "evaluate", "inspect", "demo", "bench", "pacs",
    "serve", "users", "feedback", "recalibrate", "retrain", "archive",
)  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="medanomaly",
        description="Anomaly detection in medical images. Decision support only: a radiologist decides.",
    )
    parser.add_argument("--version", action="version", version=f"medanomaly {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"medanomaly.cli.{name}").add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command; user errors print one line (no traceback) and return 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = (logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return int(args.run(args) or 0)
    except (MedanomalyError, ValueError, KeyError, FileNotFoundError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"medanomaly {args.command}: error: {message}", file=sys.stderr)
        if args.verbose >= 2:
            raise
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

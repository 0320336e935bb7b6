"""``medanomaly inspect PATH``: what was read from a file or series, without any model."""

from __future__ import annotations

import argparse
import json

from medanomaly.io import inspect_study


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the subcommand."""
    parser = subparsers.add_parser("inspect", help="show what medanomaly reads from an image, DICOM or NIfTI")
    parser.add_argument("paths", nargs="+", help="files or DICOM series folders")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Print one block per path."""
    summaries = [inspect_study(path) for path in args.paths]
    if args.json:
        print(json.dumps(summaries if len(summaries) > 1 else summaries[0], indent=2, default=str))
        return 0
    for summary in summaries:
        print(summary.get("path", ""))
        for key, value in summary.items():
            if key != "path" and value not in (None, "", []):
                print(f"  {key:14s} {value}")
    return 0

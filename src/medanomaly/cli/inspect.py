"""``medanomaly inspect PATH``: what was read from a file or series, without any model."""

from __future__ import annotations

import argparse
import json

from medanomaly.data.loading import Failure, describe_failures
from medanomaly.errors import InputError
from medanomaly.io import inspect_study


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the subcommand."""
    parser = subparsers.add_parser("inspect", help="show what medanomaly reads from an image, DICOM or NIfTI")
    parser.add_argument("paths", nargs="+", help="files or DICOM series folders")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Print one block per path; unreadable paths are listed at the end (exit 1 if any failed)."""
    summaries, failures = [], []
    for path in args.paths:
        try:
            summaries.append(inspect_study(path))
        except InputError as error:
            failures.append(Failure(str(path), str(error)))
    if args.json:
        if len(args.paths) == 1 and summaries:
            print(json.dumps(summaries[0], indent=2, default=str))
        else:
            payload = {"results": summaries, "failures": [f.to_dict() for f in failures]}
            print(json.dumps(payload, indent=2, default=str))
        return 1 if failures else 0
    for summary in summaries:
        print(summary.get("path", ""))
        for key, value in summary.items():
            if key != "path" and value not in (None, "", []):
                print(f"  {key:14s} {value}")
    if failures:
        print(describe_failures(failures))
    return 1 if failures else 0

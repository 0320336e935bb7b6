"""``medanomaly feedback``: the radiologists' labelled studies, as a data set for train/evaluate."""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from medanomaly.service.cli_common import add_database_arguments, open_database, settings_from


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the subcommand and its actions."""
    parser = subparsers.add_parser("feedback", help="export the studies labelled by radiologists")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    export = actions.add_parser("export", help="write DIR/<label>/ files + DIR/manifest.csv")
    export.add_argument("out", metavar="DIR")
    summary = actions.add_parser("summary", help="count labelled studies per label")
    for action in (export, summary):
        add_database_arguments(action)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Export or summarise the feedback set."""
    from medanomaly.service.feedback import export_feedback, feedback_cases

    settings = settings_from(args)
    with open_database(settings)() as db:
        if args.action == "summary":
            counts = Counter(case.label for case in feedback_cases(db))
            for label, count in sorted(counts.items()):
                print(f"{label:20s} {count}")
            print(f"{sum(counts.values())} labelled studies")
            return 0
        manifest = export_feedback(db, settings.data_dir, Path(args.out))
    lines = manifest.read_text().splitlines()[1:]
    counts = Counter(line.split(",")[1] for line in lines)
    print(f"exported {len(lines)} labelled studies ({', '.join(f'{k}: {v}' for k, v in sorted(counts.items()))})")
    print(f"manifest: {manifest}  (use: medanomaly evaluate {args.out} --model MODEL_DIR)")
    return 0

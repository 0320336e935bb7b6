"""``medanomaly recalibrate --model MODEL_DIR``: recalibrate a threshold on the radiologists' labels (feedback).

The result is a new model version saved as ``MODEL_DIR/versions/v<N>``.
"""

from __future__ import annotations

import argparse
import getpass

from medanomaly.service.cli_common import add_database_arguments, open_database, settings_from


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the subcommand."""
    parser = subparsers.add_parser("recalibrate", help="recompute a model's threshold from radiologists' labels")
    parser.add_argument(
        "--model",
        required=True,
        metavar="[NAME=]MODEL_DIR",
        help="model directory as given to 'medanomaly serve' (same NAME= if one was used)",
    )
    parser.add_argument(
        "--calibrate", default="youden", help="youden (default), f1, sensitivity:T, specificity:T or percentile:P"
    )
    add_database_arguments(parser)
    parser.set_defaults(run=run)


def _pct(value: float | None) -> str:
    return "  n/a" if value is None else f"{100 * value:5.1f} %"


def run(args: argparse.Namespace) -> int:
    """Recalibrate and print the before/after operating points on the feedback set."""
    from medanomaly.service.feedback import recalibrate
    from medanomaly.service.model_store import ModelStore

    settings = settings_from(args)
    store = ModelStore([args.model])
    with open_database(settings)() as db:
        store.sync(db)
        if store.errors:
            raise ValueError(next(iter(store.errors.values())))
        row = recalibrate(db, store, store.default_name, args.calibrate, None, actor=f"cli:{getpass.getuser()}")
    details = row.recalibration or {}  # recalibrate() always records them
    before, after = details["before"], details["after"]
    print(
        f"{row.name} v{details['from_version']} -> v{row.version} ({args.calibrate}, {details['n_cases']} studies: "
        f"{after['n_normal']} normal, {after['n_abnormal']} abnormal)"
    )
    print("               threshold   sensitivity   specificity")
    print(
        f"before (v{details['from_version']})  {before['threshold']:10.4g}   {_pct(before['sensitivity'])}"
        f"       {_pct(before['specificity'])}"
    )
    print(
        f"after  (v{row.version})  {after['threshold']:10.4g}   {_pct(after['sensitivity'])}"
        f"       {_pct(after['specificity'])}"
    )
    print(f"saved: {row.path}")
    return 0

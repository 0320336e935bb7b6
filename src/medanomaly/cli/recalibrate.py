"""``medanomaly recalibrate --model MODEL_DIR``: recalibrate a threshold on the radiologists' labels (feedback).

The result is a new, inactive model version saved as ``MODEL_DIR/versions/v<N>``, with its sensitivity and
specificity measured on labelled studies it was not fitted on; ``--activate N`` makes a version the active one.
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
    parser.add_argument("--activate", type=int, metavar="N", help="make version N active (also rollback)")
    parser.add_argument("--accept-drop", action="store_true", help="with --activate: accept a lower sensitivity")
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
    actor = f"cli:{getpass.getuser()}"
    with open_database(settings)() as db:
        store.sync(db)
        if store.errors:
            raise ValueError(next(iter(store.errors.values())))
        if args.activate is not None:
            return _activate(db, str(store.default_name), args, actor)
        row = recalibrate(db, store, store.default_name, args.calibrate, None, actor=actor,
                          min_per_class=settings.recalibration_min_per_class, folds=settings.recalibration_folds,
                          triage_sensitivity=settings.triage_sensitivity)
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
    print(f"saved: {row.path} (inactive; after = {after.get('validation', 'held out')})")
    print(f"activate it with: medanomaly recalibrate --model {args.model} --activate {row.version}")
    return 0


def _activate(db, name: str, args: argparse.Namespace, actor: str) -> int:
    """Make ``args.activate`` the active version of ``name``."""
    from medanomaly.service.versions import activate_version

    row = activate_version(db, name, args.activate, user=None, actor=actor, accept_drop=args.accept_drop)
    print(f"{row.label} is now active")
    return 0

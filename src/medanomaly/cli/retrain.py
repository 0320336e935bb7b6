"""``medanomaly retrain MODEL_DIR --feedback EXPORT --out NEW_DIR``: retrain a model on radiologists' feedback.

``EXPORT`` is what ``medanomaly feedback export`` (or the workstation) writes: ``<LABEL>/`` folders and a
``manifest.csv``; ``NORMAL`` marks studies confirmed normal. See :mod:`medanomaly.training.retrain`.
"""

from __future__ import annotations

import argparse

from medanomaly.data.loading import describe_failures
from medanomaly.training.retrain import RetrainOptions, read_feedback_export, retrain_model


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the subcommand."""
    parser = subparsers.add_parser(
        "retrain", help="fine-tune (or refit) a model on its training data plus radiologists' feedback"
    )
    parser.add_argument("model", metavar="MODEL_DIR", help="the model directory to start from")
    parser.add_argument("--feedback", required=True, metavar="EXPORT", help="feedback export folder or manifest CSV")
    parser.add_argument(
        "--feedback-model",
        default=None,
        metavar="NAME",
        help="keep the export's studies of this served model (its manifest 'model' column)",
    )
    parser.add_argument("--out", required=True, metavar="NEW_DIR", help="where to write the new model version")
    parser.add_argument("--epochs", type=int, default=5, help="fine-tuning epochs of torch methods (default 5)")
    parser.add_argument(
        "--held-out",
        type=float,
        default=0.3,
        metavar="FRACTION",
        help="share of each feedback class held out for the before/after figures (default 0.3)",
    )
    parser.add_argument("--calibrate", default=None, help="threshold rule (default: the model's own)")
    parser.add_argument("--max-minutes", type=float, default=None, help="wall-clock budget of the fine-tuning")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the held-out split")
    parser.set_defaults(run=run)


def _pct(value: float | None) -> str:
    return "  n/a" if value is None else f"{100 * value:5.1f} %"


def run(args: argparse.Namespace) -> int:
    """Retrain, save, and print what was used and the before/after figures on the held-out feedback."""
    options = RetrainOptions(
        epochs=args.epochs,
        held_out_fraction=args.held_out,
        calibration=args.calibrate,
        max_minutes=args.max_minutes,
        device=args.device,
        random_state=args.seed,
    )
    feedback = read_feedback_export(args.feedback, args.feedback_model)
    report = retrain_model(args.model, feedback, args.out, options, source=str(args.feedback))
    record, model = report.record, report.model
    used = record["feedback"]
    print(
        f"{model.method} v{record['from_version']} -> v{model.version}: {record['mode']} on "
        f"{model.info['n_train_normal']} normal images ({used['n_normal']} from feedback), "
        f"{used['n_abnormal']} confirmed abnormal used for: {used['abnormal_use']}"
    )
    if record["note"]:
        print(f"NOTE: {record['note']}")
    print(
        f"held out {len(used['held_out'])} feedback studies ({report.after['n_normal']} normal, "
        f"{report.after['n_abnormal']} abnormal):"
    )
    for name, point in (("before", report.before), ("after", report.after)):
        auroc = "n/a" if point["auroc"] is None else f"{point['auroc']:.3f}"
        print(
            f"  {name:6}  sensitivity {_pct(point['sensitivity'])}  specificity {_pct(point['specificity'])}  "
            f"AUROC {auroc}  threshold {point['threshold']:.6g}"
        )
    print(f"saved {args.out} in {report.seconds:.1f} s")
    if report.failures:
        print(describe_failures(report.failures))
    return 1 if report.failures else 0

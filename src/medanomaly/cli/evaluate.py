"""``medanomaly evaluate DATA --model MODEL_DIR``: metrics of a model on a labelled split."""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

from medanomaly.data.loading import describe_failures
from medanomaly.errors import InputError
from medanomaly.evaluation.evaluate import EvaluationResult, evaluate_model, write_report
from medanomaly.model import Model

_SHOWN = ("auroc", "auprc", "accuracy", "balanced_accuracy", "precision", "sensitivity", "specificity", "f1")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the subcommand."""
    parser = subparsers.add_parser("evaluate", help="evaluate a model on a labelled data set")
    parser.add_argument("data", help="data folder or manifest CSV with labels")
    parser.add_argument("--model", required=True, help="model directory")
    parser.add_argument("--split", default="test", help="split to evaluate (default test; ignored without splits)")
    parser.add_argument("--normal-label", default=None)
    parser.add_argument(
        "--threshold", type=float, default=None, help="decide at this score (default: the model's calibrated one)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--out", default=None, help="write metrics.json, scores.csv, ROC and confusion PNGs here")
    parser.add_argument("--device", default="auto")
    parser.set_defaults(run=run)


def _write_report(result: EvaluationResult, out: Path) -> dict[str, Path]:
    """Write the report into a hidden folder beside ``out``, then rename each file into ``out``.

    Readers of ``out`` see whole files only; a full disk or a permission error is one clear InputError.
    """
    staging = out.parent / f".{out.name}.partial-{os.getpid()}"
    try:
        written = write_report(result, staging)
        out.mkdir(parents=True, exist_ok=True)
        for key, path in written.items():
            os.replace(path, out / path.name)
            written[key] = out / path.name
    except OSError as error:
        raise InputError(out, f"cannot write the report ({error.strerror or error})",
                         "free disk space, fix the permissions or choose another --out") from error
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return written


def run(args: argparse.Namespace) -> int:
    """Evaluate and print the metrics."""
    model = Model.load(args.model, device=args.device)
    result = evaluate_model(
        model, args.data, split=args.split, normal_label=args.normal_label, threshold=args.threshold,
        progress=not args.json,
    )  # fmt: skip
    written = _write_report(result, Path(args.out)) if args.out else {}
    metrics = result.metrics
    if args.json:
        payload = {**metrics, "failures": [f.to_dict() for f in result.failures]}
        payload["report_files"] = {key: str(path) for key, path in written.items()}
        print(json.dumps(payload, indent=2))
        return 1 if result.failures else 0
    low, high = metrics["auroc_ci95"] or (float("nan"), float("nan"))
    print(
        f"{metrics['method']} v{metrics['model_version']} on {metrics['n_normal']} normal + "
        f"{metrics['n_abnormal']} abnormal studies ({args.split})"
    )
    if not metrics["converged"]:
        print(f"NOTE: this model was {metrics['stopped_because']}: its numbers may be below the method's")
    print(f"AUROC {_fmt(metrics['auroc'])} (95% CI {low:.3f}-{high:.3f})")
    for key in _SHOWN[1:]:
        print(f"{key:18s} {_fmt(metrics[key])}")
    print(f"threshold          {metrics['threshold']:.6g}")
    print(f"confusion [[TN, FP], [FN, TP]] = {metrics['confusion_matrix']}")
    if written:
        print(f"report written to {args.out}")
    if result.failures:
        print(describe_failures(result.failures))
    return 1 if result.failures else 0


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"

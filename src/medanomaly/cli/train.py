"""``medanomaly train DATA --method NAME --out MODEL_DIR``: fit, calibrate and save a model."""

from __future__ import annotations

import argparse

from medanomaly.cli.options import (
    add_postprocessing_arguments,
    add_preprocessing_arguments,
    add_training_arguments,
    parse_params,
    postprocessing_from,
    preprocessing_from,
    train_config_from,
)
from medanomaly.data.loading import describe_failures
from medanomaly.fitting import FitOptions, train_model
from medanomaly.registry import available
from medanomaly.training import BUDGET_STOP
from medanomaly.transforms.presets import PRESETS


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the subcommand."""
    parser = subparsers.add_parser("train", help="train a detector on a data set and save the model directory")
    parser.add_argument("data", help="data folder (<split>/<label>/ or <label>/) or manifest CSV")
    parser.add_argument("--method", default="conv_ae", help=f"detector name: {', '.join(available())}")
    parser.add_argument("--normal-label", default=None, help="label of healthy images (default: a label 'normal')")
    parser.add_argument("--out", required=True, help="model directory to write")
    parser.add_argument("--param", action="append", metavar="KEY=VALUE", help="detector hyper-parameter (repeatable)")
    parser.add_argument("--calibrate", default=None, help="percentile:95 (default), youden, f1, sensitivity:T, ...")
    parser.add_argument("--mixed", default=None, help="folder of unlabelled images (methods that learn from a mix)")
    parser.add_argument("--mixed-from-train", type=float, default=None, help="fraction of train normals mixed in")
    parser.add_argument("--tune-with", default=None, metavar="DIR", help="labelled normals + 10-20 anomalies: tune")
    parser.add_argument(
        "--preset",
        default="auto",
        choices=("auto", *PRESETS),
        help="modality preset: CT window and foreground mask (default auto: from the DICOM header, else generic)",
    )
    parser.add_argument("--modality", default=None, help="modality of the images, e.g. DX or DX,CR (PNG data sets; "
                        "recorded in the model's domain, overrides DICOM headers)")
    parser.add_argument("--body-part", default=None, help="body part of the images, e.g. CHEST (likewise)")
    add_preprocessing_arguments(parser)
    add_postprocessing_arguments(parser)
    add_training_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Train and print a short summary."""
    options = FitOptions(
        params=parse_params(args.param),
        preprocessing=preprocessing_from(args, args.method),
        postprocessing=postprocessing_from(args),
        train=train_config_from(args, args.method),
        calibration=args.calibrate,
        mixed_dir=args.mixed,
        mixed_from_train=args.mixed_from_train,
        tune_with=args.tune_with,
        preset=args.preset,
        modality=args.modality,
        body_part=args.body_part,
        random_state=args.seed,
        progress=not args.no_progress,
    )
    report = train_model(args.data, args.method, args.out, options, normal_label=args.normal_label)
    model, plan = report.model, report.plan
    status = model.info["training"]
    print(f"trained {model.method} on {len(plan.normal)} normal", end="")
    print(f" + {len(plan.abnormal)} abnormal" if plan.abnormal else "", end="")
    print(f" + {len(plan.mixed)} mixed" if plan.mixed else "", end="")
    print(f" images in {report.seconds:.1f} s ({status['stopped_because']})")
    if not status["converged"]:
        print(f"WARNING: {BUDGET_STOP}: raise --max-minutes or leave it out; the model is saved as not converged")
    for warning in model.info.get("warnings", []):
        print(f"WARNING: {warning}")
    threshold = model.threshold
    print(
        f"threshold {threshold.value:.6g} ({threshold.method} {threshold.params}) "
        f"from {len(plan.calibration_normal)} held-out normal studies"
    )
    tuning = model.info.get("tuning")
    if tuning:
        best = max(trial["auroc"] for trial in tuning["trials"])
        print(f"tuned on {tuning['data']}: chose {tuning['chosen']} (AUROC {best:.4f}, {len(tuning['trials'])} tried)")
    if model.domain is not None:
        print(f"domain: {model.domain.describe()} ({model.domain.n_studies} studies recorded)")
    preset = model.info.get("preset") or {}
    print(f"preset {preset.get('name')} ({preset.get('source')}), resolution {model.preprocessing.resolution}")
    print(f"saved {args.out}")
    if report.failures:
        print(describe_failures(report.failures))
    return 1 if report.failures else 0

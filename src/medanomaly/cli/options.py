"""Argument groups shared by several subcommands, and their conversion to config objects."""

from __future__ import annotations

import argparse
import json
from typing import Any

from medanomaly.model import Postprocessing
from medanomaly.registry import detector_class
from medanomaly.training import TrainConfig
from medanomaly.transforms import Preprocessing


def add_preprocessing_arguments(parser: argparse.ArgumentParser) -> None:
    """--resolution, --channels, --normalize, --window, --equalize."""
    group = parser.add_argument_group("preprocessing")
    group.add_argument("--resolution", type=int, default=None, help="input side (default: the method's, else 128)")
    group.add_argument("--channels", type=int, choices=(1, 3), default=1, help="1 grey (default) or 3 colour")
    group.add_argument("--normalize", default="auto", choices=("auto", "window", "percentile", "minmax", "none"))
    group.add_argument("--window", default=None, help="CT window: lung, mediastinum, abdomen, brain, bone, dicom, C,W")
    group.add_argument("--equalize", default="none", choices=("none", "hist", "clahe"))


def preprocessing_from(args: argparse.Namespace, method: str | None = None) -> Preprocessing:
    """Preprocessing from the parsed arguments; an unset resolution is ``method``'s default (else 128)."""
    return Preprocessing(
        resolution=args.resolution or getattr(_method_class(method), "default_resolution", None) or 128,
        channels=args.channels,
        normalize=args.normalize,
        window=args.window,
        equalize=args.equalize,
    )


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """--epochs, --max-minutes, --batch-size, --device, --patience, --checkpoint-dir, --seed."""
    group = parser.add_argument_group("training")
    group.add_argument("--epochs", type=int, default=None, help="maximum epochs (default: the method's, else 50)")
    group.add_argument(
        "--max-minutes", type=float, default=None,
        help="wall-clock safety net: training ends by it, and the model is then marked not converged",
    )
    group.add_argument("--batch-size", type=int, default=None, help="images per step (default: the method's, else 32)")
    group.add_argument("--patience", type=int, default=None, help="early-stopping patience (0 off; default: 8)")
    group.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N, mps")
    group.add_argument("--checkpoint-dir", default=None, help="write last.pt here each epoch and resume from it")
    group.add_argument("--seed", type=int, default=0, help="seed of splits, initialisation and shuffling")
    group.add_argument("--no-progress", action="store_true", help="hide progress bars")


def train_config_from(args: argparse.Namespace, method: str | None = None) -> TrainConfig:
    """TrainConfig from the parsed arguments; unset epochs, batch size, patience and min_delta are ``method``'s."""
    method_defaults = getattr(_method_class(method), "default_train", {})
    defaults = {"max_epochs": 50, "batch_size": 32, "patience": 8, **method_defaults}
    patience = defaults["patience"] if args.patience is None else args.patience
    return TrainConfig(
        max_epochs=args.epochs or defaults["max_epochs"],
        max_minutes=args.max_minutes,
        batch_size=args.batch_size or defaults["batch_size"],
        patience=patience or None,
        min_delta=defaults.get("min_delta", 0.0),
        device=args.device,
        checkpoint_dir=args.checkpoint_dir,
        progress=not args.no_progress,
    )


def _method_class(method: str | None) -> type | None:
    """The registered class of ``method`` (None when no method or an unknown name: the defaults then apply)."""
    try:
        return detector_class(method) if method else None
    except KeyError:
        return None


def add_postprocessing_arguments(parser: argparse.ArgumentParser) -> None:
    """--median-size, --score-from, --slice-aggregation."""
    group = parser.add_argument_group("anomaly map and score")
    group.add_argument("--median-size", type=int, default=5, help="median filter size of the map (1 disables)")
    group.add_argument("--score-from", default="detector", choices=("detector", "map_topk"))
    group.add_argument("--slice-aggregation", default="topk", choices=("topk", "max", "mean"))


def postprocessing_from(args: argparse.Namespace) -> Postprocessing:
    """Postprocessing from the parsed arguments."""
    return Postprocessing(
        median_size=args.median_size, score_from=args.score_from, slice_aggregation=args.slice_aggregation
    )


def parse_params(items: list[str] | None) -> dict[str, Any]:
    """``--param key=value`` pairs; values parsed as JSON when they can be (numbers, lists, booleans)."""
    params: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            msg = f"--param expects key=value, got {item!r}"
            raise ValueError(msg)
        try:
            params[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            params[key.strip()] = value
    return params

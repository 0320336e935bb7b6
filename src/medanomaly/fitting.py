"""Training a model from a data set folder: index, split, load, fit, calibrate, save.

The same function serves ``medanomaly train`` and the benchmark; :func:`fit_detector` is also the path of retraining
from feedback (:mod:`medanomaly.training.retrain`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from medanomaly.data.datasets import DatasetIndex, Sample, fingerprint, load_index, study_paths
from medanomaly.data.loading import Failure, LoadedImages, load_images
from medanomaly.detectors.base import BaseDetector
from medanomaly.domain import build_domain, score_quantiles
from medanomaly.model import Model, Postprocessing
from medanomaly.pipeline import read_studies, score_studies
from medanomaly.registry import create, detector_class
from medanomaly.thresholds import calibrate, parse_calibration
from medanomaly.training import TrainConfig, Trainer, training_status
from medanomaly.training.engine import EpochCallback
from medanomaly.transforms import Preprocessing
from medanomaly.transforms.presets import apply_preset, choose_preset, preset_from_header
from medanomaly.types import Study

logger = logging.getLogger(__name__)


@dataclass
class TrainingPlan:
    """Which samples play which role in training.

    Attributes:
        normal: Healthy training samples (set B for translation methods).
        calibration_normal: Held-out healthy samples for the threshold.
        calibration_abnormal: Held-out labelled abnormal samples for the threshold (may be empty).
        abnormal: Labelled abnormal training samples (supervised methods).
        mixed: Unlabelled samples (set A for translation methods); their labels are never read.
    """

    normal: list[Sample]
    calibration_normal: list[Sample]
    calibration_abnormal: list[Sample] = field(default_factory=list)
    abnormal: list[Sample] = field(default_factory=list)
    mixed: list[Sample] = field(default_factory=list)


@dataclass
class FitOptions:
    """Options of :func:`train_model` beyond method and data.

    Attributes:
        params: Detector hyper-parameters.
        preprocessing: How images are prepared.
        postprocessing: Map filtering, score aggregation.
        train: Training-loop settings.
        calibration: Threshold rule, e.g. ``percentile:95``, ``youden``, ``specificity:0.95``; None = the method's
            default (percentile:95 for anomaly detectors, fixed:0.5 for classifiers).
        calibration_fraction: Share of train normals held out for calibration when the data has no ``val`` split.
        mixed_dir: Folder of unlabelled images forming the mixed set.
        mixed_from_train: Fraction of train normals moved into the mixed set, with all train abnormals.
        tune_with: Labelled folder (normals + a few anomalies) for the method's hyper-parameter search, if it has one.
        preset: Modality preset (:mod:`medanomaly.transforms.presets`) filling in the window and the foreground mask
            left at their defaults; ``auto`` reads it from the first training study's DICOM header.
        modality: Modalities of the training images (``"DX,CR"``) for the model's domain, when the files (PNG) do
            not say; overrides DICOM headers.
        body_part: Body parts of the training images (``"CHEST"``), likewise.
        random_state: Seed of the splits and of the detector.
        progress: Show progress bars.
        on_epoch: Called after each training epoch of a torch method with (phase, epochs done, max epochs).
    """

    params: dict[str, Any] = field(default_factory=dict)
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    postprocessing: Postprocessing = field(default_factory=Postprocessing)
    train: TrainConfig = field(default_factory=TrainConfig)
    calibration: str | None = None
    calibration_fraction: float = 0.1
    mixed_dir: str | None = None
    mixed_from_train: float | None = None
    tune_with: str | None = None
    preset: str | None = "auto"
    modality: str | None = None
    body_part: str | None = None
    random_state: int = 0
    progress: bool = True
    on_epoch: EpochCallback | None = None


def plan_training(index: DatasetIndex, needs: frozenset[str], options: FitOptions) -> TrainingPlan:
    """Split the data set into training and calibration roles, seeded and deterministic."""
    rng = np.random.default_rng(options.random_state)
    train = index.select(split="train") if "train" in index.splits else list(index.samples)
    normal = [s for s in train if index.is_normal(s)]
    abnormal = [s for s in train if not index.is_normal(s)]
    has_val = any(split in index.splits for split in ("val", "validation"))
    calibration_abnormal = index.select(split="val", normal=False) if has_val else []
    if has_val:
        calibration_normal = index.select(split="val", normal=True)
    else:
        normal, calibration_normal = _hold_out(normal, options.calibration_fraction, rng)
        if "abnormal" in needs:  # held out only for a labelled rule: else they train (small labelled sets)
            if needs_abnormal(options.calibration):
                abnormal, calibration_abnormal = _hold_out(abnormal, options.calibration_fraction, rng)
        elif "mixed" not in needs:  # a one-class method never trains on them: all may calibrate a labelled rule
            calibration_abnormal = list(abnormal)
    mixed: list[Sample] = []
    if options.mixed_dir:
        mixed = [Sample(path, "unlabelled") for path in study_paths(Path(options.mixed_dir))]
    elif options.mixed_from_train is not None:
        normal, moved = _hold_out(normal, options.mixed_from_train, rng)
        mixed = [Sample(s.path, "unlabelled", s.split) for s in moved + abnormal]
    return TrainingPlan(normal, calibration_normal, calibration_abnormal, abnormal, mixed)


def _hold_out(samples: list[Sample], fraction: float, rng: np.random.Generator) -> tuple[list[Sample], list[Sample]]:
    n_out = int(round(len(samples) * fraction))
    if n_out == 0 or n_out >= len(samples):
        return samples, []
    chosen = set(rng.choice(len(samples), size=n_out, replace=False).tolist())
    kept = [s for i, s in enumerate(samples) if i not in chosen]
    return kept, [s for i, s in enumerate(samples) if i in chosen]


@dataclass
class TrainingReport:
    """What training did, for the CLI to print."""

    model: Model
    plan: TrainingPlan
    failures: list[Failure]
    seconds: float


def train_model(
    data: str | Path,
    method: str,
    out: str | Path | None,
    options: FitOptions | None = None,
    normal_label: str | None = None,
) -> TrainingReport:
    """Train, calibrate and (if ``out``) save a model on a data set folder or manifest."""
    options = options or FitOptions()
    started = time.monotonic()
    index = load_index(data, normal_label)
    options, preset = _with_preset(options, method, index)
    detector = create(method, **{"random_state": options.random_state, **options.params})
    return fit_detector(detector, index, out, options, preset, normal_label=normal_label, started=started)


def fit_detector(
    detector: BaseDetector,
    index: DatasetIndex,
    out: str | Path | None,
    options: FitOptions,
    preset: dict[str, Any],
    *,
    warm_start: bool = False,
    normal_label: str | None = None,
    started: float | None = None,
) -> TrainingReport:
    """Plan, load, fit, calibrate and (if ``out``) save ``detector`` on ``index`` (``options`` already preset).

    ``warm_start`` fine-tunes a fitted torch detector from its current weights instead of building new networks
    (retraining from feedback); the other detectors are always fitted afresh. ``normal_label`` is the one given for
    the data (read again for ``--tune-with``).
    """
    started = time.monotonic() if started is None else started
    plan = plan_training(index, detector.needs, options)
    _check_plan(plan, detector.needs, index, options.calibration)
    load = _loader(options)
    normal = load(plan.normal, "normal")
    abnormal = load(plan.abnormal if "abnormal" in detector.needs else [], "abnormal")
    mixed = load(plan.mixed if "mixed" in detector.needs else [], "mixed")
    tuning = None
    if options.tune_with:
        detector, tuning = _tune(detector, normal.images, options, load, normal_label)
    else:
        detector.fit(
            normal.images,
            abnormal=abnormal.images if "abnormal" in detector.needs else None,
            mixed=mixed.images if "mixed" in detector.needs else None,
            trainer=Trainer(options.train, on_epoch=options.on_epoch),
            **({"warm_start": True} if warm_start else {}),
        )
    used = replace(
        plan,
        abnormal=plan.abnormal if "abnormal" in detector.needs else [],
        mixed=plan.mixed if "mixed" in detector.needs else [],
    )
    model = Model(detector, options.preprocessing, options.postprocessing, info=_info(index, used, options))
    model.info["training"] = training_status(getattr(detector, "history_", None))
    if not model.training["converged"]:
        logger.warning("%s: %s", detector.name, model.training["stopped_because"])
    if getattr(detector, "warnings_", None):  # e.g. a classifier that collapsed to one class
        model.info["warnings"] = list(detector.warnings_)
    model.info["preset"] = preset
    if tuning is not None:
        model.info["tuning"] = tuning
    cal_normal = load(plan.calibration_normal, "calibration")
    model.domain = build_domain(
        [fact for loaded in (normal, abnormal, mixed, cal_normal) for fact in loaded.facts],
        normal.images.numpy(),
        cal_normal.images.numpy(),
        channels=options.preprocessing.channels,
        modality=options.modality,
        body_part=options.body_part,
        random_state=options.random_state,
    )
    labelled = plan.calibration_abnormal if needs_abnormal(options.calibration) else []
    read_failures: list[Failure] = []
    color = options.preprocessing.channels == 3
    cal_paths = [s.path for s in (cal_normal.samples or normal.samples)]
    cal_normal_studies = read_studies(cal_paths, color=color, failures=read_failures)
    cal_abnormal = read_studies([s.path for s in labelled], color=color, failures=read_failures)
    model = calibrate_model(model, cal_normal_studies, cal_abnormal, options.calibration)
    model.info["train_seconds"] = round(time.monotonic() - started, 2)
    if out is not None:
        model.info["path"] = str(out)
        model.save(out)
    failures = [f for loaded in (normal, abnormal, mixed, cal_normal) for f in loaded.failures] + read_failures
    return TrainingReport(model, used, failures, time.monotonic() - started)


def _with_preset(options: FitOptions, method: str, index: DatasetIndex) -> tuple[FitOptions, dict[str, Any]]:
    """Options with the modality preset applied, and its record for ``model.info["preset"]``."""
    example = index.samples[0].path if index.samples else None
    preset, source = choose_preset(options.preset, example)
    given = getattr(options, "modality", None)  # stated for header-less files (PNG)
    if source.startswith("default") and given:
        modality = given.split(",")[0].strip()
        preset = preset_from_header({"modality": modality, "body_part": getattr(options, "body_part", None)})
        source = "--modality/--body-part"
    preprocessing, params = apply_preset(preset, options.preprocessing, options.params, detector_class(method))
    logger.info("preset %s (%s)", preset.name, source)
    return replace(options, preprocessing=preprocessing, params=params), {**preset.to_dict(), "source": source}


def needs_abnormal(spec: str | None) -> bool:
    """Whether a calibration rule uses labelled abnormal scores (only then are they loaded)."""
    return spec is not None and parse_calibration(spec)["method"] in ("youden", "f1", "sensitivity")


def _tune(detector, normal, options: FitOptions, load, normal_label: str | None):
    """``--tune-with``: the method's own search on a labelled folder; returns the chosen fitted detector, a record."""
    tune = getattr(type(detector), "tune", None)
    if tune is None:
        msg = f"--tune-with: method {detector.name!r} has no hyper-parameter search"
        raise ValueError(msg)
    index = load_index(options.tune_with, normal_label)
    loaded = load(list(index.samples), "tuning")
    labels = np.array([0 if index.is_normal(sample) else 1 for sample in loaded.samples])[loaded.owners]
    params = {"random_state": options.random_state, **options.params}
    chosen, record = tune(normal, loaded.images, labels, params=params, train=options.train)
    return chosen, {"data": str(index.root), **record}


def _loader(options: FitOptions):
    def load(samples: list[Sample], what: str) -> LoadedImages:
        return load_images(samples, options.preprocessing, progress=options.progress, desc=f"load {what}")

    return load


def _check_plan(plan: TrainingPlan, needs: frozenset[str], index: DatasetIndex, calibration: str | None) -> None:
    if not plan.normal:
        msg = f"{index.root}: no training images with the normal label {index.normal_label!r}"
        raise ValueError(msg)
    if "abnormal" in needs and not plan.abnormal:
        msg = f"{index.root}: this method needs labelled abnormal training images, found none"
        raise ValueError(msg)
    if needs_abnormal(calibration) and not plan.calibration_abnormal:
        msg = (
            f"{index.root}: calibration {calibration!r} needs labelled abnormal studies, found none in val/ or in the "
            "train split; add some, or use percentile:95 / specificity:0.95 (normals only)"
        )
        raise ValueError(msg)
    if "mixed" in needs and not plan.mixed:
        msg = "this method needs a mixed unlabelled set: pass --mixed DIR or --mixed-from-train FRACTION"
        raise ValueError(msg)


def calibrate_model(
    model: Model, normal: Iterable[Study], abnormal: Iterable[Study] = (), spec: str | None = None
) -> Model:
    """Set the image threshold (and the finding threshold) from held-out studies; returns the same model.

    The studies are scored by :func:`medanomaly.pipeline.score_studies`, the path every scored study takes (domain
    check overridden: these are the model's own kind of data), so the threshold applies to the same numbers.
    """
    if spec is None:
        spec = "fixed:0.5" if model.detector.kind == "classification" else "percentile:95"
    kwargs = parse_calibration(spec)
    normal_scored = list(score_studies(model, normal, ignore_domain=True, decide=False))
    abnormal_scores = np.array([r.score for r in score_studies(model, abnormal, ignore_domain=True, decide=False)])
    normal_scores = np.array([r.score for r in normal_scored])
    model.threshold = calibrate(normal_scores, abnormal_scores if len(abnormal_scores) else None, **kwargs)
    if model.domain is not None:
        model.domain.scores = score_quantiles(normal_scores)
    maxima = [float(s.anomaly_maps.max()) for s in normal_scored if s.anomaly_maps is not None]
    if maxima:
        region = float(np.percentile(maxima, 95))
        model.postprocessing = replace(model.postprocessing, region_threshold=region)
    model.info["calibration"] = {"spec": spec, "n_normal": len(normal_scored), "region_percentile": 95}
    return model


def _info(index: DatasetIndex, plan: TrainingPlan, options: FitOptions) -> dict[str, Any]:
    used = plan.normal + plan.abnormal + plan.mixed
    return {
        "data": str(index.root),
        "normal_label": index.normal_label,
        "class_names": index.class_names(),
        "fingerprint": fingerprint(used),
        "n_train_normal": len(plan.normal),
        "n_train_abnormal": len(plan.abnormal),
        "n_train_mixed": len(plan.mixed),
        "train_config": options.train.to_dict(),
    }

"""Retraining a model from the radiologists' feedback: the one path of ``medanomaly retrain`` and the workstation.

The feedback (studies confirmed normal or abnormal) is split, per class and seeded, into a part that retrains and a
part held out to measure the model before and after. The retraining part joins the model's own training data, found
through ``model.json``'s ``info.data`` (when that folder is gone the model retrains on the feedback alone and its
record says so), and goes through :func:`medanomaly.fitting.fit_detector`, the path of ``medanomaly train``:

- torch methods fine-tune from the served weights for a few epochs (``warm_start``), through the shared Trainer;
- the other methods (feature memories such as PatchCore or PaDiM) are fitted afresh on the joined data;
- confirmed abnormal studies train the methods that can use them (supervised ``abnormal``: the classifier; ``mixed``:
  they join the unlabelled set) and otherwise calibrate the threshold when its rule uses labelled cases.

The result is a new model version (``info.version`` + 1, ``info.retraining`` recording what was used, what was held
out and the before/after figures); saving or serving it is the caller's business.
"""

from __future__ import annotations

import csv
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from medanomaly.data.datasets import DatasetIndex, Sample, load_index
from medanomaly.data.loading import Failure
from medanomaly.errors import InputError
from medanomaly.evaluation.metrics import operating_point
from medanomaly.fitting import FitOptions, fit_detector, needs_abnormal
from medanomaly.model import Model
from medanomaly.pipeline import read_studies, score_studies
from medanomaly.registry import create
from medanomaly.training.engine import EpochCallback, TrainConfig

logger = logging.getLogger(__name__)
#: The normal label of a feedback export (:func:`medanomaly.service.feedback.export_feedback`).
FEEDBACK_NORMAL = "NORMAL"
Progress = Callable[[str, float], None]


@dataclass(frozen=True)
class FeedbackStudy:
    """One study a radiologist labelled: where it is, the label, and a name for the record (no patient data)."""

    path: Path
    abnormal: bool
    key: str


@dataclass(frozen=True)
class RetrainOptions:
    """Settings of a retraining.

    Attributes:
        epochs: Fine-tuning epochs of torch methods (from the served weights).
        held_out_fraction: Share of each feedback class held out for the before/after figures (at least one case).
        min_normal: Fewest confirmed normal studies needed (one is always held out).
        calibration: Threshold rule; None = the rule the model was calibrated with.
        max_minutes: Wall-clock budget of the fine-tuning (None: none).
        device: Torch device of the training.
        random_state: Seed of the hold-out split.
    """

    epochs: int = 5
    held_out_fraction: float = 0.3
    min_normal: int = 2
    calibration: str | None = None
    max_minutes: float | None = None
    device: str = "cpu"
    random_state: int = 0


@dataclass
class RetrainReport:
    """What a retraining did: the new model, its before/after on the held-out feedback, and load failures."""

    model: Model
    before: dict[str, Any]
    after: dict[str, Any]
    failures: list[Failure]
    seconds: float

    @property
    def record(self) -> dict[str, Any]:
        """``model.info["retraining"]``."""
        return self.model.info["retraining"]


def read_feedback_export(path: str | Path, model_name: str | None = None) -> list[FeedbackStudy]:
    """The studies of a feedback export (``manifest.csv`` with ``path,label``; ``NORMAL`` = confirmed normal).

    ``model_name`` keeps the studies of one served model (the manifest's ``model`` column) when the workstation
    served several.
    """
    index = load_index(path, FEEDBACK_NORMAL)
    samples = index.samples
    if model_name is not None:
        manifest = Path(path) if Path(path).is_file() else Path(path) / "manifest.csv"
        with manifest.open(newline="") as handle:
            wanted = {
                (manifest.parent / row["path"]).resolve()
                for row in csv.DictReader(handle)
                if row.get("model") == model_name
            }
        samples = [s for s in samples if s.path.resolve() in wanted]
    return [FeedbackStudy(s.path, not index.is_normal(s), s.path.name.split(".")[0]) for s in samples]


def split_feedback(
    feedback: Sequence[FeedbackStudy], options: RetrainOptions
) -> tuple[list[FeedbackStudy], list[FeedbackStudy]]:
    """(retraining part, held-out part), per class and seeded; ValueError with too few confirmed normals."""
    normal = [f for f in feedback if not f.abnormal]
    if len(normal) < max(2, options.min_normal):
        msg = (
            f"retraining needs at least {max(2, options.min_normal)} studies confirmed normal by a radiologist "
            f"(one is held out to measure the result); found {len(normal)}"
        )
        raise ValueError(msg)
    rng = np.random.default_rng(options.random_state)
    train: list[FeedbackStudy] = []
    held: list[FeedbackStudy] = []
    for cases in (normal, [f for f in feedback if f.abnormal]):
        n_out = min(len(cases), max(1, int(round(len(cases) * options.held_out_fraction)))) if cases else 0
        if len(cases) > 1:
            n_out = min(n_out, len(cases) - 1)
        chosen = set(rng.choice(len(cases), size=n_out, replace=False).tolist()) if n_out else set()
        train += [c for i, c in enumerate(cases) if i not in chosen]
        held += [c for i, c in enumerate(cases) if i in chosen]
    return train, held


def retrain_model(
    model_dir: str | Path,
    feedback: Sequence[FeedbackStudy],
    out: str | Path | None = None,
    options: RetrainOptions | None = None,
    progress: Progress | None = None,
    source: str = "feedback",
) -> RetrainReport:
    """Retrain the model in ``model_dir`` with ``feedback``; save it to ``out`` when given.

    Args:
        model_dir: The model directory to start from (a served version).
        feedback: Studies labelled by radiologists.
        out: Where to save the new version (None: not saved).
        options: Retraining settings.
        progress: Called with (stage, fraction done in [0, 1]).
        source: Where the feedback came from, for the record (an export folder, ``workstation``).

    Raises:
        ValueError: Too few confirmed normals, or data the method cannot train on.
    """
    options = options or RetrainOptions()
    report = progress or (lambda stage, fraction: None)
    started = time.monotonic()
    train_part, held_out = split_feedback(feedback, options)
    report("loading the model", 0.02)
    old = Model.load(model_dir, device=options.device)  # stays as served: the "before"
    index, original = _training_index(old, train_part, source)
    fit = replace(_fit_options(old, options), on_epoch=_epoch_progress(report))
    from medanomaly.detectors.torch_base import TorchDetector  # here: `medanomaly --help` imports no method code

    warm = isinstance(old.detector, TorchDetector)
    fresh = Model.load(model_dir, device=options.device).detector if warm else None
    detector = fresh or create(old.method, **old.detector.get_params())
    report("fine-tuning" if warm else "refitting", 0.1)
    trained = fit_detector(detector, index, None, fit, old.info.get("preset") or {}, warm_start=warm, started=started)
    model = trained.model
    report("measuring on held-out feedback", 0.85)
    failures = list(trained.failures)
    before, after = _compare(old, model, held_out, failures)
    model.info.update(
        version=old.version + 1,
        parent_version=old.version,
        data=original["path"] or model.info["data"],
        retraining=_record(old, warm, fit, original, source, train_part, held_out, before, after, options)
        | {"from_path": str(model_dir)},
    )
    if out is not None:
        model.info["path"] = str(out)
        model.save(out)
    report("done", 1.0)
    return RetrainReport(model, before, after, failures, time.monotonic() - started)


def _training_index(old: Model, train_part: list[FeedbackStudy], source: str) -> tuple[DatasetIndex, dict[str, Any]]:
    """The model's training data (when reachable) joined with the retraining feedback, and what was found."""
    path = old.info.get("data")
    original: dict[str, Any] = {"path": path, "reachable": False, "fingerprint": old.info.get("fingerprint")}
    base: DatasetIndex | None = None
    if path:
        try:
            base = load_index(path, old.info.get("normal_label"))
            original["reachable"] = True
        except (InputError, ValueError, OSError) as error:
            original["problem"] = str(error)
            logger.warning("training data of the model unreachable (%s): retraining on the feedback alone", error)
    else:
        original["problem"] = "model.json records no training data folder"
    if base is None:
        base = DatasetIndex(Path(source), [], FEEDBACK_NORMAL, "feedback")
    names = old.class_names
    abnormal_label = next((n for n in names if n != base.normal_label), "ABNORMAL")
    trains_on_abnormal = bool(old.detector.needs & {"abnormal", "mixed"})
    has_val = any(split in base.splits for split in ("val", "validation"))
    train_split = "train" if base.splits else None
    added = [
        Sample(
            f.path,
            abnormal_label if f.abnormal else base.normal_label,
            "val" if f.abnormal and has_val and not trains_on_abnormal else train_split,
        )
        for f in train_part
    ]
    return DatasetIndex(base.root, base.samples + added, base.normal_label, base.layout), original


def _epoch_progress(report: Progress) -> EpochCallback:
    """Fine-tuning epochs as progress between 10 % and 80 % (each phase of a several-phase method in turn)."""

    def on_epoch(phase: str, done: int, total: int) -> None:
        where = "" if phase == "train" else f" ({phase})"
        report(f"fine-tuning: epoch {done}/{total}{where}", 0.1 + 0.7 * done / max(total, 1))

    return on_epoch


def _fit_options(old: Model, options: RetrainOptions) -> FitOptions:
    """The model's own settings, with a short fine-tuning schedule and its calibration rule (or the chosen one)."""
    known = set(TrainConfig.__dataclass_fields__)
    recorded = {k: v for k, v in (old.info.get("train_config") or {}).items() if k in known}
    train = replace(
        TrainConfig(**recorded),
        max_epochs=max(1, options.epochs),
        patience=None,
        checkpoint_dir=None,
        max_minutes=options.max_minutes,
        device=options.device,
        progress=False,
    )
    domain = old.domain
    mixed = int(old.info.get("n_train_mixed") or 0)
    return FitOptions(
        params=old.detector.get_params(),
        preprocessing=old.preprocessing,
        postprocessing=replace(old.postprocessing, region_threshold=None),
        train=train,
        calibration=options.calibration or (old.info.get("calibration") or {}).get("spec"),
        mixed_from_train=mixed / (mixed + int(old.info.get("n_train_normal") or 0)) if mixed else None,
        preset=None,
        modality=(",".join(domain.modalities) or None) if domain is not None else None,
        body_part=(",".join(domain.body_parts) or None) if domain is not None else None,
        random_state=int(getattr(old.detector, "random_state", None) or 0),
        progress=False,
    )


def _compare(
    old: Model, new: Model, held_out: list[FeedbackStudy], failures: list[Failure]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Operating points (and AUROC) of the served and the retrained model on the held-out feedback."""
    color = old.preprocessing.channels == 3
    labels, studies = [], []
    for case in held_out:  # one at a time: an unreadable study is skipped (listed in failures) with its label
        for study in read_studies([case.path], color=color, failures=failures):
            labels.append(int(case.abnormal))
            studies.append(study)
    if not studies:
        raise ValueError("none of the held-out feedback studies could be read: nothing to measure the result on")
    y = np.array(labels)
    return _measure(old, studies, y), _measure(new, studies, y)


def _measure(model: Model, studies: list, labels: np.ndarray) -> dict[str, Any]:
    scores = np.array([r.score for r in score_studies(model, studies, ignore_domain=True, decide=False)])
    threshold = model.threshold.value if model.threshold is not None else float("nan")
    point = operating_point(labels, scores, threshold)
    point["auroc"] = float(roc_auc_score(labels, scores)) if len(set(labels.tolist())) == 2 else None
    return point


def _record(
    old: Model,
    warm: bool,
    fit: FitOptions,
    original: dict[str, Any],
    source: str,
    train_part: list[FeedbackStudy],
    held_out: list[FeedbackStudy],
    before: dict[str, Any],
    after: dict[str, Any],
    options: RetrainOptions,
) -> dict[str, Any]:
    """``info["retraining"]``: how, from what, on what, and the before/after figures."""
    note = None if original["reachable"] else "training data of the model unreachable: retrained on the feedback alone"
    return {
        "mode": f"fine-tune ({fit.train.max_epochs} epochs from the served weights)" if warm else "refit",
        "from_version": old.version,
        "original_data": original,
        "note": note,
        "feedback": {
            "source": source,
            "n_normal": sum(not f.abnormal for f in train_part),
            "n_abnormal": sum(f.abnormal for f in train_part),
            "abnormal_use": _abnormal_use(old, fit.calibration),
            "held_out": [f.key for f in held_out],
        },
        "calibration": fit.calibration,
        "held_out_fraction": options.held_out_fraction,
        "before": before,
        "after": after,
    }


def _abnormal_use(model: Model, calibration: str | None) -> str:
    """How confirmed abnormal studies serve this method under this threshold rule."""
    if "abnormal" in model.detector.needs:
        return "trained on (labelled abnormal)"
    if "mixed" in model.detector.needs:
        return "trained on (in the unlabelled mixed set)"
    if needs_abnormal(calibration):
        return f"threshold calibration ({calibration})"
    return f"not used: the threshold rule {calibration} uses normals only (choose youden to use them)"

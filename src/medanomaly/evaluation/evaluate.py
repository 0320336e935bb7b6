"""Evaluate a saved model on a labelled split, and write the report folder (metrics, ROC, confusion matrix)."""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medanomaly.data.datasets import DatasetIndex, load_index
from medanomaly.data.loading import Failure
from medanomaly.evaluation.metrics import classification_metrics
from medanomaly.evaluation.plots import plot_confusion_matrix, plot_roc, plot_score_histogram
from medanomaly.model import Model
from medanomaly.pipeline import StudyResult, score_paths

logger = logging.getLogger(__name__)


@dataclass
class EvaluationResult:
    """Scores and metrics of one model on one labelled split.

    Attributes:
        metrics: JSON-able metrics (auroc, auroc_ci95, auprc, accuracy, ..., plus throughput).
        labels: (N,) 0 normal / 1 abnormal.
        scores: (N,) study scores.
        paths: The N studies.
        scored: Per-study pipeline results with their maps (kept for heat-map sheets).
        failures: Studies that could not be read.
    """

    metrics: dict[str, Any]
    labels: np.ndarray
    scores: np.ndarray
    paths: list[str]
    scored: list[StudyResult] = field(default_factory=list, repr=False)
    failures: list[Failure] = field(default_factory=list)


def select_split(index: DatasetIndex, split: str | None) -> list:
    """Samples of ``split``; the whole set when it has no splits; ValueError naming the splits otherwise."""
    if split is None or not index.splits:
        return list(index.samples)
    chosen = index.select(split=split)
    if not chosen:
        msg = f"{index.root}: no split {split!r}; available: {', '.join(index.splits)}"
        raise ValueError(msg)
    return chosen


def evaluate_model(
    model: Model,
    data: str | Path,
    *,
    split: str | None = "test",
    normal_label: str | None = None,
    threshold: float | None = None,
    progress: bool = True,
) -> EvaluationResult:
    """Score every study of a labelled split through the scoring pipeline and compute the metrics at a threshold.

    Studies are scored by :func:`medanomaly.pipeline.score_paths` (the path ``medanomaly score`` takes) with the
    domain check overridden, so every labelled study counts; ``n_out_of_domain`` says how many the check flagged.

    Args:
        model: The model.
        data: Labelled data set folder or manifest.
        split: Split to score (None: all).
        normal_label: Label of normal studies (default: the model's, else ``normal``).
        threshold: Decision threshold; default the model's calibrated one (ValueError when it has none).
        progress: Show a progress bar.
    """
    if threshold is None:
        if model.threshold is None:
            msg = "this model has no calibrated threshold: recalibrate it, or pass a threshold explicitly"
            raise ValueError(msg)
        threshold = model.threshold.value
    index = load_index(data, normal_label or _known_normal_label(data, model))
    samples = select_split(index, split)
    paths = [s.path for s in samples]
    scored, failures = score_paths(model, paths, progress=progress, ignore_domain=True, decide=False)
    seconds = sum(s.seconds for s in scored)  # preprocessing + scoring, file reading excluded
    failed = {f.path for f in failures}
    loaded = [s for s in samples if str(s.path) not in failed]
    labels = np.array([0 if index.is_normal(s) else 1 for s in loaded], dtype=np.int64)
    scores = np.array([s.score for s in scored], dtype=np.float64)
    metrics = classification_metrics(labels, scores, float(threshold))
    metrics.update(
        method=model.method,
        model_version=model.version,
        converged=model.training["converged"],
        stopped_because=model.training["stopped_because"],
        split=split,
        n_failed=len(failures),
        n_out_of_domain=sum(bool(s.domain.get("ignored")) for s in scored),
        images_per_second=round(sum(len(s.slice_scores) for s in scored) / max(seconds, 1e-9), 2),
        class_names=[index.normal_label, *[lab for lab in index.labels if lab != index.normal_label]],
    )
    return EvaluationResult(metrics, labels, scores, [str(s.path) for s in loaded], scored, failures)


def _known_normal_label(data: str | Path, model: Model) -> str | None:
    """The model's normal label if the evaluation data uses it, else None (then a label named 'normal')."""
    label = model.info.get("normal_label")
    if label is None:
        return None
    try:
        return label if label in load_index(data, label).labels else None
    except ValueError:
        return None


def write_report(result: EvaluationResult, out: str | Path) -> dict[str, Path]:
    """Write metrics.json, scores.csv, roc.png, confusion_matrix.png and score_histogram.png into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    metrics = result.metrics
    written = {"metrics": out / "metrics.json", "scores": out / "scores.csv"}
    payload = {**metrics, "failures": [f.to_dict() for f in result.failures]}
    written["metrics"].write_text(json.dumps(payload, indent=2))
    with written["scores"].open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "score", "predicted"])
        for path, label, score in zip(result.paths, result.labels, result.scores, strict=True):
            writer.writerow([path, int(label), f"{score:.6g}", int(score > metrics["threshold"])])
    if len(set(result.labels.tolist())) == 2:
        written["roc"] = plot_roc({metrics["method"]: (result.labels, result.scores)}, out / "roc.png")
    names = metrics.get("class_names", ["normal", "abnormal"])
    names = (names[0], names[1] if len(names) == 2 else "abnormal")
    written["confusion_matrix"] = plot_confusion_matrix(
        metrics["confusion_matrix"], out / "confusion_matrix.png", names
    )
    written["histogram"] = plot_score_histogram(
        result.labels, result.scores, metrics["threshold"], out / "score_histogram.png"
    )
    return written

"""Evaluate a saved model on a labelled split, and write the report folder (metrics, ROC, confusion matrix)."""

from __future__ import annotations

import csv
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medanomaly.data.datasets import DatasetIndex, load_index
from medanomaly.data.loading import Failure, load_images
from medanomaly.evaluation.metrics import classification_metrics
from medanomaly.evaluation.plots import plot_confusion_matrix, plot_roc, plot_score_histogram
from medanomaly.model import Model, StudyScore

logger = logging.getLogger(__name__)


@dataclass
class EvaluationResult:
    """Scores and metrics of one model on one labelled split.

    Attributes:
        metrics: JSON-able metrics (auroc, auroc_ci95, auprc, accuracy, ..., plus throughput).
        labels: (N,) 0 normal / 1 abnormal.
        scores: (N,) study scores.
        paths: The N studies.
        scored: Per-study scores and maps (kept for heat-map sheets).
        failures: Studies that could not be read.
    """

    metrics: dict[str, Any]
    labels: np.ndarray
    scores: np.ndarray
    paths: list[str]
    scored: list[StudyScore] = field(default_factory=list, repr=False)
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
    progress: bool = True,
) -> EvaluationResult:
    """Score every study of a labelled split and compute the metrics at the model's threshold."""
    index = load_index(data, normal_label or _known_normal_label(data, model))
    samples = select_split(index, split)
    loaded = load_images(samples, model.preprocessing, progress=progress, desc="load test")
    started = time.perf_counter()
    scored = model.score_images(loaded.images, loaded.owners)
    seconds = time.perf_counter() - started
    labels = np.array([0 if index.is_normal(s) else 1 for s in loaded.samples], dtype=np.int64)
    scores = np.array([s.score for s in scored], dtype=np.float64)
    threshold = model.threshold.value if model.threshold is not None else float(np.median(scores))
    metrics = classification_metrics(labels, scores, threshold)
    metrics.update(
        method=model.method,
        model_version=model.version,
        converged=model.training["converged"],
        stopped_because=model.training["stopped_because"],
        split=split,
        n_failed=len(loaded.failures),
        images_per_second=round(len(loaded.images) / max(seconds, 1e-9), 2),
        class_names=[index.normal_label, *[lab for lab in index.labels if lab != index.normal_label]],
    )
    paths = [str(s.path) for s in loaded.samples]
    return EvaluationResult(metrics, labels, scores, paths, scored, loaded.failures)


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

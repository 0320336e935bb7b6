"""The classifier's validation split (stratified, with a floor) and its check for a collapsed model.

A few hundred labelled images leave a 10 % hold-out of a dozen images: too few to stop on (one image moves the loss
by a lot, and one class may be missing). The split therefore takes at least ``min_fraction`` of every class and at
least ``min_per_class`` images of each (never more than half a class). After training, the returned model is checked
on that split: a model that calls (almost) every image the same class is "collapsed", and says so.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from sklearn.metrics import roc_auc_score, roc_curve
from torch import Tensor

#: A model is collapsed when one predicted class covers at least this share of the checked images ...
COLLAPSE_SHARE = 0.95
#: ... while the other class makes up at least this share of them.
MINORITY_SHARE = 0.10


def stratified_split(
    labels: Tensor, fraction: float, seed: int, min_fraction: float = 0.2, min_per_class: int = 10
) -> tuple[Tensor, Tensor]:
    """Seeded (train, validation) indices with every class held out in proportion, with a floor.

    Each class ``c`` of ``n_c`` images gives ``max(round(n_c * max(fraction, min_fraction)),
    min(min_per_class, n_c // 2))`` images to validation, at most ``n_c - 1``. No validation at all when
    ``fraction <= 0`` or a class has fewer than 2 images (a split could not hold both classes).

    Args:
        labels: (N,) integer class labels.
        fraction: Requested validation share (the trainer's ``val_fraction``).
        seed: Seed of the draw.
        min_fraction: Smallest validation share of each class.
        min_per_class: Smallest number of validation images of each class, when the class has twice as many.

    Returns:
        Sorted train and validation index tensors (the latter empty when there is no validation).
    """
    values = labels.numpy()
    index = torch.arange(len(values))
    classes, counts = np.unique(values, return_counts=True)
    if fraction <= 0 or len(classes) < 2 or counts.min() < 2:
        return index, index[:0]
    rng = np.random.default_rng(seed)
    share = max(fraction, min_fraction)
    chosen: list[np.ndarray] = []
    for label, count in zip(classes, counts, strict=True):
        n_val = min(max(round(count * share), min(min_per_class, count // 2)), count - 1)
        chosen.append(rng.choice(np.flatnonzero(values == label), size=n_val, replace=False))
    val = np.sort(np.concatenate(chosen))
    train = np.setdiff1d(np.arange(len(values)), val)
    return torch.from_numpy(train), torch.from_numpy(val)


def collapse_report(probabilities: Tensor, labels: Tensor, source: str, threshold: float = 0.5) -> dict[str, Any]:
    """How the fitted classifier behaves on held-out images, and whether it collapsed to one class.

    Args:
        probabilities: (N,) P(abnormal) of each image.
        labels: (N,) 0 normal / 1 abnormal.
        source: What the images are (``validation`` or ``training``), recorded in the report.
        threshold: The decision threshold the model is used with.

    Returns:
        JSON-able dict: ``source``, ``n`` and ``n_per_class``, ``predicted_abnormal_share``, ``accuracy``,
        ``balanced_accuracy``, ``auroc`` and ``youden_threshold`` (None with one class), ``collapsed`` and
        ``collapsed_to`` (``normal``/``abnormal``/None).
    """
    p = probabilities.double().numpy()
    y = labels.numpy().astype(int)
    predicted = (p >= threshold).astype(int)
    counts = np.bincount(y, minlength=2)
    recalls = [float((predicted[y == c] == c).mean()) for c in (0, 1) if counts[c]]
    abnormal_share = float(predicted.mean()) if len(p) else 0.0
    majority = int(abnormal_share >= 0.5)
    share = max(abnormal_share, 1 - abnormal_share)
    collapsed = bool(len(p)) and share >= COLLAPSE_SHARE and counts[1 - majority] >= MINORITY_SHARE * len(p)
    both = bool(counts.min())
    return {
        "source": source,
        "n": len(p),
        "n_per_class": counts.tolist(),
        "threshold": threshold,
        "predicted_abnormal_share": round(abnormal_share, 4),
        "accuracy": round(float((predicted == y).mean()), 4) if len(p) else None,
        "balanced_accuracy": round(float(np.mean(recalls)), 4) if recalls else None,
        "auroc": round(float(roc_auc_score(y, p)), 4) if both else None,
        "youden_threshold": _youden(y, p) if both else None,
        "collapsed": collapsed,
        "collapsed_to": ("abnormal" if majority else "normal") if collapsed else None,
    }


def collapse_warning(report: dict[str, Any]) -> str | None:
    """The warning to show for a collapsed model (None otherwise)."""
    if not report["collapsed"]:
        return None
    share = report["predicted_abnormal_share"]
    share = share if report["collapsed_to"] == "abnormal" else 1 - share
    return (
        f"cnn_classifier collapsed: it calls {share:.0%} of the {report['n']} {report['source']} images "
        f"{report['collapsed_to']!r} at threshold {report['threshold']:g} (classes {report['n_per_class']}, "
        f"AUROC {report['auroc']}); do not trust its decisions: check the labels and the class balance, train "
        "longer or on more images, or recalibrate (--calibrate youden)"
    )


def _youden(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """The threshold maximising sensitivity + specificity - 1 (for information: the model keeps 0.5)."""
    fpr, tpr, thresholds = roc_curve(labels, probabilities)
    best = int(np.argmax(tpr - fpr))
    return round(float(min(thresholds[best], 1.0)), 4)

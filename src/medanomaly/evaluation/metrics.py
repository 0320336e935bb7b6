"""Image- and pixel-level metrics for anomaly detection, as plain JSON-able Python values.

Scores follow the project convention (higher = more anomalous, labels 0 normal / 1 abnormal) and the decision rule
``score > threshold`` is abnormal. AUROC confidence intervals use a stratified percentile bootstrap (Efron &
Tibshirani, "An Introduction to the Bootstrap", 1993).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, confusion_matrix, precision_recall_curve, roc_auc_score

logger = logging.getLogger(__name__)

_BOOTSTRAP_CELLS = 4_000_000  # resample-matrix cells per chunk, bounds memory to a few tens of MB


def _check_labels_scores(labels: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate and return (N,) int labels in {0, 1} and (N,) float64 scores without NaN."""
    y = np.asarray(labels).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.size == 0 or y.size != s.size:
        msg = f"labels and scores must be non-empty and of equal length, got {y.size} and {s.size}"
        raise ValueError(msg)
    if not np.isin(y, (0, 1)).all():
        msg = f"labels must be 0 (normal) or 1 (abnormal), got values {np.unique(y)[:10].tolist()}"
        raise ValueError(msg)
    if np.isnan(s).any():
        msg = f"scores contain {int(np.isnan(s).sum())} NaN value(s)"
        raise ValueError(msg)
    return y.astype(np.int64), s


def _ratio(numerator: float, denominator: float) -> float | None:
    """Return numerator / denominator as a float, None when the denominator is 0."""
    return float(numerator) / float(denominator) if denominator else None


def _draw_counts(size: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, size) counts of how often each of ``size`` items is drawn in ``n`` resamples with replacement."""
    draws = rng.integers(0, size, size=(n, size)) + (np.arange(n) * size)[:, None]
    return np.bincount(draws.ravel(), minlength=n * size).reshape(n, size)


def _bootstrap_chunk(normal: np.ndarray, abnormal: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """AUROC of ``n`` stratified resamples, computed exactly from resample counts.

    Args:
        normal: (N0,) sorted normal scores.
        abnormal: (N1,) abnormal scores.
        n: Number of resamples.
        rng: Random generator.

    Returns:
        (n,) AUROC values (ties count one half, as in ``roc_auc_score``).
    """
    n0, n1 = normal.size, abnormal.size
    counts0 = _draw_counts(n0, n, rng)  # (n, N0): times each normal is drawn
    counts1 = _draw_counts(n1, n, rng)  # (n, N1)
    cumulative = np.concatenate([np.zeros((n, 1)), np.cumsum(counts0, axis=1)], axis=1)
    below = cumulative[:, np.searchsorted(normal, abnormal, side="left")]  # drawn normals scoring lower
    not_above = cumulative[:, np.searchsorted(normal, abnormal, side="right")]
    wins = ((below + not_above) / 2.0 * counts1).sum(axis=1)
    return wins / (n0 * n1)


def bootstrap_auroc_ci(
    labels: np.ndarray,
    scores: np.ndarray,
    n_bootstrap: int = 1000,
    random_state: int | None = 0,
    alpha: float = 0.05,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the AUROC, resampling each class separately.

    Args:
        labels: (N,) labels in {0, 1}; both classes must be present.
        scores: (N,) scores, higher = more anomalous.
        n_bootstrap: Number of resamples (>= 1).
        random_state: Seed of the local generator (no global state is touched).
        alpha: 1 - confidence level, in (0, 1).

    Returns:
        (low, high) bounds of the ``1 - alpha`` interval.

    Raises:
        ValueError: On invalid inputs or when only one class is present.
    """
    y, s = _check_labels_scores(labels, scores)
    if y.min() == y.max():
        msg = "the AUROC needs both normal (0) and abnormal (1) cases"
        raise ValueError(msg)
    if n_bootstrap < 1 or not 0.0 < alpha < 1.0:
        msg = f"need n_bootstrap >= 1 and 0 < alpha < 1, got {n_bootstrap} and {alpha}"
        raise ValueError(msg)
    rng = np.random.default_rng(random_state)
    normal, abnormal = np.sort(s[y == 0]), s[y == 1]
    chunk = max(1, _BOOTSTRAP_CELLS // (3 * normal.size + 4 * abnormal.size + 1))
    aucs = np.concatenate(
        [_bootstrap_chunk(normal, abnormal, min(chunk, n_bootstrap - i), rng) for i in range(0, n_bootstrap, chunk)]
    )
    low, high = np.percentile(aucs, [100.0 * alpha / 2.0, 100.0 * (1.0 - alpha / 2.0)])
    return float(low), float(high)


def operating_point(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, Any]:
    """Sensitivity and specificity of the decision ``score > threshold`` on labelled cases.

    The one place these rates are computed (evaluation, recalibration from feedback); the calibration search in
    :mod:`medanomaly.thresholds` sweeps the same rule over every cut at once.

    Args:
        labels: (N,) 0 normal / 1 abnormal.
        scores: (N,) scores, higher = more anomalous.
        threshold: Decision threshold (NaN: nothing is called abnormal).

    Returns:
        ``threshold``, ``sensitivity`` and ``specificity`` (None when that class is absent), ``n_normal``,
        ``n_abnormal`` and ``confusion_matrix`` [[tn, fp], [fn, tp]].
    """
    y = np.asarray(labels)
    predicted = np.asarray(scores, dtype=np.float64) > threshold
    (tn, fp), (fn, tp) = confusion_matrix(y, predicted.astype(np.int64), labels=[0, 1]).tolist()
    return {
        "threshold": float(threshold),
        "sensitivity": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "n_normal": int(tn + fp),
        "n_abnormal": int(tp + fn),
        "confusion_matrix": [[int(tn), int(fp)], [int(fn), int(tp)]],
    }


def classification_metrics(
    labels: np.ndarray,
    scores: np.ndarray,
    threshold: float,
    *,
    n_bootstrap: int = 1000,
    random_state: int | None = 0,
) -> dict[str, Any]:
    """Image-level metrics at one threshold, plus threshold-free AUROC and AUPRC.

    Args:
        labels: (N,) labels, 0 normal / 1 abnormal.
        scores: (N,) scores, higher = more anomalous.
        threshold: Decision threshold; ``score > threshold`` is abnormal.
        n_bootstrap: Resamples for ``auroc_ci95`` (0 skips the interval).
        random_state: Seed of the bootstrap.

    Returns:
        JSON-able dict: ``auroc``, ``auroc_ci95`` [lo, hi], ``auprc``, ``accuracy``, ``balanced_accuracy``,
        ``precision``, ``sensitivity``, ``specificity``, ``f1``, ``threshold``, ``n_normal``, ``n_abnormal``,
        ``confusion_matrix`` [[tn, fp], [fn, tp]] and ``per_class_accuracy`` {"normal", "abnormal"}. With one class
        only, the undefined entries are None and a ``warning`` key explains why.

    Raises:
        ValueError: On invalid labels or scores.
    """
    y, s = _check_labels_scores(labels, scores)
    point = operating_point(y, s, threshold)
    (tn, fp), (fn, tp) = point["confusion_matrix"]
    sensitivity, specificity = point["sensitivity"], point["specificity"]
    present = [v for v in (sensitivity, specificity) if v is not None]
    result: dict[str, Any] = {
        "auroc": None,
        "auroc_ci95": None,
        "auprc": None,
        "accuracy": float((tp + tn) / y.size),
        "balanced_accuracy": float(sum(present) / len(present)),
        "precision": _ratio(tp, tp + fp) or 0.0,
        "sensitivity": sensitivity,
        "specificity": specificity,
        "f1": float(2 * tp / (2 * tp + fp + fn)) if tp + fp + fn else 0.0,
        "threshold": float(threshold),
        "n_normal": int(tn + fp),
        "n_abnormal": int(tp + fn),
        "confusion_matrix": [[int(tn), int(fp)], [int(fn), int(tp)]],
        "per_class_accuracy": {"normal": specificity, "abnormal": sensitivity},
    }
    if y.min() == y.max():
        only = "normal" if y[0] == 0 else "abnormal"
        result["warning"] = f"only {only} cases present: AUROC, AUPRC and the other class's rates are undefined"
        logger.warning(result["warning"])
        return result
    result["auroc"] = float(roc_auc_score(y, s))
    result["auprc"] = float(average_precision_score(y, s))
    if n_bootstrap > 0:
        result["auroc_ci95"] = list(bootstrap_auroc_ci(y, s, n_bootstrap=n_bootstrap, random_state=random_state))
    return result


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap of two binary masks of the same shape (nonzero = foreground).

    Returns:
        ``2 |a & b| / (|a| + |b|)`` in [0, 1]; 1.0 when both masks are empty.

    Raises:
        ValueError: If the shapes differ.
    """
    x, z = np.asarray(a) != 0, np.asarray(b) != 0
    if x.shape != z.shape:
        msg = f"masks must have the same shape, got {x.shape} and {z.shape}"
        raise ValueError(msg)
    total = int(x.sum()) + int(z.sum())
    return 1.0 if total == 0 else float(2 * np.logical_and(x, z).sum() / total)


def pixel_metrics(masks: np.ndarray, maps: np.ndarray) -> dict[str, Any]:
    """Pixel-level AUROC and best Dice over all thresholds.

    Args:
        masks: Ground-truth masks in {0, 1}, any shape (e.g. (N, H, W)).
        maps: Anomaly maps of the same shape, higher = more anomalous.

    Returns:
        ``pixel_auroc``, ``best_dice``, ``best_dice_threshold`` (``map > threshold`` segments), ``n_pixels`` and
        ``positive_fraction``; with no positive (or no negative) pixel the undefined values are None and a
        ``warning`` key says why.

    Raises:
        ValueError: On mismatched shapes, non-binary masks or NaN in the maps.
    """
    y = np.asarray(masks).ravel()
    s = np.asarray(maps, dtype=np.float64).ravel()
    if np.shape(masks) != np.shape(maps):
        msg = f"masks and maps must have the same shape, got {np.shape(masks)} and {np.shape(maps)}"
        raise ValueError(msg)
    y, s = _check_labels_scores(y, s)
    result: dict[str, Any] = {
        "pixel_auroc": None,
        "best_dice": None,
        "best_dice_threshold": None,
        "n_pixels": int(y.size),
        "positive_fraction": float(y.mean()),
    }
    if y.min() == y.max():
        result["warning"] = "masks hold only one class of pixels: pixel AUROC and Dice are undefined"
        return result
    result["pixel_auroc"] = float(roc_auc_score(y, s))
    precision, recall, cuts = precision_recall_curve(y, s)
    with np.errstate(invalid="ignore", divide="ignore"):
        scores_f1 = np.nan_to_num(2 * precision * recall / (precision + recall))[:-1]  # last point has no cut
    best = int(np.argmax(scores_f1))
    result["best_dice"] = float(scores_f1[best])
    result["best_dice_threshold"] = _strict_cut(s, float(cuts[best]))
    return result


def _strict_cut(values: np.ndarray, cut: float) -> float:
    """Return ``t`` with ``values > t`` equal to ``values >= cut``: midway to the next lower value."""
    lower = values[values < cut]
    if lower.size == 0:
        return float(np.nextafter(cut, -np.inf))
    below = float(lower.max())
    middle = below + (cut - below) / 2.0
    return middle if below <= middle < cut else below

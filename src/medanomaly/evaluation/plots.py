"""Evaluation pictures: ROC curves, confusion matrix, score histogram, heat-map overlays and sheets.

Figures are built with matplotlib's object API on an Agg canvas (``Figure`` + ``FigureCanvasAgg``), never through
``pyplot``: no global backend switch, no figure registry to leak, safe in servers and threads. Matplotlib is imported
inside the functions, so importing this module costs nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medanomaly.mapping import overlay, resize_map

if TYPE_CHECKING:
    from matplotlib.figure import Figure

logger = logging.getLogger(__name__)

_DPI = 100
_NORMAL_COLOUR, _ABNORMAL_COLOUR = "#1f77b4", "#d62728"


def _figure(width: float, height: float) -> Figure:
    """Create a figure (size in inches) attached to its own Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as PNG to ``path`` (parent folders created) and release it."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png", dpi=_DPI)
    fig.clear()
    logger.debug("wrote %s", out)
    return out


def plot_roc(curves: dict[str, tuple[Any, Any]], path: str | Path, title: str = "ROC") -> Path:
    """ROC curves of one or several methods on one plot, AUROC in the legend, chance diagonal.

    Args:
        curves: Method name -> ((N,) labels in {0, 1}, (N,) scores, higher = more anomalous).
        path: PNG file to write.
        title: Plot title.

    Returns:
        The path written.

    Raises:
        ValueError: If ``curves`` is empty or no entry has both classes.
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    fig = _figure(4.8, 4.4)
    ax = fig.add_subplot()
    drawn = 0
    for name, (labels, scores) in curves.items():
        y, s = np.asarray(labels).ravel(), np.asarray(scores, dtype=np.float64).ravel()
        if np.unique(y).size < 2:
            logger.warning("skipping ROC of %r: it needs both normal and abnormal cases", name)
            continue
        fpr, tpr, _ = roc_curve(y, s)
        ax.plot(fpr, tpr, linewidth=1.8, label=f"{name} (AUROC {roc_auc_score(y, s):.3f})")
        drawn += 1
    if drawn == 0:
        msg = "no ROC curve to draw: give at least one method with both normal and abnormal cases"
        raise ValueError(msg)
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="chance")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="False positive rate (1 - specificity)")
    ax.set(ylabel="True positive rate (sensitivity)", title=title, aspect="equal")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    return _save(fig, path)


def plot_confusion_matrix(
    cm: Sequence[Sequence[int]],
    path: str | Path,
    class_names: Sequence[str] = ("normal", "abnormal"),
    title: str = "Confusion matrix",
) -> Path:
    """Confusion matrix with counts and row percentages.

    Args:
        cm: (K, K) counts, rows = true class, columns = predicted class (``[[tn, fp], [fn, tp]]`` for two).
        path: PNG file to write.
        class_names: K class names, in the order of the rows.
        title: Plot title.

    Returns:
        The path written.

    Raises:
        ValueError: If ``cm`` is not square or does not match ``class_names``.
    """
    counts = np.asarray(cm, dtype=np.int64)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1] or counts.shape[0] != len(class_names):
        msg = f"cm must be ({len(class_names)}, {len(class_names)}) to match class_names, got shape {counts.shape}"
        raise ValueError(msg)
    rows = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, rows, out=np.zeros(counts.shape), where=rows > 0)
    fig = _figure(3.8, 3.0)
    ax = fig.add_subplot()
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    for (i, j), count in np.ndenumerate(counts):
        colour = "white" if share[i, j] > 0.5 else "black"
        ax.text(j, i, f"{count}\n{100 * share[i, j]:.1f}%", ha="center", va="center", color=colour)
    ticks = np.arange(len(class_names))
    ax.set(xticks=ticks, yticks=ticks, xticklabels=list(class_names), yticklabels=list(class_names))
    ax.set(xlabel="Predicted", ylabel="True", title=title)
    fig.colorbar(image, ax=ax, fraction=0.046, label="share of true class")
    return _save(fig, path)


def plot_score_histogram(
    labels: Any, scores: Any, threshold: float | None, path: str | Path, *, title: str = "Score distribution"
) -> Path:
    """Histograms of normal and abnormal scores on shared bins, with the threshold as a vertical line.

    Args:
        labels: (N,) labels in {0, 1}.
        scores: (N,) scores, higher = more anomalous.
        threshold: Decision threshold to mark, or None.
        path: PNG file to write.
        title: Plot title.

    Returns:
        The path written.

    Raises:
        ValueError: If labels and scores differ in length or are empty.
    """
    y, s = np.asarray(labels).ravel(), np.asarray(scores, dtype=np.float64).ravel()
    if y.size == 0 or y.size != s.size:
        msg = f"labels and scores must be non-empty and of equal length, got {y.size} and {s.size}"
        raise ValueError(msg)
    finite = s[np.isfinite(s)]
    bins = np.histogram_bin_edges(finite if finite.size else [0.0, 1.0], bins=min(40, max(10, s.size // 5)))
    fig = _figure(5.2, 3.4)
    ax = fig.add_subplot()
    for value, name, colour in ((0, "normal", _NORMAL_COLOUR), (1, "abnormal", _ABNORMAL_COLOUR)):
        group = s[(y == value) & np.isfinite(s)]
        if group.size:
            ax.hist(group, bins=bins.tolist(), alpha=0.55, color=colour, label=f"{name} (n={group.size})")
    if threshold is not None:
        ax.axvline(float(threshold), color="black", linestyle="--", linewidth=1.2, label=f"threshold {threshold:.4g}")
    ax.set(xlabel="Anomaly score (higher = more anomalous)", ylabel="Cases", title=title)
    ax.legend(fontsize="small")
    return _save(fig, path)


def _grey(image: np.ndarray) -> np.ndarray:
    """(H, W), (1, H, W) or (H, W, 3) image to something ``imshow`` displays: squeezed, floats in [0, 1]."""
    array = np.asarray(image)
    array = array.astype(np.float64) / 255.0 if array.dtype == np.uint8 else array.astype(np.float64)
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    return np.clip(array, 0.0, 1.0)


def _add_colorbar(fig: Figure, ax: Any, vmin: float, vmax: float, label: str = "anomaly") -> Any:
    """Add and return a colorbar for the ``jet`` heat-map with range [vmin, vmax] next to ``ax``."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    mappable = ScalarMappable(norm=Normalize(vmin=vmin, vmax=vmax), cmap="jet")
    return fig.colorbar(mappable, ax=ax, fraction=0.046, pad=0.04, label=label)


def _plane(anomaly_map: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """(h, w) or (1, h, w) map to an (H, W) float32 map matching ``shape[:2]``."""
    values = np.asarray(anomaly_map, dtype=np.float32)
    if values.ndim == 3 and values.shape[0] == 1:
        values = values[0]
    if values.ndim != 2:
        msg = f"anomaly map must be (H, W) or (1, H, W), got shape {values.shape}"
        raise ValueError(msg)
    return resize_map(values, (shape[0], shape[1]))


def _map_range(maps: Sequence[np.ndarray], vmin: float | None, vmax: float | None) -> tuple[float, float]:
    """Display range shared by ``maps`` (finite min/max unless given); never empty."""
    values = np.concatenate([np.asarray(m, dtype=np.float64).ravel() for m in maps] or [np.empty(0)])
    values = values[np.isfinite(values)]
    if vmin is not None:
        low = float(vmin)
    else:
        low = float(values.min()) if values.size else 0.0
    if vmax is not None:
        high = float(vmax)
    else:
        high = float(values.max()) if values.size else 1.0
    return low, high if high > low else low + 1e-6


def save_overlay_png(
    image: np.ndarray,
    anomaly_map: np.ndarray,
    path: str | Path,
    *,
    title: str | None = None,
    threshold: float | None = None,
    vmin: float | None = None,
    vmax: float | None = None,
) -> Path:
    """Input image and heat-map overlay side by side, with a colorbar.

    Args:
        image: (H, W) or (1, H, W) grey or (H, W, 3) colour image in [0, 1].
        anomaly_map: (h, w) map; resized to (H, W) when it differs.
        path: PNG file to write.
        title: Figure title.
        threshold: Pixels whose map value is below it stay untinted; drawn as a line on the colorbar.
        vmin: Low end of the colour scale (default: map minimum).
        vmax: High end of the colour scale (default: map maximum).

    Returns:
        The path written.
    """
    picture = _grey(image)
    values = _plane(anomaly_map, picture.shape)
    low, high = _map_range([values], vmin, vmax)
    tinted = overlay(picture, values, vmin=low, vmax=high, mask_below=threshold)
    fig = _figure(6.4, 3.2)
    left, right = fig.subplots(1, 2)
    left.imshow(picture, cmap="gray", vmin=0.0, vmax=1.0)
    left.set_title("input", fontsize="medium")
    right.imshow(tinted)
    right.set_title("anomaly map" if threshold is None else f"anomaly > {threshold:.3g}", fontsize="medium")
    for ax in (left, right):
        ax.set_axis_off()
    colorbar = _add_colorbar(fig, right, low, high)
    if threshold is not None and low <= threshold <= high:
        colorbar.ax.axhline(float(threshold), color="black", linewidth=1.5)
    if title:
        fig.suptitle(title, fontsize="medium")
    return _save(fig, path)


def plot_heatmap_sheet(
    rows: list[tuple[str, np.ndarray]], columns: dict[str, list[np.ndarray]], path: str | Path
) -> Path:
    """Grid comparing methods: one row per example image, one column per method's anomaly map.

    Args:
        rows: (name, image) pairs; images (H, W), (1, H, W) or (H, W, 3) in [0, 1].
        columns: Method name -> one anomaly map per row, in the same order; each method gets one colour scale.
        path: PNG file to write.

    Returns:
        The path written.

    Raises:
        ValueError: If ``rows`` is empty or a method's map count differs from the number of rows.
    """
    if not rows:
        msg = "plot_heatmap_sheet needs at least one (name, image) row"
        raise ValueError(msg)
    for method, maps in columns.items():
        if len(maps) != len(rows):
            msg = f"method {method!r} has {len(maps)} maps for {len(rows)} rows"
            raise ValueError(msg)
    n_cols = 1 + len(columns)
    fig = _figure(1.9 * n_cols + 0.4, 1.9 * len(rows) + 0.4)
    axes = np.atleast_2d(fig.subplots(len(rows), n_cols, squeeze=False))
    ranges = {method: _map_range(maps, None, None) for method, maps in columns.items()}
    for r, (name, image) in enumerate(rows):
        picture = _grey(image)
        axes[r, 0].imshow(picture, cmap="gray", vmin=0.0, vmax=1.0)
        axes[r, 0].set_ylabel(name, fontsize="small")
        for c, (method, maps) in enumerate(columns.items(), start=1):
            low, high = ranges[method]
            values = _plane(maps[r], picture.shape)
            axes[r, c].imshow(overlay(picture, values, vmin=low, vmax=high))
            if r == 0:
                axes[r, c].set_title(method, fontsize="small")
    axes[0, 0].set_title("input", fontsize="small")
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    return _save(fig, path)

import sys
from pathlib import Path

import numpy as np
import pytest

from medanomaly.evaluation.plots import (
    plot_confusion_matrix,
    plot_heatmap_sheet,
    plot_roc,
    plot_score_histogram,
    save_overlay_png,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _assert_png(path: Path, min_bytes: int = 5_000) -> None:
    assert path.is_file()
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > min_bytes


@pytest.fixture
def scored() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    labels = np.r_[np.zeros(60, dtype=int), np.ones(30, dtype=int)]
    return labels, np.r_[rng.normal(0, 1, 60), rng.normal(1.5, 1, 30)]


@pytest.fixture
def picture() -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:48, 0:48]
    image = 0.5 + 0.3 * np.sin(xx / 6.0) * np.cos(yy / 8.0)
    heat = np.exp(-((yy - 30) ** 2 + (xx - 15) ** 2) / 40.0)
    return image, heat


def test_plot_roc_several_methods(tmp_path, scored):
    labels, scores = scored
    out = plot_roc({"good": (labels, scores), "noise": (labels, scores[::-1])}, tmp_path / "sub" / "roc.png")
    assert out == tmp_path / "sub" / "roc.png"
    _assert_png(out)


def test_plot_roc_needs_two_classes(tmp_path):
    with pytest.raises(ValueError, match="no ROC curve"):
        plot_roc({"one": ([0, 0], [0.1, 0.2])}, tmp_path / "roc.png")


def test_plot_confusion_matrix(tmp_path):
    out = plot_confusion_matrix([[50, 10], [5, 25]], tmp_path / "cm.png")
    _assert_png(out)
    with pytest.raises(ValueError, match="class_names"):
        plot_confusion_matrix([[1, 2, 3]], tmp_path / "bad.png")


def test_plot_score_histogram(tmp_path, scored):
    labels, scores = scored
    _assert_png(plot_score_histogram(labels, scores, 0.8, tmp_path / "hist.png"))
    _assert_png(plot_score_histogram(labels, scores, None, tmp_path / "hist_nothr.png"))


def test_save_overlay_png(tmp_path, picture):
    image, heat = picture
    out = save_overlay_png(image, heat, tmp_path / "overlay.png", title="case 1", threshold=0.5)
    _assert_png(out)
    small = save_overlay_png(image[None], heat[::2, ::2], tmp_path / "small_map.png")  # (1, H, W) + smaller map
    _assert_png(small)


def test_plot_heatmap_sheet(tmp_path, picture):
    image, heat = picture
    rows = [("case a", image), ("case b", image[::-1])]
    columns = {"conv_ae": [heat, heat[::-1]], "patchcore": [heat[::4, ::4], heat.T[::4, ::4]]}
    _assert_png(plot_heatmap_sheet(rows, columns, tmp_path / "sheet.png"))
    with pytest.raises(ValueError, match="maps for 2 rows"):
        plot_heatmap_sheet(rows, {"x": [heat]}, tmp_path / "bad.png")


def test_plotting_leaves_pyplot_alone(tmp_path, scored):
    labels, scores = scored
    was_loaded = "matplotlib.pyplot" in sys.modules
    plot_score_histogram(labels, scores, 0.0, tmp_path / "h.png")
    assert ("matplotlib.pyplot" in sys.modules) == was_loaded

"""Heat-map overlay PNGs for scored studies (used by ``score --maps`` and the demo)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from medanomaly.evaluation.plots import save_overlay_png
from medanomaly.pipeline import StudyResult


def write_overlays(result: StudyResult, out_dir: Path, max_slices: int = 8) -> list[Path]:
    """Write ``<stem>_input.png`` and ``<stem>_overlay.png`` (for volumes, the most anomalous slices).

    The input copy is the preprocessed slice without padding (what the model saw); the overlay shows the filtered
    anomaly map on it with the finding threshold.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = Path(result.path).name.split(".")[0] or "study"
    order = np.argsort(result.slice_scores)[::-1][:max_slices]
    written = []
    for rank, index in enumerate(order):
        suffix = "" if len(result.slice_scores) == 1 else f"_slice{int(index):03d}"
        image = result.geometry.crop(result.images[index]).transpose(1, 2, 0)
        image = image[..., 0] if image.shape[-1] == 1 else image
        input_path = out_dir / f"{stem}{suffix}_input.png"
        Image.fromarray(np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)).save(input_path)
        written.append(input_path)
        if result.anomaly_maps is None:
            continue
        title = f"{result.label}  score {result.score:.4g} / threshold {result.threshold:.4g}"
        if len(result.slice_scores) > 1:
            title += f"  slice {int(index)} (#{rank + 1})"
        anomaly_map = result.geometry.crop(result.anomaly_maps[index])
        written.append(save_overlay_png(image, anomaly_map, out_dir / f"{stem}{suffix}_overlay.png", title=title))
    return written

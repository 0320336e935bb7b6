"""Heat-map overlay PNGs for scored studies (used by ``score --maps`` and the demo)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image

from medanomaly.data.loading import Failure
from medanomaly.evaluation.plots import save_overlay_png
from medanomaly.pipeline import StudyResult


def overlay_stems(paths: list[str]) -> list[str]:
    """File-name stems unique within a batch: ``img``, or ``A_img`` / ``B_img`` when A/img.png and B/img.png meet."""
    names = [Path(p).name.split(".")[0] or "study" for p in paths]
    stems = [f"{Path(p).parent.name}_{n}" if names.count(n) > 1 else n for p, n in zip(paths, names, strict=True)]
    seen: dict[str, int] = {}
    unique = []
    for stem in stems:
        seen[stem] = seen.get(stem, 0) + 1
        unique.append(stem if seen[stem] == 1 else f"{stem}_{seen[stem]}")
    return unique


def write_all_overlays(results: list[StudyResult], out_dir: Path) -> list[Failure]:
    """Write the overlays of every result that has maps; a write error (disk full, permissions) becomes a Failure."""
    failures: list[Failure] = []
    _sweep_partials(out_dir)
    for result, stem in zip(results, overlay_stems([r.path for r in results]), strict=True):
        if result.anomaly_maps is None:
            continue
        try:
            write_overlays(result, out_dir, stem=stem)
        except OSError as error:
            reason = error.strerror or str(error)
            failures.append(Failure(result.path, f"scored, but its overlay could not be written to {out_dir}: "
                                    f"{reason} (free disk space, fix the permissions or choose another --maps)"))
    return failures


def _sweep_partials(out_dir: Path) -> None:
    """Delete the hidden temporaries that a killed run (kill -9, power loss) left in ``out_dir``."""
    for stale in out_dir.glob(".*.partial.png") if out_dir.is_dir() else []:
        pid = stale.name.rsplit(".partial", 1)[0].rsplit(".", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            stale.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a hidden temporary path beside ``path`` (same suffix) and rename it to ``path`` once written.

    A crash or a full disk never leaves a partial ``path``: readers see the old file or the whole new one.
    """
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.partial{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_overlays(result: StudyResult, out_dir: Path, max_slices: int = 8, stem: str | None = None) -> list[Path]:
    """Write ``<stem>_input.png`` and ``<stem>_overlay.png`` (for volumes, the most anomalous slices), atomically.

    The input copy is the preprocessed slice without padding (what the model saw); the overlay shows the filtered
    anomaly map on it with the finding threshold. ``stem`` defaults to the study's file name without extensions.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = stem or Path(result.path).name.split(".")[0] or "study"
    order = np.argsort(result.slice_scores)[::-1][:max_slices]
    written = []
    for rank, index in enumerate(order):
        suffix = "" if len(result.slice_scores) == 1 else f"_slice{int(index):03d}"
        image = result.geometry.crop(result.images[index]).transpose(1, 2, 0)
        image = image[..., 0] if image.shape[-1] == 1 else image
        input_path = out_dir / f"{stem}{suffix}_input.png"
        with atomic_path(input_path) as tmp:
            Image.fromarray(np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)).save(tmp)
        written.append(input_path)
        if result.anomaly_maps is None:
            continue
        title = f"{result.label}  score {result.score:.4g} / threshold {result.threshold:.4g}"
        if len(result.slice_scores) > 1:
            title += f"  slice {int(index)} (#{rank + 1})"
        anomaly_map = result.geometry.crop(result.anomaly_maps[index])
        overlay_path = out_dir / f"{stem}{suffix}_overlay.png"
        with atomic_path(overlay_path) as tmp:
            save_overlay_png(image, anomaly_map, tmp, title=title)
        written.append(overlay_path)
    return written

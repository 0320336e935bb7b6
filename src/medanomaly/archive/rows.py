"""One archive row per study, made by the project's one scoring path (:func:`medanomaly.pipeline.score_paths`)."""

from __future__ import annotations

import hashlib
import math
import time
from pathlib import Path
from typing import Any

from medanomaly.data.loading import Failure
from medanomaly.model import Model
from medanomaly.pipeline import OUT_OF_DOMAIN, StudyResult, score_paths, score_studies
from medanomaly.types import Study

OK, FAILED = "ok", "failed"
#: Columns of a row, in order (the Parquet schema is in :mod:`medanomaly.archive.store`).
COLUMNS = (
    "path", "label", "status", "score", "decision", "abnormal", "threshold", "model", "model_version",
    "n_images", "seconds", "error", "domain_reason", "map",
)  # fmt: skip


def score_chunk(
    model: Model,
    paths: list[str],
    labels: dict[str, str] | None = None,
    *,
    ignore_domain: bool = False,
    maps_dir: Path | None = None,
) -> list[dict[str, Any]]:
    """Score ``paths`` as ``medanomaly score`` does and return one row per path, in order (a bad file: a failed row)."""
    started = time.perf_counter()
    results, failures = score_paths(model, paths, progress=False, ignore_domain=ignore_domain)
    return _chunk_rows(model, paths, results, failures, started, labels, maps_dir)


def score_read_chunk(
    model: Model,
    paths: list[str],
    studies: list[Study],
    read_failures: list[Failure],
    labels: dict[str, str] | None = None,
    *,
    ignore_domain: bool = False,
    maps_dir: Path | None = None,
) -> list[dict[str, Any]]:
    """:func:`score_chunk` for studies read elsewhere (:func:`medanomaly.pipeline.read_studies`, e.g. in a Ray task).

    ``score_paths`` is ``read_studies`` then ``score_studies``; this is its second half, so the rows are the same.
    """
    started = time.perf_counter()
    failures = list(read_failures)
    results = list(score_studies(model, studies, ignore_domain=ignore_domain, failures=failures))
    return _chunk_rows(model, paths, results, failures, started, labels, maps_dir)


def _chunk_rows(
    model: Model,
    paths: list[str],
    results: list[StudyResult],
    failures: list[Failure],
    started: float,
    labels: dict[str, str] | None,
    maps_dir: Path | None,
) -> list[dict[str, Any]]:
    """One row per path, in order: scored, out of domain or failed (with the reason)."""
    rows = {r.path: result_row(model, r) for r in results}
    if maps_dir is not None:
        _write_maps(results, rows, maps_dir)
    for failure in failures:
        rows[failure.path] = failed_row(model, failure.path, failure.error, time.perf_counter() - started)
    missing = [p for p in paths if p not in rows]
    for path in missing:  # never expected: the pipeline returns or lists every path
        rows[path] = failed_row(model, path, "no result came back from the scoring path", 0.0)
    labels = labels or {}
    return [{**rows[p], "label": labels.get(p)} for p in paths]


def result_row(model: Model, result: StudyResult) -> dict[str, Any]:
    """The row of a scored or out-of-domain study: the fields ``medanomaly score --json`` prints for it."""
    out = result.status == OUT_OF_DOMAIN
    return {
        "path": result.path,
        "label": None,
        "status": OUT_OF_DOMAIN if out else OK,
        "score": None if not math.isfinite(result.score) else float(result.score),
        "decision": result.label,
        "abnormal": result.abnormal,
        "threshold": _finite(result.threshold),
        "model": model.method,
        "model_version": model.version,
        "n_images": int(len(result.images)),
        "seconds": float(result.seconds),
        "error": None,
        "domain_reason": result.domain_reason,
        "map": None,
    }


def failed_row(model: Model, path: str, error: str, seconds: float) -> dict[str, Any]:
    """The row of a study that could not be read or preprocessed, with the reason."""
    threshold = float(model.threshold.value) if model.threshold else None
    return {
        "path": path, "label": None, "status": FAILED, "score": None, "decision": None, "abnormal": None,
        "threshold": _finite(threshold), "model": model.method, "model_version": model.version, "n_images": 0,
        "seconds": float(seconds), "error": error, "domain_reason": None, "map": None,
    }  # fmt: skip


def map_stem(path: str) -> str:
    """A file-name stem unique in the whole archive: the study's name and a hash of its full path."""
    name = Path(path).name.split(".")[0] or "study"
    return f"{name}-{hashlib.sha1(path.encode('utf-8', 'surrogateescape')).hexdigest()[:12]}"


def _write_maps(results: list[StudyResult], rows: dict[str, dict[str, Any]], maps_dir: Path) -> None:
    """Heat-map overlays of the scored studies; a write error goes into the row's ``error`` (the score stays)."""
    from medanomaly.cli.overlays import write_overlays

    maps_dir.mkdir(parents=True, exist_ok=True)
    for result in results:
        if result.anomaly_maps is None:
            continue
        stem = map_stem(result.path)
        try:
            write_overlays(result, maps_dir, stem=stem)
            rows[result.path]["map"] = stem
        except OSError as error:
            rows[result.path]["error"] = f"scored, but its overlay could not be written: {error.strerror or error}"


def _finite(value: float | None) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None

"""The PDF report of a PACS result, made with the project's report builder (:mod:`medanomaly.reporting`).

Built straight from the pipeline's result and the source headers (no database needed), then wrapped as an
Encapsulated PDF by :func:`medanomaly.pacs.capture.build_pdf`.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medanomaly.pacs.capture import overlay_slices
from medanomaly.pacs.identity import ResultContext, to_source_box

if TYPE_CHECKING:
    from medanomaly.pipeline import StudyResult

logger = logging.getLogger(__name__)
STATEMENT = (
    "Decision support only: this result was computed by software to assist a qualified radiologist, who makes "
    "the diagnosis. It is not a diagnosis and must not be used as the sole basis for clinical decisions."
)


def _png(image: np.ndarray) -> bytes:
    from PIL import Image

    array = image if image.dtype == np.uint8 else np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _images(result: StudyResult, threshold: float | None) -> list[Any]:
    from medanomaly.reporting import ReportImage

    if result.anomaly_maps is None:
        return []
    index, tinted = overlay_slices(result, threshold, max_slices=1)[0]
    plain = result.geometry.to_original(result.images[index]).transpose(1, 2, 0)
    plain = plain[..., 0] if plain.shape[-1] == 1 else plain
    where = f"slice {index + 1} of {len(result.slice_scores)}" if len(result.slice_scores) > 1 else "image"
    return [
        ReportImage(f"Input, {where} (as the model saw it)", _png(plain)),
        ReportImage(f"Anomaly heat map, {where}", _png(tinted)),
    ]


def _findings(result: StudyResult) -> list[Any]:
    from medanomaly.reporting import ReportFinding

    height, width = result.geometry.original_shape
    rows = []
    for finding in result.findings:
        row0, col0, row1, col1 = to_source_box(result, finding)
        location = (
            f"x {100 * col0 / width:.0f}-{100 * col1 / width:.0f} %, "
            f"y {100 * row0 / height:.0f}-{100 * row1 / height:.0f} %"
        )
        area = f"{finding.area_mm2:.0f} mm²" if finding.area_mm2 else f"{finding.area_px} px (model grid)"
        rows.append(ReportFinding(finding.slice_index, location, area, float(finding.max_score)))
    return rows


def build_report(result: StudyResult, context: ResultContext, threshold: float | None) -> Any:
    """A :class:`medanomaly.reporting.StudyReport` for a PACS result (identifiers from the source headers)."""
    from medanomaly.reporting import StudyReport

    first = context.first
    identifiers = [
        ("Patient ID", str(first.get("PatientID") or "not recorded")),
        ("Study instance UID", str(first.StudyInstanceUID)),
        ("Series instance UID", str(first.SeriesInstanceUID)),
        ("Modality", str(first.get("Modality") or "unknown")),
        ("Slices", str(len(result.slice_scores))),
    ]
    model = [
        ("Model", Path(str(result.model.get("path", ""))).name or context.method),
        ("Version", str(context.model_version)),
        ("Method", context.method),
        ("Threshold", f"{result.threshold:.3g}"),
    ]
    summary = f"{result.label} — score {result.score:.3g}, threshold {result.threshold:.3g}"
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return StudyReport(
        identifiers=identifiers,
        decision=result.label,
        abnormal=result.abnormal,
        score=result.score,
        threshold=result.threshold,
        summary=summary,
        model=model,
        findings=_findings(result),
        images=_images(result, threshold),
        opinions=[],
        statement=STATEMENT,
        generated_at=now,
        generated_by=context.algorithm_name,
        notes=["Made automatically from a PACS study; no radiologist has reviewed it yet."],
    )


def report_pdf(result: StudyResult, context: ResultContext, threshold: float | None) -> bytes | None:
    """The PDF bytes of the report, or None when the report builder (reportlab) is not installed."""
    try:
        from medanomaly.reporting import write_pdf
    except ImportError as error:
        logger.info("no PDF report: %s", error)
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = write_pdf(build_report(result, context, threshold), Path(tmp) / "report.pdf")
        return path.read_bytes()

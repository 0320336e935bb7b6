"""The PDF report of a PACS result, made with the project's report builder (:mod:`medanomaly.reporting`).

Built straight from the pipeline's result and the source headers (no database needed), then wrapped as an
Encapsulated PDF by :func:`medanomaly.pacs.capture.build_pdf`.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medanomaly.pacs.capture import overlay_slices
from medanomaly.pacs.identity import ResultContext, to_source_box

if TYPE_CHECKING:
    from medanomaly.pipeline import StudyResult

logger = logging.getLogger(__name__)


def _images(result: StudyResult, threshold: float | None) -> list[Any]:
    from medanomaly.io.png import encode_png
    from medanomaly.reporting import ReportImage

    if result.anomaly_maps is None:
        return []
    index, tinted = overlay_slices(result, threshold, max_slices=1)[0]
    plain = result.geometry.to_original(result.images[index]).transpose(1, 2, 0)
    plain = plain[..., 0] if plain.shape[-1] == 1 else plain
    where = f"slice {index + 1} of {len(result.slice_scores)}" if len(result.slice_scores) > 1 else "image"
    return [
        ReportImage(f"Input, {where} (as the model saw it)", encode_png(plain)),
        ReportImage(f"Anomaly heat map, {where}", encode_png(tinted)),
    ]


def _findings(result: StudyResult) -> list[Any]:
    from medanomaly.reporting import ReportFinding

    height, width = result.geometry.original_shape
    rows = []
    for finding in result.findings:
        row0, col0, row1, col1 = to_source_box(result, finding)
        box = (col0 / width, row0 / height, col1 / width, row1 / height)
        area_mm2, area_px = finding.area_mm2, finding.area_px
        rows.append(ReportFinding.from_box(finding.slice_index, box, area_mm2, area_px, finding.max_score))
    return rows


def build_report(result: StudyResult, context: ResultContext, threshold: float | None) -> Any:
    """A :class:`medanomaly.reporting.StudyReport` for a PACS result (identifiers from the source headers)."""
    from medanomaly.reporting import report_for

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
    return report_for(
        result,
        identifiers=identifiers,
        model=model,
        summary=f"{result.label} — score {result.score:.3g}, threshold {result.threshold:.3g}",
        findings=_findings(result),
        images=_images(result, threshold),
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

"""Study reports from the database: content (:class:`~medanomaly.reporting.StudyReport`), saved PDFs."""

from __future__ import annotations

import hashlib

import numpy as np
from PIL import Image, ImageDraw
from sqlalchemy import select
from sqlalchemy.orm import Session

from medanomaly.io.png import encode_png
from medanomaly.reporting import ReportFinding, ReportImage, ReportOpinion, StudyReport, report_for, write_pdf
from medanomaly.service import audit
from medanomaly.service.db import Report, Result, Study, User, utcnow
from medanomaly.service.imaging import load_arrays, overlay_rgb, window_slice
from medanomaly.service.settings import Settings
from medanomaly.service.studies import decision_summary, fmt_score

_MIN_SIDE = 420
_FINDING_COLOUR, _OPINION_COLOUR = (255, 235, 59), (0, 200, 255)


def _upscale(array: np.ndarray) -> Image.Image:
    image = Image.fromarray(array if array.dtype == np.uint8 else np.round(np.clip(array, 0, 1) * 255).astype(np.uint8))
    scale = max(1.0, _MIN_SIDE / max(image.size))
    size = (round(image.width * scale), round(image.height * scale))
    return image.resize(size, Image.Resampling.LANCZOS) if scale > 1 else image


def _draw_boxes(image: Image.Image, boxes: list[list[float]], colour: tuple[int, int, int]) -> None:
    draw = ImageDraw.Draw(image)
    width = max(2, image.width // 160)
    for x0, y0, x1, y1 in boxes:
        draw.rectangle(
            [x0 * image.width, y0 * image.height, x1 * image.width, y1 * image.height], outline=colour, width=width
        )


def report_images(settings: Settings, study: Study, result: Result) -> list[ReportImage]:
    """Input and overlay of the most anomalous slice, findings (yellow) and the latest opinion's regions (blue)."""
    arrays = load_arrays(settings.data_dir / result.arrays_path)
    index = int(np.argmax(result.slice_scores)) if result.slice_scores else 0
    where = f"slice {index + 1} of {arrays.n_slices}" if arrays.n_slices > 1 else "image"
    plain = _upscale(window_slice(arrays, index, "auto"))
    tinted = _upscale(overlay_rgb(arrays, index))
    _draw_boxes(tinted, [f["box"] for f in result.findings if f["slice_index"] == index], _FINDING_COLOUR)
    opinion = study.opinion
    if opinion is not None:
        _draw_boxes(tinted, [r["box"] for r in opinion.regions if r["slice_index"] == index], _OPINION_COLOUR)
    return [
        ReportImage(f"Input, {where}", encode_png(np.asarray(plain.convert("RGB")))),
        ReportImage(
            f"Anomaly heat map, {where} (findings yellow, radiologist's marks blue)",
            encode_png(np.asarray(tinted.convert("RGB"))),
        ),
    ]


def _finding(finding: dict) -> ReportFinding:
    box, area_mm2, area_px = finding["box"], finding.get("area_mm2"), finding["area_px"]
    return ReportFinding.from_box(finding["slice_index"], box, area_mm2, area_px, finding["max_score"])


def build_report(settings: Settings, study: Study, result: Result, user: User) -> StudyReport:
    """The content of a study's report for its latest result."""
    version = result.model_version
    identifiers = [
        ("Study no.", str(study.id)),
        ("Patient ID", study.patient_id or "not recorded"),
        ("Study instance UID", study.study_instance_uid or "not recorded"),
        ("Modality / kind", f"{study.modality or 'unknown'} / {study.kind or 'unknown'}"),
        ("Uploaded file", study.original_name),
        ("Slices", str(study.n_slices)),
        ("Uploaded", study.created_at.strftime("%Y-%m-%d %H:%M UTC")),
    ]
    model = [
        ("Model", version.name),
        ("Version", str(version.version)),
        ("Method", version.method),
        ("Threshold", f"{fmt_score(result.threshold)} ({version.threshold_method or 'unknown'} calibration)"),
        ("Scored", result.created_at.strftime("%Y-%m-%d %H:%M UTC")),
    ]
    opinions = [
        ReportOpinion(
            o.user.username, o.created_at.strftime("%Y-%m-%d %H:%M UTC"), o.agrees, o.label, o.note, len(o.regions)
        )
        for o in study.opinions
    ]
    return report_for(
        result,
        identifiers=identifiers,
        model=model,
        summary=decision_summary(result),
        findings=[_finding(f) for f in result.findings],
        images=report_images(settings, study, result),
        generated_by=user.username,
        opinions=opinions,
        notes=[
            "Score: higher means more unlike the normal studies the model was trained on; the study is flagged "
            "ABNORMAL when its score exceeds the calibrated threshold."
        ]
        + (
            [
                f"Out of domain: {result.domain_reason}. The model was not trained on studies like this one, so it "
                "made no decision and computed no score; read the study without it."
            ]
            if result.status == "out_of_domain"
            else []
        ),
    )


def current_report(db: Session, study: Study) -> Report | None:
    """The newest saved report if it covers the latest result and opinion, else None."""
    result, opinion = study.result, study.opinion
    if result is None:
        return None
    report = db.scalar(select(Report).where(Report.study_id == study.id).order_by(Report.id.desc()).limit(1))
    if report is None or report.result_id != result.id or report.opinion_id != (opinion.id if opinion else None):
        return None
    return report


def save_pdf(db: Session, settings: Settings, study: Study, user: User) -> Report:
    """Write a new PDF report for the study's latest result and record it (and an audit row)."""
    result = study.result
    folder = settings.data_dir / "studies" / study.uid / "reports"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"report-{utcnow().strftime('%Y%m%dT%H%M%S%f')}.pdf"
    write_pdf(build_report(settings, study, result, user), path)
    opinion = study.opinion
    report = Report(
        study_id=study.id,
        result_id=result.id,
        opinion_id=opinion.id if opinion else None,
        created_by_id=user.id,
        path=str(path.relative_to(settings.data_dir)),
        sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
    )
    db.add(report)
    db.flush()
    audit.record(db, user, "report.generate", f"study:{study.id}", report=report.id)
    db.commit()
    return report

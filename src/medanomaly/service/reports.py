"""Study reports from the database: content (:class:`~medanomaly.reporting.StudyReport`), saved PDFs.

An open report follows the latest result and opinion; a signed one (:mod:`medanomaly.service.signoff`) covers the
signed result and the opinions up to the signed one, carries the signature and its addenda, and its PDF is written
at sign-off and after each addendum only.
"""

from __future__ import annotations

import hashlib

import numpy as np
from PIL import Image, ImageDraw
from sqlalchemy import select
from sqlalchemy.orm import Session

from medanomaly.io.png import encode_png
from medanomaly.reporting import (
    ReportAddendum,
    ReportFinding,
    ReportImage,
    ReportOpinion,
    ReportSignature,
    StudyReport,
    report_for,
    write_pdf,
)
from medanomaly.service import audit
from medanomaly.service.db import Opinion, Report, Result, Study, User, utcnow
from medanomaly.service.db.signoff import ReportSignoff
from medanomaly.service.imaging import load_arrays, overlay_rgb, window_slice
from medanomaly.service.settings import Settings
from medanomaly.service.signoff import signoff_of
from medanomaly.service.studies import decision_summary, fmt_score
from medanomaly.service.study_details import labelled, study_details

_MIN_SIDE, _MAX_SIDE = 420, 1200  # report pictures: small images enlarged, native-resolution ones reduced
_STAMP = "%Y-%m-%d %H:%M UTC"
_FINDING_COLOUR, _OPINION_COLOUR = (255, 235, 59), (0, 200, 255)


def _upscale(array: np.ndarray) -> Image.Image:
    image = Image.fromarray(array if array.dtype == np.uint8 else np.round(np.clip(array, 0, 1) * 255).astype(np.uint8))
    longest = max(image.size)
    scale = _MIN_SIDE / longest if longest < _MIN_SIDE else min(1.0, _MAX_SIDE / longest)
    size = (round(image.width * scale), round(image.height * scale))
    return image.resize(size, Image.Resampling.LANCZOS) if scale != 1 else image


def _draw_boxes(image: Image.Image, boxes: list[list[float]], colour: tuple[int, int, int]) -> None:
    draw = ImageDraw.Draw(image)
    width = max(2, image.width // 160)
    for x0, y0, x1, y1 in boxes:
        draw.rectangle(
            [x0 * image.width, y0 * image.height, x1 * image.width, y1 * image.height], outline=colour, width=width
        )


def report_images(settings: Settings, result: Result, opinion: Opinion | None) -> list[ReportImage]:
    """Input and overlay (drawn as the viewer draws it) of the most anomalous slice.

    Findings are outlined in yellow, the opinion's regions in blue.
    """
    arrays = load_arrays(settings.data_dir / result.arrays_path)
    index = int(np.argmax(result.slice_scores)) if result.slice_scores else 0
    where = f"slice {index + 1} of {arrays.n_slices}" if arrays.n_slices > 1 else "image"
    plain = _upscale(window_slice(arrays, index, "auto"))
    tinted = _upscale(overlay_rgb(arrays, index))
    _draw_boxes(tinted, [f["box"] for f in result.findings if f["slice_index"] == index], _FINDING_COLOUR)
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


def _identifiers(settings: Settings, study: Study) -> list[tuple[str, str]]:
    """Patient and study rows: the DICOM header's (name, sex, birth date, accession, study date, ...) first."""
    details = study_details(settings.data_dir, study.input_path)
    rows = [("Study no.", str(study.id)), *labelled(details)]
    if "patient_id" not in details:
        rows.insert(1, ("Patient ID", study.patient_id or "not recorded"))
    return rows + [
        ("Study instance UID", study.study_instance_uid or "not recorded"),
        ("Modality / kind", f"{study.modality or 'unknown'} / {study.kind or 'unknown'}"),
        ("Uploaded file", study.original_name),
        ("Slices", str(study.n_slices)),
        ("Uploaded", study.created_at.strftime(_STAMP)),
    ]


def _signed(signoff: ReportSignoff | None) -> tuple[ReportSignature | None, list[ReportAddendum]]:
    if signoff is None:
        return None, []
    addenda = [ReportAddendum(a.user.username, a.created_at.strftime(_STAMP), a.text) for a in signoff.addenda]
    return ReportSignature(signoff.user.username, signoff.signed_at.strftime(_STAMP)), addenda


def build_report(
    settings: Settings, study: Study, result: Result, user: User, signoff: ReportSignoff | None = None
) -> StudyReport:
    """The content of a study's report: of ``result`` and its latest opinion, or of what ``signoff`` signed."""
    if signoff is not None:
        result = signoff.result
    opinions_on = [o for o in study.opinions if o.result_id in (result.id, None)]
    if signoff is not None:
        opinions_on = [o for o in opinions_on if o.id <= signoff.opinion_id]
    version = result.model_version
    identifiers = _identifiers(settings, study)
    model = [
        ("Model", version.name),
        ("Version", str(version.version)),
        ("Method", version.method),
        ("Threshold", f"{fmt_score(result.threshold)} ({version.threshold_method or 'unknown'} calibration)"),
        ("Scored", result.created_at.strftime(_STAMP)),
    ]
    opinions = [
        ReportOpinion(o.user.username, o.created_at.strftime(_STAMP), o.agrees, o.label, o.note, len(o.regions))
        for o in opinions_on
    ]
    signature, addenda = _signed(signoff)
    return report_for(
        result,
        identifiers=identifiers,
        model=model,
        summary=decision_summary(result),
        findings=[_finding(f) for f in result.findings],
        images=report_images(settings, result, opinions_on[-1] if opinions_on else None),
        generated_by=user.username,
        opinions=opinions,
        signature=signature,
        addenda=addenda,
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
    """The saved report to hand out, or None when a new one must be written.

    A signed study's newest (written at sign-off or at its last addendum), else the newest one if it covers the
    latest result and opinion.
    """
    result, opinion = study.result, study.opinion
    if result is None:
        return None
    report = db.scalar(select(Report).where(Report.study_id == study.id).order_by(Report.id.desc()).limit(1))
    if report is not None and signoff_of(db, study.id) is not None:
        return report
    if report is None or report.result_id != result.id or report.opinion_id != (opinion.id if opinion else None):
        return None
    return report


def save_pdf(db: Session, settings: Settings, study: Study, user: User) -> Report:
    """Write a new PDF report (of the latest result, or of the signed one) and record it (and an audit row)."""
    signoff = signoff_of(db, study.id)
    result = signoff.result if signoff else study.result
    opinion = signoff.opinion if signoff else study.opinion
    folder = settings.data_dir / "studies" / study.uid / "reports"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"report-{utcnow().strftime('%Y%m%dT%H%M%S%f')}.pdf"
    write_pdf(build_report(settings, study, result, user, signoff), path)
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
    audit.record(db, user, "report.generate", f"study:{study.id}", report=report.id, signed=signoff is not None)
    db.commit()
    return report

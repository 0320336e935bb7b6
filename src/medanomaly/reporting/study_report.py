"""The content of a study report, independent of how it is rendered, and its printable HTML form."""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

#: The statement every decision the software shows carries: web page, PDF and HTML report, the PACS report.
DECISION_SUPPORT = (
    "Decision support only: this result was computed by software to assist a qualified radiologist, who makes "
    "the diagnosis. It is not a diagnosis and must not be used as the sole basis for clinical decisions."
)


@dataclass(frozen=True)
class ReportImage:
    """A picture in the report: a caption and PNG bytes."""

    caption: str
    png: bytes

    @property
    def data_uri(self) -> str:
        """``data:image/png;base64,...`` for self-contained HTML."""
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")


@dataclass(frozen=True)
class ReportFinding:
    """One finding as printed: slice, location (per cent of width/height), area, scores."""

    slice_index: int
    location: str
    area: str
    max_score: float

    @classmethod
    def from_box(
        cls, slice_index: int, box: Sequence[float], area_mm2: float | None, area_px: int, max_score: float
    ) -> ReportFinding:
        """A finding whose ``box`` is [x0, y0, x1, y1] in fractions of the image width and height."""
        x0, y0, x1, y1 = box
        location = f"x {100 * x0:.0f}-{100 * x1:.0f} %, y {100 * y0:.0f}-{100 * y1:.0f} %"
        area = f"{area_mm2:.0f} mm²" if area_mm2 else f"{area_px} px (model grid)"
        return cls(slice_index, location, area, float(max_score))


@dataclass(frozen=True)
class ReportOpinion:
    """A radiologist's opinion as printed."""

    by: str
    at: str
    agrees: bool
    label: str
    note: str
    n_regions: int


@dataclass(frozen=True)
class ReportSignature:
    """Who signed the report off, and when (the report is locked from then on)."""

    by: str
    at: str


@dataclass(frozen=True)
class ReportAddendum:
    """Text added to a signed report, with who and when."""

    by: str
    at: str
    text: str


@dataclass(frozen=True)
class StudyReport:
    """Everything a study report says.

    Attributes:
        identifiers: (name, value) rows identifying the patient and study (patient ID, study UID, ...).
        decision: ``NORMAL``/``ABNORMAL`` or the class name.
        abnormal: The model's decision; None when the study was out of the model's domain (no decision).
        score: The study's anomaly score; None when out of domain (not scored).
        threshold: The threshold it was compared with.
        summary: ``ABNORMAL — score 0.0412, threshold 0.0305``.
        model: (name, value) rows: model name, version, method, threshold method, scored at.
        findings: Regions of the anomaly map.
        images: Input and overlay pictures.
        opinions: Radiologists' opinions, oldest first.
        statement: The decision-support statement.
        generated_at: When the report was made (UTC, ISO).
        generated_by: Who made it.
        signature: The sign-off, None while the report is open.
        addenda: Text added after the sign-off, oldest first.
    """

    identifiers: list[tuple[str, str]]
    decision: str
    abnormal: bool | None
    score: float | None
    threshold: float
    summary: str
    model: list[tuple[str, str]]
    findings: list[ReportFinding]
    images: list[ReportImage]
    opinions: list[ReportOpinion]
    statement: str
    generated_at: str
    generated_by: str
    title: str = "Anomaly detection report"
    notes: list[str] = field(default_factory=list)
    signature: ReportSignature | None = None
    addenda: list[ReportAddendum] = field(default_factory=list)


def report_for(
    result: Any,
    *,
    identifiers: list[tuple[str, str]],
    model: list[tuple[str, str]],
    summary: str,
    findings: list[ReportFinding],
    images: list[ReportImage],
    generated_by: str,
    opinions: list[ReportOpinion] | None = None,
    notes: list[str] | None = None,
    signature: ReportSignature | None = None,
    addenda: list[ReportAddendum] | None = None,
) -> StudyReport:
    """The report of one scored study, the one builder of the web service's and the PACS link's reports.

    The statement is :data:`DECISION_SUPPORT` and the time is now (UTC).

    Args:
        result: Anything with ``label``, ``abnormal``, ``score`` and ``threshold``: the pipeline's ``StudyResult``
            or the service's ``Result`` row.
        identifiers: Rows identifying patient and study.
        model: Rows describing the model.
        summary: The decision in one line.
        findings: Regions of the anomaly map.
        images: Input and overlay pictures.
        generated_by: Who made the report.
        opinions: Radiologists' opinions, oldest first.
        notes: Extra paragraphs.
        signature: The sign-off, if signed.
        addenda: Addenda after the sign-off.
    """
    return StudyReport(
        identifiers=identifiers,
        decision=result.label,
        abnormal=result.abnormal,
        score=result.score,
        threshold=result.threshold,
        summary=summary,
        model=model,
        findings=findings,
        images=images,
        opinions=opinions or [],
        statement=DECISION_SUPPORT,
        generated_at=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        generated_by=generated_by,
        notes=notes or [],
        signature=signature,
        addenda=addenda or [],
    )


def _environment() -> Environment:
    return Environment(loader=PackageLoader("medanomaly.reporting", "templates"), autoescape=select_autoescape())


def render_html(
    report: StudyReport,
    *,
    toolbar: bool = True,
    pdf_url: str | None = None,
    back_url: str | None = None,
    nonce: str | None = None,
) -> str:
    """The report as one self-contained HTML page (images inlined) with print styles.

    Args:
        report: What to show.
        toolbar: Show the "Print" / "Download PDF" bar (hidden when printing).
        pdf_url: Link of the PDF download button.
        back_url: Link back to the study.
        nonce: Content-Security-Policy nonce for the inline style and script.
    """
    template = _environment().get_template("study_report.html")
    return template.render(report=report, toolbar=toolbar, pdf_url=pdf_url, back_url=back_url, nonce=nonce)

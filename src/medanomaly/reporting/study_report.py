"""The content of a study report, independent of how it is rendered, and its printable HTML form."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

from jinja2 import Environment, PackageLoader, select_autoescape


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
class StudyReport:
    """Everything a study report says.

    Attributes:
        identifiers: (name, value) rows identifying the patient and study (patient ID, study UID, ...).
        decision: ``NORMAL``/``ABNORMAL`` or the class name.
        abnormal: The model's decision.
        score: The study's anomaly score.
        threshold: The threshold it was compared with.
        summary: ``ABNORMAL — score 0.0412, threshold 0.0305``.
        model: (name, value) rows: model name, version, method, threshold method, scored at.
        findings: Regions of the anomaly map.
        images: Input and overlay pictures.
        opinions: Radiologists' opinions, oldest first.
        statement: The decision-support statement.
        generated_at: When the report was made (UTC, ISO).
        generated_by: Who made it.
    """

    identifiers: list[tuple[str, str]]
    decision: str
    abnormal: bool
    score: float
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

"""Study reports: a :class:`StudyReport` rendered as PDF (reportlab) or as a printable HTML page (Jinja2)."""

from medanomaly.reporting.pdf import write_pdf
from medanomaly.reporting.study_report import (
    DECISION_SUPPORT,
    ReportAddendum,
    ReportFinding,
    ReportImage,
    ReportOpinion,
    ReportSignature,
    StudyReport,
    render_html,
    report_for,
)

__all__ = [
    "DECISION_SUPPORT", "ReportAddendum", "ReportFinding", "ReportImage", "ReportOpinion", "ReportSignature",
    "StudyReport", "render_html", "report_for", "write_pdf",
]

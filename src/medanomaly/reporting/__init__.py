"""Study reports: a :class:`StudyReport` rendered as PDF (reportlab) or as a printable HTML page (Jinja2)."""

from medanomaly.reporting.pdf import write_pdf
from medanomaly.reporting.study_report import ReportFinding, ReportImage, ReportOpinion, StudyReport, render_html

__all__ = ["ReportFinding", "ReportImage", "ReportOpinion", "StudyReport", "render_html", "write_pdf"]

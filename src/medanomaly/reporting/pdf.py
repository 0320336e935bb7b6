"""A study report as PDF, drawn with reportlab's platypus (pure Python).

The fonts cover the names DICOM headers hold (:mod:`medanomaly.reporting.fonts`).

reportlab user guide: https://docs.reportlab.com/reportlab/userguide/ch5_platypus/
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
from reportlab.lib.units import mm
from reportlab.lib.utils import ImageReader
from reportlab.platypus import Image, KeepTogether, Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

from medanomaly.reporting.fonts import BOLD, REGULAR, markup, register
from medanomaly.reporting.study_report import StudyReport

_RED, _GREEN, _GREY = colors.HexColor("#b3261e"), colors.HexColor("#1e6b3a"), colors.HexColor("#5f6368")
_AMBER = colors.HexColor("#8a6d00")  # out of the model's domain: no decision
_GRID = TableStyle(
    [
        ("FONT", (0, 0), (-1, -1), REGULAR, 9),
        ("FONT", (0, 0), (0, -1), BOLD, 9),
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("LINEBELOW", (0, 0), (-1, -1), 0.25, colors.HexColor("#d0d4d9")),
        ("BOTTOMPADDING", (0, 0), (-1, -1), 3),
        ("TOPPADDING", (0, 0), (-1, -1), 3),
    ]
)


def _styles() -> dict[str, ParagraphStyle]:
    register()
    base = getSampleStyleSheet()
    return {
        "title": ParagraphStyle("title", parent=base["Title"], fontName=BOLD, fontSize=16, spaceAfter=2, alignment=0),
        "h2": ParagraphStyle("h2", parent=base["Heading2"], fontName=BOLD, fontSize=11, spaceBefore=8, spaceAfter=4),
        "body": ParagraphStyle("body", parent=base["BodyText"], fontName=REGULAR, fontSize=9, leading=12),
        "small": ParagraphStyle(
            "small", parent=base["BodyText"], fontName=REGULAR, fontSize=7.5, leading=9, textColor=_GREY
        ),
        "decision": ParagraphStyle(
            "decision",
            parent=base["BodyText"],
            fontSize=13,
            leading=16,
            textColor=colors.white,
            fontName=BOLD,
        ),
        "statement": ParagraphStyle("statement", parent=base["BodyText"], fontSize=9, leading=12, fontName=BOLD),
    }


def _esc(text: str) -> str:
    return markup(text)


def _rows(pairs: list[tuple[str, str]], style: dict[str, ParagraphStyle]) -> Table:
    table = Table(
        [[name, Paragraph(_esc(value), style["body"])] for name, value in pairs], colWidths=[42 * mm, 128 * mm]
    )
    table.setStyle(_GRID)
    return table


def _banner_colour(abnormal: bool | None) -> colors.Color:
    return _AMBER if abnormal is None else (_RED if abnormal else _GREEN)


def _banner(report: StudyReport, style: dict[str, ParagraphStyle]) -> Table:
    banner = Table([[Paragraph(_esc(report.summary), style["decision"])]], colWidths=[170 * mm])
    banner.setStyle(
        TableStyle(
            [
                ("BACKGROUND", (0, 0), (-1, -1), _banner_colour(report.abnormal)),
                ("LEFTPADDING", (0, 0), (-1, -1), 8),
                ("TOPPADDING", (0, 0), (-1, -1), 6),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 6),
            ]
        )
    )
    return banner


def _images(report: StudyReport, style: dict[str, ParagraphStyle]) -> Table | None:
    if not report.images:
        return None
    width = 170 * mm / len(report.images) - 4 * mm
    cells = []
    for picture in report.images:
        reader = ImageReader(io.BytesIO(picture.png))
        pixels_w, pixels_h = reader.getSize()
        height = min(width * pixels_h / pixels_w, 62 * mm)
        image = Image(io.BytesIO(picture.png), width=height * pixels_w / pixels_h, height=height)
        cells.append([image, Paragraph(_esc(picture.caption), style["small"])])
    table = Table([[c[0] for c in cells], [c[1] for c in cells]], colWidths=[width + 4 * mm] * len(cells))
    table.setStyle(TableStyle([("ALIGN", (0, 0), (-1, -1), "CENTER"), ("VALIGN", (0, 0), (-1, -1), "TOP")]))
    return table


def _findings(report: StudyReport, style: dict[str, ParagraphStyle]) -> Any:
    if not report.findings:
        return Paragraph("No region of the anomaly map exceeded the finding threshold.", style["body"])
    rows = [["#", "Slice", "Location (x, y, % of image)", "Area", "Max. map value"]]
    rows += [
        [str(i + 1), str(f.slice_index + 1), f.location, f.area, f"{f.max_score:.3g}"]
        for i, f in enumerate(report.findings)
    ]
    table = Table(rows, colWidths=[10 * mm, 16 * mm, 70 * mm, 36 * mm, 38 * mm], repeatRows=1)
    table.setStyle(
        TableStyle(
            [
                *_GRID.getCommands(),
                ("FONT", (0, 0), (-1, 0), BOLD, 9),
                ("FONT", (0, 1), (0, -1), REGULAR, 9),
            ]
        )
    )
    return table


def _opinions(report: StudyReport, style: dict[str, ParagraphStyle]) -> list[Any]:
    if not report.opinions:
        return [Paragraph("No radiologist's opinion has been recorded yet.", style["body"])]
    items = []
    for opinion in report.opinions:
        verdict = "agrees with" if opinion.agrees else "disagrees with"
        text = (
            f"<b>{_esc(opinion.by)}</b> ({_esc(opinion.at)}) {verdict} the software; label "
            f"<b>{_esc(opinion.label)}</b>; {opinion.n_regions} marked region(s)."
        )
        items.append(Paragraph(text, style["body"]))
        if opinion.note:
            items.append(Paragraph(f"Note: {_esc(opinion.note)}", style["body"]))
    return items


def _signature(report: StudyReport, style: dict[str, ParagraphStyle]) -> list[Any]:
    if report.signature is None:
        return [Paragraph("Not signed off: the report changes with new opinions.", style["small"])]
    signed = Table(
        [[Paragraph(_esc(f"Signed off by {report.signature.by} on {report.signature.at}. The report above is "
                         "locked; later text appears as addenda."), style["statement"])]],
        colWidths=[170 * mm],
    )
    signed.setStyle(TableStyle([("BOX", (0, 0), (-1, -1), 1.2, _GREEN), ("LEFTPADDING", (0, 0), (-1, -1), 6)]))
    items: list[Any] = [Spacer(1, 3 * mm), signed]
    if report.addenda:
        items.append(Paragraph("Addenda", style["h2"]))
    for addendum in report.addenda:
        text = _esc(addendum.text).replace("\n", "<br/>")
        items.append(Paragraph(f"<b>{_esc(addendum.by)}</b> ({_esc(addendum.at)}): {text}", style["body"]))
    return items


def _footer(report: StudyReport):
    def draw(canvas, document) -> None:
        canvas.saveState()
        canvas.setFont(REGULAR, 7.5)
        canvas.setFillColor(_GREY)
        canvas.drawString(
            20 * mm,
            10 * mm,
            f"Decision support only - generated {report.generated_at} by {report.generated_by} with medanomaly",
        )
        canvas.drawRightString(190 * mm, 10 * mm, f"page {document.page}")
        canvas.restoreState()

    return draw


def write_pdf(report: StudyReport, path: str | Path) -> Path:
    """Render the report as an A4 PDF.

    Args:
        report: What to print.
        path: Output file (its folder must exist).

    Returns:
        The path written.
    """
    style = _styles()
    story: list[Any] = [
        Paragraph(_esc(report.title), style["title"]),
        Paragraph(_esc(report.statement), style["statement"]),
        Spacer(1, 4 * mm),
        _banner(report, style),
        *[Paragraph(_esc(note), style["small"]) for note in report.notes],
        Spacer(1, 3 * mm),
        _rows(report.identifiers, style),
    ]
    images = _images(report, style)
    if images is not None:
        story += [Paragraph("Images", style["h2"]), images]
    story += [
        KeepTogether([Paragraph("Findings", style["h2"]), _findings(report, style)]),
        KeepTogether([Paragraph("Model", style["h2"]), _rows(report.model, style)]),
        Paragraph("Radiologist's opinion", style["h2"]),
        *_opinions(report, style),
        *_signature(report, style),
    ]
    document = SimpleDocTemplate(
        str(path),
        pagesize=A4,
        leftMargin=20 * mm,
        rightMargin=20 * mm,
        topMargin=16 * mm,
        bottomMargin=18 * mm,
        title=report.title,
        author=report.generated_by,
        subject=report.summary,
    )
    document.build(story, onFirstPage=_footer(report), onLaterPages=_footer(report))
    return Path(path)

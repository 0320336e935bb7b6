"""Fonts of the PDF report, so that any name a DICOM header holds prints (``Müller^Anna``, ``山田^太郎``).

DejaVu Sans (shipped with matplotlib, a core dependency) sets Latin, Greek, Cyrillic and most symbols; characters it
lacks (Chinese, Japanese, Korean) are set in a fallback font with those glyphs: Droid Sans Fallback (Debian's
``fonts-droid-fallback``), WenQuanYi or another TrueType font named by ``MEDANOMALY_REPORT_FALLBACK_FONT``.
reportlab only embeds TrueType outlines, so the CFF-based Noto CJK fonts do not qualify.
"""

from __future__ import annotations

import logging
import os
from functools import lru_cache
from pathlib import Path

logger = logging.getLogger(__name__)
REGULAR, BOLD, FALLBACK = "ReportSans", "ReportSans-Bold", "ReportFallback"
FALLBACK_ENV = "MEDANOMALY_REPORT_FALLBACK_FONT"
_FALLBACK_CANDIDATES = (
    "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/truetype/arphic/uming.ttc",
)


def _dejavu(name: str) -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf" / name


def fallback_path() -> Path | None:
    """The first fallback font found (the environment variable first), or None."""
    configured = os.environ.get(FALLBACK_ENV)
    for candidate in ([configured] if configured else []) + list(_FALLBACK_CANDIDATES):
        if Path(candidate).is_file():
            return Path(candidate)
    return None


@lru_cache(maxsize=1)
def register() -> bool:
    """Register the report fonts with reportlab (once); True when a fallback font for CJK was found."""
    from reportlab.lib.fonts import addMapping
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    pdfmetrics.registerFont(TTFont(REGULAR, str(_dejavu("DejaVuSans.ttf"))))
    pdfmetrics.registerFont(TTFont(BOLD, str(_dejavu("DejaVuSans-Bold.ttf"))))
    for bold, italic, name in ((0, 0, REGULAR), (1, 0, BOLD), (0, 1, REGULAR), (1, 1, BOLD)):
        addMapping(REGULAR, bold, italic, name)
    path = fallback_path()
    if path is None:
        logger.warning("no fallback font for CJK characters (install fonts-droid-fallback or set %s)", FALLBACK_ENV)
        return False
    pdfmetrics.registerFont(TTFont(FALLBACK, str(path), subfontIndex=0))
    for bold in (0, 1):
        for italic in (0, 1):
            addMapping(FALLBACK, bold, italic, FALLBACK)
    return True


def _has_glyph(font_name: str, char: str) -> bool:
    from reportlab.pdfbase import pdfmetrics

    return ord(char) in pdfmetrics.getFont(font_name).face.charToGlyph


def font_for(char: str) -> str | None:
    """The registered font that draws ``char``: DejaVu first, then the fallback; None if neither has it."""
    has_fallback = register()
    if char.isspace() or _has_glyph(REGULAR, char):
        return REGULAR
    if has_fallback and _has_glyph(FALLBACK, char):
        return FALLBACK
    return None


def missing_glyphs(text: str) -> set[str]:
    """Characters of ``text`` that no report font can draw."""
    return {char for char in set(text) if font_for(char) is None}


def markup(text: str) -> str:
    """``text`` escaped for a reportlab Paragraph, runs DejaVu cannot draw wrapped in the fallback font."""
    out: list[str] = []
    run: list[str] = []
    run_font = REGULAR

    def flush() -> None:
        escaped = "".join(run).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        out.append(escaped if run_font == REGULAR else f'<font face="{FALLBACK}">{escaped}</font>')

    for char in text:
        font = font_for(char) or REGULAR
        if font != run_font and run:
            flush()
            run = []
        run_font = font
        run.append(char)
    if run:
        flush()
    return "".join(out)

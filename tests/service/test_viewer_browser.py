"""The viewer and the report sign-off in a real headless Chromium at 1280 x 720: layout, pan, zoom around the
pointer, window/level drag, HU readout, invert, wheel and keys through slices, opinion without reload, sign-off and
addendum, live worklist updates. Same browser setup as test_service_browser.py (skips and CI rules included)."""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="the workstation tests need the 'service' extra")

from service_helpers import login, phantom_png
from test_reading_api import HEADER, relabel
from test_service_browser import ARGS, CHROMIUM, DOC_SCREENSHOTS, _log_in, _until
from test_service_browser import live_server as live_server  # the fixture, shared

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium")
sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (the 'ui-tests' extra)")
WIDTH, HEIGHT = 1280, 720


@pytest.fixture
def page() -> Iterator[Any]:
    """A Chromium page at 1280 x 720, the smallest reading screen the layout must fit."""
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        tab = browser.new_page(viewport={"width": WIDTH, "height": HEIGHT}, accept_downloads=True)
        tab.set_default_timeout(60_000)
        yield tab
        browser.close()


def _open(page: Any, base: str, app: Any, path: Path) -> int:
    study_id = login(app, "rad").upload(path).json()["id"]
    _log_in(page, base)
    page.goto(f"{base}/studies/{study_id}")
    page.wait_for_selector("#decision")
    _until(page, "document.getElementById('base-image').dataset.slice !== undefined")
    return study_id


def _image_in_view(page: Any) -> dict[str, float]:
    """The image's box, checked to lie whole inside the viewer and the 1280 x 720 window (no page scrolling)."""
    image, viewport = page.locator("#base-image").bounding_box(), page.locator("#viewport").bounding_box()
    assert image["x"] >= viewport["x"] - 0.5 and image["y"] >= viewport["y"] - 0.5
    assert image["x"] + image["width"] <= viewport["x"] + viewport["width"] + 0.5
    assert image["y"] + image["height"] <= viewport["y"] + viewport["height"] + 0.5
    assert viewport["x"] + viewport["width"] <= WIDTH and viewport["y"] + viewport["height"] <= HEIGHT
    assert image["height"] > 300  # fitted to the window, not a thumbnail
    assert page.evaluate("document.scrollingElement.scrollHeight") <= HEIGHT
    return image


def _screen(page: Any, x: float, y: float) -> tuple[float, float]:
    """Screen position of the centre of image pixel (x, y) (32 x 32 CT)."""
    box = page.locator("#base-image").bounding_box()
    return box["x"] + (x + 0.5) * box["width"] / 32, box["y"] + (y + 0.5) * box["height"] / 32


PIXEL = "document.getElementById('base-image').getContext('2d').getImageData(21, 11, 1, 1).data[0]"


def _grey(page: Any) -> int:
    """Grey level drawn for image pixel (21, 11) (in the +1000 HU block)."""
    return page.evaluate(PIXEL)


def _settle(page: Any) -> None:
    """Let the viewer finish the redraw it has scheduled (drawing happens on the next animation frame)."""
    page.evaluate("new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))")


def _window(page: Any) -> tuple[float, float]:
    center, width = page.get_attribute("#base-image", "data-window").split(",")
    return float(center), float(width)


def test_ct_viewer_at_1280x720(live_server, page, dicom_file: Path, tmp_path: Path) -> None:
    base, app = live_server
    _open(page, base, app, relabel(dicom_file, **HEADER))
    image = _image_in_view(page)
    assert "Müller, Anna" in page.inner_text(".sidebar") and "ACC-7781" in page.inner_text(".sidebar")
    screenshots = DOC_SCREENSHOTS if os.environ.get("MEDANOMALY_REFRESH_SCREENSHOTS") == "1" else tmp_path
    page.screenshot(path=str(screenshots / "viewer_1280x720.png"))

    page.mouse.move(*_screen(page, 21, 11))  # the +1000 HU block
    _until(page, "document.getElementById('readout').textContent.length > 0")
    assert page.inner_text("#readout") == "x 21, y 11: 1000 HU"

    center, width = _window(page)
    g = min(255, max(0, (1000 - (center - width / 2)) * 255 / width))
    assert abs(_grey(page) - g) <= 1
    x, y = page.locator("#viewport").bounding_box()["x"] + 200, page.locator("#viewport").bounding_box()["y"] + 150
    page.mouse.move(x, y)
    page.mouse.down(button="right")
    page.mouse.move(x + 120, y - 60, steps=6)
    page.mouse.up(button="right")
    _settle(page)
    new_center, new_width = _window(page)
    assert new_width > width + 10 and new_center < center - 5  # right: wider; up: lower level
    assert page.eval_on_selector("#window", "e => e.value") == "custom"
    g = min(255, max(0, (1000 - (new_center - new_width / 2)) * 255 / new_width))
    assert abs(_grey(page) - g) <= 1
    page.keyboard.press("i")
    _settle(page)
    assert abs(_grey(page) - (255 - g)) <= 1
    page.select_option("#window", "lung")
    _settle(page)
    assert _window(page) == (-600.0, 1500.0)

    before = page.locator("#base-image").bounding_box()
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 80, y + 50, steps=5)
    page.mouse.up()
    after = page.locator("#base-image").bounding_box()
    assert abs(after["x"] - before["x"] - 80) < 1 and abs(after["y"] - before["y"] - 50) < 1

    px, py = _screen(page, 5, 25)
    page.mouse.move(px, py)
    page.keyboard.down("Control")
    page.mouse.wheel(0, -300)
    page.keyboard.up("Control")
    _until(page, f"document.getElementById('base-image').getBoundingClientRect().width > {after['width'] * 1.5}")
    zoomed = page.locator("#base-image").bounding_box()
    qx = (px - zoomed["x"]) / zoomed["width"] * 32
    qy = (py - zoomed["y"]) / zoomed["height"] * 32
    assert abs(qx - 5.5) < 0.05 and abs(qy - 25.5) < 0.05  # the pixel under the pointer stayed under it

    page.keyboard.press("?")
    assert page.is_visible("#shortcut-help") and "Right-drag" in page.inner_text("#shortcut-help")
    page.keyboard.press("Escape")
    assert not page.is_visible("#shortcut-help")
    page.keyboard.press("f")
    fitted = page.locator("#base-image").bounding_box()
    assert abs(fitted["width"] - image["width"]) < 1 and abs(fitted["x"] - image["x"]) < 1


def test_wheel_and_keys_move_through_slices(live_server, page, dicom_zip: Path) -> None:
    base, app = live_server
    _open(page, base, app, dicom_zip)
    _image_in_view(page)  # with the slice slider and the slice-score plot
    assert page.is_visible("#slice-plot")
    page.keyboard.press("Home")
    _until(page, "document.getElementById('base-image').dataset.slice === '0'")
    box = page.locator("#viewport").bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    for expected in (1, 2, 3):
        page.mouse.wheel(0, 100)
        _until(page, f"document.getElementById('base-image').dataset.slice === '{expected}'")
    assert page.inner_text("#slice-label") == "4 / 5"
    page.mouse.wheel(0, -100)
    _until(page, "document.getElementById('base-image').dataset.slice === '2'")
    page.keyboard.press("End")
    _until(page, "document.getElementById('base-image').dataset.slice === '4'")
    page.keyboard.press("ArrowUp")
    _until(page, "document.getElementById('base-image').dataset.slice === '3'")
    width = page.locator("#base-image").bounding_box()["width"]
    page.keyboard.down("Control")
    page.mouse.wheel(0, -200)  # Ctrl + wheel zooms instead
    page.keyboard.up("Control")
    assert page.get_attribute("#base-image", "data-slice") == "3"
    assert page.locator("#base-image").bounding_box()["width"] > width


def test_opinion_signoff_and_addendum_without_reload(live_server, page, dicom_file: Path) -> None:
    from pypdf import PdfReader

    base, app = live_server
    study_id = _open(page, base, app, relabel(dicom_file, **HEADER))
    page.evaluate("window.__sameDocument = true")
    page.keyboard.press("+")
    zoom = page.inner_text("#zoom-label")
    assert page.is_disabled("#signoff-start")
    page.check("input[name=agrees][value=true]")
    page.fill("textarea[name=note]", "Nodule right upper lobe; CT follow-up.")
    page.click("#opinion-submit")
    page.wait_for_selector("#opinions li")
    assert page.inner_text("#opinion-message") == "Opinion saved."
    assert page.evaluate("window.__sameDocument") is True and page.inner_text("#zoom-label") == zoom

    page.click("#signoff-start")
    page.click("#signoff-confirm")
    page.wait_for_selector("#signoff-status.signed")
    assert page.inner_text("#signoff-status").startswith("Signed off by rad, ")
    assert page.is_disabled("#opinion-submit")
    page.fill("#addendum-text", "Compared with prior: stable.")
    page.click("#addendum-submit")
    page.wait_for_selector("#addenda li")
    assert "Compared with prior: stable." in page.inner_text("#addenda")
    assert page.evaluate("window.__sameDocument") is True

    page.reload()  # what was saved is what the page shows afterwards
    assert "Signed off by rad" in page.inner_text("#signoff-status") and page.is_visible("#addendum-form")
    with page.expect_download() as download:
        page.click("#report-pdf")
    text = " ".join(p.extract_text() for p in PdfReader(io.BytesIO(Path(download.value.path()).read_bytes())).pages)
    assert "Signed off by rad" in text and "Compared with prior: stable." in text and "Müller, Anna" in text
    assert download.value.suggested_filename == f"medanomaly-study-{study_id}-report.pdf"


def test_worklist_updates_live_and_keeps_typed_text(live_server, page, tmp_path: Path) -> None:
    base, app = live_server
    _log_in(page, base)
    page.fill("input[name=q]", "half-typed patient")  # not submitted
    page.select_option("select[name=status]", "done")
    other = phantom_png(tmp_path / "in" / "other.png", lesion=False, seed=5)
    study_id = login(app, "admin").upload(other).json()["id"]  # uploaded by someone else
    page.wait_for_selector(f"#worklist tr[data-study='{study_id}'][data-status='done']", timeout=60_000)
    assert page.input_value("input[name=q]") == "half-typed patient"
    assert page.eval_on_selector("select[name=status]", "e => e.value") == "done"
    assert re.search(r"/$", page.url)

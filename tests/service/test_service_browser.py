"""End to end in a real headless Chromium (Playwright): log in, upload, wait, adjust, give an opinion, get the PDF.

Skipped when /usr/bin/chromium or Playwright is missing (CI installs both; under CI=true a skip fails). Screenshots
go to the test's temporary folder; ``MEDANOMALY_REFRESH_SCREENSHOTS=1`` writes them to docs/screenshots/ instead.
"""

from __future__ import annotations

import io
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="the workstation tests need the 'service' extra")

from service_helpers import PASSWORDS, login, phantom_png

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
DOC_SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium")
sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (the 'ui-tests' extra)")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def live_server(app_factory) -> Iterator[tuple[str, Any]]:
    """The app with its scoring worker, served by uvicorn on a loopback port in a thread."""
    import uvicorn

    app = app_factory(start_worker=True)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}", app
    server.should_exit = True
    thread.join(15)


@pytest.fixture
def browser_page() -> Iterator[Any]:
    """A Chromium page at 1600 x 1000."""
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1000}, accept_downloads=True)
        page.set_default_timeout(60_000)
        yield page
        browser.close()


def _log_in(page: Any, base: str) -> None:
    page.goto(base + "/")
    assert "/login" in page.url
    page.fill("input[name=username]", "rad")
    page.fill("input[name=password]", PASSWORDS["rad"])
    page.click("button[type=submit]")
    page.wait_for_url(base + "/")


def _until(page: Any, expression: str, timeout: float = 30.0) -> None:
    """Wait until ``expression`` is true in the page, polled from here (``wait_for_function`` re-evaluates a string
    with eval in the page, which the workstation's Content-Security-Policy refuses)."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"timed out waiting for {expression}"
        time.sleep(0.05)


def _mark_region(page: Any) -> None:
    page.click("#draw-toggle")
    box = page.locator("#marks").bounding_box()
    page.mouse.move(box["x"] + 0.55 * box["width"], box["y"] + 0.35 * box["height"])
    page.mouse.down()
    page.mouse.move(box["x"] + 0.72 * box["width"], box["y"] + 0.52 * box["height"], steps=5)
    page.mouse.up()
    page.click("#draw-toggle")


def test_radiologist_workflow_in_chromium(live_server, browser_page, tmp_path: Path) -> None:
    screenshots = DOC_SCREENSHOTS if os.environ.get("MEDANOMALY_REFRESH_SCREENSHOTS") == "1" else tmp_path
    from pypdf import PdfReader

    base, app = live_server
    page = browser_page
    lesion = phantom_png(tmp_path / "in" / "chest_0042.png", lesion=True, size=192, seed=11, radius=(0.1, 0.13))
    _log_in(page, base)
    page.set_input_files("#upload-file", str(lesion))
    page.click("#upload-button")
    page.wait_for_url(re.compile(r"/studies/\d+$"))
    study_id = int(page.url.rsplit("/", 1)[1])
    page.wait_for_selector("#decision")  # the page polls and reloads when scoring is done
    summary = page.inner_text("#decision .decision-text")
    assert re.fullmatch(r"(NORMAL|ABNORMAL) — score [0-9.e+-]+, threshold [0-9.e+-]+", summary), summary
    score = page.evaluate(f"fetch('/api/studies/{study_id}/result').then(r => r.json()).then(j => j.score)")
    assert f"score {score:.3g}" in summary
    _until(page, "document.getElementById('base-image').dataset.slice === '0'")

    page.locator("#opacity").fill("20")
    assert page.eval_on_selector("#heat-image", "e => e.style.opacity") == "0.2"
    assert page.inner_text("#opacity-label") == "20 %"
    page.select_option("#colormap", "inferno")
    page.wait_for_function("document.getElementById('heat-image').src.includes('cmap=inferno')")
    page.locator("#opacity").fill("55")
    _mark_region(page)
    assert page.inner_text("#region-count") == "1"
    image = page.locator("#base-image").bounding_box()
    for outline in page.locator("#marks rect").all():  # findings and marks drawn inside the image
        box = outline.bounding_box()
        assert image["x"] - 2 <= box["x"] and box["x"] + box["width"] <= image["x"] + image["width"] + 2
        assert image["y"] - 2 <= box["y"] and box["y"] + box["height"] <= image["y"] + image["height"] + 2

    page.check("input[name=agrees][value=true]")
    page.fill("textarea[name=note]", "Round opacity, right mid zone. Agree; follow-up CT advised.")
    page.click("#opinion-submit")
    page.wait_for_selector("#opinions li")
    assert "agrees" in page.inner_text("#opinions") and "rad" in page.inner_text("#opinions")
    page.wait_for_function("document.getElementById('heat-image').complete")
    page.locator("#opacity").fill("55")
    page.evaluate("window.scrollTo(0, 0)")
    screenshots.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(screenshots / "study_view.png"))

    with page.expect_download() as download:
        page.click("#report-pdf")
    pdf = download.value
    assert pdf.suggested_filename == f"medanomaly-study-{study_id}-report.pdf"
    text = " ".join(p.extract_text() for p in PdfReader(io.BytesIO(Path(pdf.path()).read_bytes())).pages)
    assert f"{score:.3g}" in text and "Decision support only" in text and "Round opacity" in text

    page.goto(base + "/")
    page.wait_for_selector(f"#worklist tr[data-study='{study_id}'][data-status='done']")
    page.screenshot(path=str(screenshots / "worklist.png"))


def test_volume_slice_slider_in_chromium(live_server, browser_page, nifti_volume: Path) -> None:
    base, app = live_server
    page = browser_page
    study_id = login(app, "rad").upload(nifti_volume).json()["id"]
    _log_in(page, base)
    page.goto(f"{base}/studies/{study_id}")
    page.wait_for_selector("#decision")
    assert page.inner_text("#slice-label").endswith("/ 6")
    page.locator("#slice").fill("5")
    assert page.inner_text("#slice-label") == "6 / 6"
    _until(page, "document.getElementById('base-image').dataset.slice === '5'")
    page.locator("#slice").blur()
    page.keyboard.press("ArrowUp")
    assert page.inner_text("#slice-label") == "5 / 6"
    assert page.locator("#slice-plot polyline").count() == 1
    before = page.get_attribute("#base-image", "data-window")
    page.select_option("#window", "full")
    _until(page, f"document.getElementById('base-image').dataset.window !== '{before}'")

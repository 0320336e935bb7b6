"""In a real headless Chromium: an admin starts a retraining from feedback, follows its progress, and the new
(inactive) version appears and can be activated (skips as test_service_browser.py does)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the workstation tests need the 'service' extra")

from service_helpers import PASSWORDS, label_studies
from test_service_browser import CHROMIUM, DOC_SCREENSHOTS, browser_page, live_server  # noqa: F401 (fixtures)

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium")


def test_admin_retrains_from_feedback_in_chromium(live_server, browser_page, tmp_path: Path) -> None:  # noqa: F811
    base, app = live_server
    label_studies(app, tmp_path, 3)
    page = browser_page
    page.goto(base + "/login")
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", PASSWORDS["admin"])
    page.click("button[type=submit]")
    page.wait_for_url(base + "/")
    page.goto(base + "/admin")
    page.click("a.retrain-link")
    page.wait_for_url(base + "/admin/retraining")
    form = page.locator(".retrain-form[data-model=chest]")
    assert "3 confirmed normal, 3 confirmed abnormal" in form.inner_text()
    form.locator("input[name=epochs]").fill("1")
    form.get_by_role("button", name="Retrain").click()
    page.wait_for_url(base + "/admin/retraining")
    assert "Retraining #1 of chest v1 started" in page.inner_text("#flash")
    row = page.locator("#retrain-jobs tr[data-job='1']")
    assert row.locator(".job-status").inner_text() in ("queued", "running", "done")
    # the page polls the job and reloads when it ends
    page.wait_for_selector("#retrain-jobs tr[data-job='1'][data-status=done]", timeout=120_000)
    row = page.locator("#retrain-jobs tr[data-job='1']")
    assert row.locator("a.new-version").inner_text() == "v2"
    assert row.locator(".version-state").inner_text() == "proposed"
    assert re.search(r"→\s*\d+ % / \d+ % / ", row.inner_text())  # before → after on the held-out feedback
    assert row.locator("progress").get_attribute("value") == "1.0"
    screenshots = DOC_SCREENSHOTS if os.environ.get("MEDANOMALY_REFRESH_SCREENSHOTS") == "1" else tmp_path
    page.screenshot(path=str(screenshots / "retraining.png"), full_page=True)
    page.goto(base + "/admin")
    version_row = page.locator("#model-versions tr[data-version='2']")
    assert version_row.locator(".version-state").inner_text() == "proposed"
    page.goto(base + "/admin/retraining")
    row = page.locator("#retrain-jobs tr[data-job='1']")
    row.locator("input[name=accept_drop]").check()
    row.get_by_role("button", name="Activate").click()
    page.wait_for_url(re.compile(r"/admin"))
    assert page.locator("#model-versions tr[data-version='2'] .version-state").inner_text() == "active"
    page.goto(base + "/admin/retraining")
    row = page.locator("#retrain-jobs tr[data-job='1']")
    assert row.locator(".version-state").inner_text() == "active"
    assert row.get_by_role("button", name="Activate").count() == 0

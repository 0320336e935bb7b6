"""In a real headless Chromium: an admin proposes, activates and rolls back a recalibrated version; a radiologist
reads the triage bands and sorts the worklist by priority (skips as test_service_browser.py does)."""

from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="the workstation tests need the 'service' extra")

from service_helpers import PASSWORDS, label_studies, login, phantom_png, wait_scored
from test_service_browser import CHROMIUM, DOC_SCREENSHOTS, browser_page, live_server  # noqa: F401 (fixtures)

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium")


@pytest.fixture(autouse=True)
def _small_feedback_set(monkeypatch: pytest.MonkeyPatch) -> None:
    """3 labelled studies per class suffice, 3 folds, a 90 % rule-out target (read by the live server's settings)."""
    monkeypatch.setenv("MEDANOMALY_RECALIBRATION_MIN_PER_CLASS", "3")
    monkeypatch.setenv("MEDANOMALY_RECALIBRATION_FOLDS", "3")
    monkeypatch.setenv("MEDANOMALY_TRIAGE_SENSITIVITY", "0.9")


def _log_in_as(page: Any, base: str, username: str) -> None:
    page.goto(base + "/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORDS[username])
    page.click("button[type=submit]")
    page.wait_for_url(base + "/")


def _row(page: Any, version: int) -> Any:
    return page.locator(f"#model-versions tr[data-version='{version}']")


def _activate(page: Any, version: int, label: str) -> None:
    row = _row(page, version)
    if row.locator("input[name=accept_drop]").count():
        row.locator("input[name=accept_drop]").check()
    row.get_by_role("button", name=f"{label} v{version}").click()
    page.wait_for_url(re.compile(r"/admin"))
    assert _row(page, version).locator(".version-state").inner_text() == "active"


def test_confirm_activate_and_roll_back_in_chromium(live_server, browser_page, tmp_path: Path) -> None:  # noqa: F811
    screenshots = DOC_SCREENSHOTS if os.environ.get("MEDANOMALY_REFRESH_SCREENSHOTS") == "1" else tmp_path
    base, app = live_server
    label_studies(app, tmp_path, 4)
    page = browser_page
    _log_in_as(page, base, "admin")
    page.goto(base + "/admin")
    assert page.inner_text(".feedback-counts") == "4 normal + 4 abnormal"
    assert _row(page, 1).locator(".version-state").inner_text() == "active"
    page.select_option(".recalibrate-form select[name=method]", "youden")
    page.click(".recalibrate-form button[type=submit]")
    page.wait_for_url(re.compile(r"/admin"))
    assert "v2 proposed (not active)" in page.inner_text("#flash")
    assert _row(page, 2).locator(".version-state").inner_text() == "proposed"
    figures = _row(page, 2).locator(".before-after").inner_text()
    assert "(v1) →" in figures and "4 normal + 4 abnormal studies, stratified 3-fold cross-validation" in figures
    assert _row(page, 1).locator(".version-state").inner_text() == "active"  # nothing changed before the confirm
    page.screenshot(path=str(screenshots / "workstation-versions.png"), full_page=True)

    _activate(page, 2, "Activate")
    assert _row(page, 1).locator(".version-state").inner_text() == "inactive"
    rad = login(app, "rad")
    assert {v["version"]: v["active"] for v in rad.client.get("/api/models").json()} == {1: False, 2: True}
    _activate(page, 1, "Roll back to")  # rollback
    assert _row(page, 2).get_by_role("button", name="Roll back to v2").count() == 1
    assert {v["version"]: v["active"] for v in rad.client.get("/api/models").json()} == {1: True, 2: False}


def test_triage_bands_and_priority_sort_in_chromium(live_server, browser_page, tmp_path: Path) -> None:  # noqa: F811
    from medanomaly.service.db import Study, utcnow

    screenshots = DOC_SCREENSHOTS if os.environ.get("MEDANOMALY_REFRESH_SCREENSHOTS") == "1" else tmp_path
    base, app = live_server
    labelled = label_studies(app, tmp_path, 4)
    admin, rad = login(app, "admin"), login(app, "rad")
    version = admin.post("/api/models/chest/recalibrate", json={"method": "keep"}).json()
    assert admin.post("/api/models/chest/versions/2/activate", json={"accept_drop": True}).status_code == 200
    fresh = [rad.upload(phantom_png(tmp_path / "new" / f"n{i}.png", lesion=i % 2 == 0, seed=80 + i)).json()["id"]
             for i in range(5)]
    wait_scored(rad, fresh)
    with app.state.session_factory() as db:
        db.get(Study, fresh[-1]).created_at = utcnow() - dt.timedelta(days=1)
        db.commit()

    page = browser_page
    _log_in_as(page, base, "rad")
    triage = version["triage"]
    panel = page.inner_text("#triage-panel")
    assert "chest v2" in panel and "likely normal" in panel and "flagged" in panel
    point = triage["rule_out_point"]
    assert f"Measured on {point['n_normal']} normal + {point['n_abnormal']} abnormal studies" in panel
    assert f"rule-out sensitivity {100 * point['sensitivity']:.0f} %" in panel
    page.click("#sort-priority")
    page.wait_for_url(re.compile(r"sort=priority"))
    shown = [int(i) for i in page.eval_on_selector_all("#worklist tbody tr", "rows => rows.map(r => r.dataset.study)")]
    expected = [s["id"] for s in rad.client.get("/api/studies?sort=priority").json()]
    assert shown == expected and shown[0] == fresh[-1] and set(shown[-len(labelled):]) == set(labelled)
    first = page.locator(f"#worklist tr[data-study='{fresh[-1]}'] .triage-cell").inner_text()
    assert "overdue" in first
    bands = page.eval_on_selector_all("#worklist .triage-cell .badge[class*=band-]", "bs => bs.map(b => b.textContent)")
    assert set(bands) <= {"likely normal", "review", "flagged"} and len(bands) == len(shown)
    page.screenshot(path=str(screenshots / "workstation-triage.png"), full_page=True)

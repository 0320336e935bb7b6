"""In a real headless Chromium: repeated wrong passwords lock a user name, an admin unlocks it on the admin page,
and the user changes their own password on the settings page (skips as test_service_browser.py does)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="the workstation tests need the 'service' extra")

from service_helpers import PASSWORDS
from test_service_browser import CHROMIUM, browser_page, live_server  # noqa: F401 (fixtures)

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium")
NEW_PASSWORD = "teal-harbour-lamp"


@pytest.fixture
def app_settings() -> dict[str, Any]:
    """Extra settings of a test's app (a test overrides it with ``pytest.mark.parametrize``)."""
    return {}


@pytest.fixture
def app_factory(app_factory: Callable[..., Any], app_settings: dict[str, Any]) -> Callable[..., Any]:
    """Apps that lock a user name after 4 failures, without waits before that."""
    strict = {"login_free_failures": 2, "login_delay_seconds": 0.0, "login_user_lockout": 4, **app_settings}
    return lambda **changes: app_factory(**{**strict, **changes})


def _submit_login(page: Any, base: str, username: str, password: str) -> None:
    page.goto(base + "/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_load_state()


def test_lockout_unlock_and_own_password_change_in_chromium(live_server, browser_page) -> None:  # noqa: F811
    base, _ = live_server
    page = browser_page
    for _ in range(4):
        _submit_login(page, base, "rad", "not-my-password")
        assert "Unknown user or wrong password." in page.inner_text(".login-card")
    _submit_login(page, base, "rad", PASSWORDS["rad"])  # right password, but locked now
    assert "/login" in page.url
    assert "locked until" in page.inner_text(".login-card")

    admin_context = page.context.browser.new_context()
    admin = admin_context.new_page()
    _submit_login(admin, base, "admin", PASSWORDS["admin"])
    admin.goto(base + "/admin")
    admin.click("#login-locks-link")
    admin.wait_for_url(base + "/admin/logins")
    row = admin.locator("#login-locks tr[data-kind=user][data-key=rad]")
    assert "not locked" not in row.inner_text() and row.locator("td").nth(2).inner_text() == "4"
    assert "wrong password" in admin.inner_text("#login-failures")
    row.get_by_role("button", name="Unlock").click()
    admin.wait_for_url(base + "/admin/logins")
    assert "User name rad unlocked." in admin.inner_text("#flash")
    assert admin.locator("#login-locks tr[data-kind=user][data-key=rad]").count() == 0
    admin_context.close()

    _submit_login(page, base, "rad", PASSWORDS["rad"])
    assert page.url == base + "/"
    page.goto(base + "/settings")
    page.fill("input[name=current_password]", PASSWORDS["rad"])
    page.fill("input[name=new_password]", "password12")  # too common: refused with the reason
    page.fill("input[name=new_password_again]", "password12")
    page.click("#password-submit")
    page.wait_for_url(base + "/settings")
    assert "too common" in page.inner_text("#flash")
    page.fill("input[name=current_password]", PASSWORDS["rad"])
    page.fill("input[name=new_password]", NEW_PASSWORD)
    page.fill("input[name=new_password_again]", NEW_PASSWORD)
    page.click("#password-submit")
    page.wait_for_url(base + "/settings")
    assert "Password changed." in page.inner_text("#flash")
    page.click("form[action='/logout'] button")
    page.wait_for_url(base + "/login")
    _submit_login(page, base, "rad", PASSWORDS["rad"])
    assert "Unknown user or wrong password." in page.inner_text(".login-card")
    _submit_login(page, base, "rad", NEW_PASSWORD)
    assert page.url == base + "/"


@pytest.mark.parametrize("app_settings", [{"session_idle_minutes": 0.1}])
def test_open_worklist_logs_out_when_idle_in_chromium(live_server, browser_page, app_settings) -> None:  # noqa: F811
    """The worklist's polling (every 3 s) does not keep the session alive; when it ends the list is hidden."""
    base, _ = live_server
    page = browser_page
    _submit_login(page, base, "rad", PASSWORDS["rad"])
    assert page.url == base + "/"
    page.wait_for_url(lambda url: "/login" in url, timeout=30_000)  # 6 s idle, then the next poll
    assert page.locator("#worklist").count() == 0

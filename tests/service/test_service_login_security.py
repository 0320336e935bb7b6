"""Login protection and the workstation's security hygiene (issue 14.1): throttling and lockout with admin unlock,
equal work for unknown users, bounded password checks, audited failures, access log, password policy and change,
idle timeout, private data files, API docs behind the log-in, no paths in messages, no leftover uploads."""

from __future__ import annotations

import gzip
import logging
import statistics
import threading
import time
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="the workstation tests need the 'service' extra")
from fastapi.testclient import TestClient
from service_helpers import PASSWORDS, login
from sqlalchemy import delete, select

from medanomaly.service.db import AuditEvent, LoginThrottle
from medanomaly.service.login_guard import LoginRefused, PasswordChecker
from medanomaly.service.private_files import scrub_paths
from medanomaly.service.security import PasswordPolicyError, check_password_policy

STRICT = {"login_free_failures": 2, "login_delay_seconds": 0.0, "login_user_lockout": 4, "login_address_lockout": 50}


def _api_login(client: TestClient, username: str, password: str) -> Any:
    return client.post("/api/auth/login", json={"username": username, "password": password})


def _failures(app: Any) -> list[dict[str, Any]]:
    with app.state.session_factory() as db:
        rows = db.query(AuditEvent).filter(AuditEvent.action == "user.login_failed").order_by(AuditEvent.id)
        return [row.detail for row in rows]


def test_repeated_failures_lock_the_name_until_an_admin_unlocks_it(app_factory) -> None:
    app = app_factory(**STRICT)
    client = TestClient(app)
    statuses = [_api_login(client, "rad", "wrong-password").status_code for _ in range(4)]
    assert statuses == [401, 401, 401, 401]
    locked = _api_login(client, "rad", PASSWORDS["rad"])  # the right password no longer helps
    assert locked.status_code == 429 and "locked until" in locked.json()["detail"]
    assert int(locked.headers["Retry-After"]) > 60
    assert TestClient(app).get("/api/me", auth=("rad", PASSWORDS["rad"])).status_code == 429  # Basic too
    reasons = [(f["username"], f["reason"], f["via"]) for f in _failures(app)]
    assert reasons[:4] == [("rad", "wrong password", "api")] * 4
    assert ("rad", "throttled", "basic") in reasons
    assert all(f["address"] == "testclient" for f in _failures(app))

    admin = login(app, "admin")
    listed = admin.client.get("/api/login-locks").json()
    assert any(row["kind"] == "user" and row["key"] == "rad" and row["locked"] for row in listed), listed
    assert TestClient(app).get("/api/login-locks").status_code == 401
    assert admin.post("/api/login-locks/unlock", json={"kind": "user", "key": "rad"}).json() == {"unlocked": True}
    assert _api_login(client, "rad", PASSWORDS["rad"]).status_code == 200
    assert login(app, "rad").client.get("/api/login-locks").status_code == 403
    actions = [e["action"] for e in admin.client.get("/api/audit").json()]
    assert "login.unlock" in actions


def test_unknown_names_are_throttled_like_known_ones(app_factory) -> None:
    app = app_factory(**STRICT)
    client = TestClient(app)
    known = [_api_login(client, "rad", "nope-nope-1") for _ in range(5)]
    unknown = [_api_login(client, "nobody", "nope-nope-1") for _ in range(5)]
    assert [r.status_code for r in known] == [r.status_code for r in unknown] == [401, 401, 401, 401, 429]
    assert {r.json()["detail"] for r in known[:4]} == {r.json()["detail"] for r in unknown[:4]}
    assert [f["reason"] for f in _failures(app) if f["username"] == "nobody"][:4] == ["unknown user"] * 4


def test_growing_delays_and_the_address_limit(app_factory) -> None:
    app = app_factory(
        login_free_failures=1, login_address_free_failures=2, login_delay_seconds=30, login_user_lockout=99
    )
    throttle = app.state.login_guard.throttle
    assert [throttle.delay(n).total_seconds() for n in (0, 1, 2, 3)] == [0, 30, 60, 120]
    assert throttle.delay(40).total_seconds() == 15 * 60  # never past the lockout time
    assert [throttle.delay(n, "addr").total_seconds() for n in (1, 2, 3)] == [0, 30, 60]
    client = TestClient(app)
    assert _api_login(client, "rad", "wrong-password").status_code == 401
    waiting = _api_login(client, "rad", PASSWORDS["rad"])
    assert (
        waiting.status_code == 429
        and "wait" in waiting.json()["detail"]
        and 25 <= int(waiting.headers["Retry-After"]) <= 31
    )
    assert _api_login(client, "someone", "wrong-password").status_code == 401  # other names: the address counts
    refused = _api_login(client, "another", "wrong-password")  # 2 failures from this address: it waits as well
    assert refused.status_code == 429 and [f["reason"] for f in _failures(app)][-1] == "throttled"


def test_unknown_and_known_users_take_the_same_time(app_factory) -> None:
    app = app_factory(password_time_cost=2, password_memory_kib=16384)
    from medanomaly.service.db import User
    from medanomaly.service.security import hash_password

    with app.state.session_factory() as db:  # a hash of the real cost (the fixture users have a cheap one)
        db.add(
            User(username="slow", role="radiologist", password_hash=hash_password(app.state.hasher, "a-real-pass-9"))
        )
        db.commit()
    client = TestClient(app)

    def median_ms(name: str) -> float:
        times = []
        for _ in range(5):
            started = time.perf_counter()
            assert _api_login(client, name, "wrong-password").status_code == 401
            times.append(1000 * (time.perf_counter() - started))
            with app.state.session_factory() as db:  # no waiting between the tries
                db.execute(delete(LoginThrottle))
                db.commit()
        return statistics.median(times)

    known, unknown = median_ms("slow"), median_ms("no-such-user")
    assert 0.6 < unknown / known < 1.6, (known, unknown)


class _SlowHasher:
    """Stands in for Argon2: each verify takes 0.2 s and the most running at once is recorded."""

    def __init__(self) -> None:
        self.running = self.peak = 0
        self.lock = threading.Lock()

    def hash(self, password: str) -> str:
        return "$slow$" + password

    def verify(self, stored: str, password: str) -> bool:
        with self.lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
        time.sleep(0.2)
        with self.lock:
            self.running -= 1
        return stored == "$slow$" + password


def test_password_checks_are_bounded() -> None:
    hasher = _SlowHasher()
    checker = PasswordChecker(hasher, workers=2, queue=2)  # type: ignore[arg-type]
    outcomes: list[Any] = []

    def attempt() -> None:
        try:
            outcomes.append(checker.verify("$slow$pw", "pw"))
        except LoginRefused as refused:
            outcomes.append(refused.status_code)

    threads = [threading.Thread(target=attempt) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert hasher.peak == 2
    assert outcomes.count(True) == 4 and outcomes.count(503) == 4
    assert checker.verify(None, "pw") is False  # unknown user: the dummy hash is checked, never a match


def test_password_policy() -> None:
    for bad in ("short-1", "password", "Password123!", "qwertyuiop", "radiologist1", "aaaaaaaaaaaa", "xrad-pass-long"):
        with pytest.raises(PasswordPolicyError):
            check_password_policy(bad, "rad")
    assert check_password_policy("teal-harbour-lamp", "rad") == "teal-harbour-lamp"


def test_admin_cannot_create_a_user_with_a_common_password(admin) -> None:
    response = admin.post("/api/users", json={"username": "newdoc", "password": "password123"})
    assert response.status_code == 422 and "too common" in response.json()["detail"]


def test_self_password_change(app) -> None:
    rad, other = login(app, "rad"), login(app, "rad")
    change = "/api/me/password"
    wrong = rad.post(change, json={"current_password": "not-it-at-all", "new_password": "teal-harbour-lamp"})
    assert wrong.status_code == 403
    assert _failures(app)[-1]["reason"] == "wrong password" and _failures(app)[-1]["via"] == "password-change"
    weak = rad.post(change, json={"current_password": PASSWORDS["rad"], "new_password": "password1"})
    assert weak.status_code == 422
    assert (
        rad.client.post(change, json={"current_password": PASSWORDS["rad"], "new_password": "x" * 12}).status_code
        == 403
    )
    done = rad.post(change, json={"current_password": PASSWORDS["rad"], "new_password": "teal-harbour-lamp"})
    assert done.status_code == 200, done.text
    assert rad.client.get("/api/me").status_code == 200  # this session goes on, with a new CSRF token
    assert (
        rad.client.put("/api/me/settings", json={}, headers={"X-CSRF-Token": done.json()["csrf_token"]}).status_code
        == 200
    )
    assert other.client.get("/api/me").status_code == 401  # the other session has ended
    client = TestClient(app)
    assert _api_login(client, "rad", PASSWORDS["rad"]).status_code == 401
    assert _api_login(client, "rad", "teal-harbour-lamp").status_code == 200


class _Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def time(self) -> float:
        return self.now


def test_idle_and_absolute_session_timeouts(app_factory, monkeypatch) -> None:
    from medanomaly.service import deps, security

    clock = _Clock()
    monkeypatch.setattr(deps, "time", clock)
    monkeypatch.setattr(security, "time", clock)
    app = app_factory(session_idle_minutes=10, session_hours=1)
    rad = login(app, "rad")
    for _ in range(5):  # in use every 9 minutes: still logged in after 45 minutes
        clock.now += 9 * 60
        assert rad.client.get("/api/me").status_code == 200
    clock.now += 9 * 60
    assert rad.client.get("/api/me", headers={"X-Background": "1"}).status_code == 200  # polling is not use
    clock.now += 2 * 60
    assert rad.client.get("/api/me").status_code == 401  # 11 minutes since the last real use
    page = rad.client.get("/", follow_redirects=True)
    assert "/login" in str(page.url) and "without activity" in page.text

    rad = login(app, "rad")
    for _ in range(7):  # 63 minutes of use, over the 1 h absolute lifetime
        clock.now += 9 * 60
        status = rad.client.get("/api/me").status_code
    assert status == 401


def test_data_files_are_private_and_leftover_uploads_go(app_factory, lesion_png, tmp_path) -> None:
    data = tmp_path / "data"
    (data / "tmp" / "upload-crashed").mkdir(parents=True)
    (data / "tmp" / "upload-crashed" / "raw").write_bytes(b"half an upload")
    (data / "old.txt").write_text("from an older version")
    data.chmod(0o755)
    (data / "old.txt").chmod(0o644)
    app = app_factory()
    assert not (data / "tmp" / "upload-crashed").exists()
    rad = login(app, "rad")
    assert rad.upload(lesion_png).status_code == 201
    loose = [p for p in data.rglob("*") if p.stat().st_mode & 0o077]
    assert not loose, [(str(p), oct(p.stat().st_mode)) for p in loose]
    assert data.stat().st_mode & 0o777 == 0o700 and (data / "medanomaly.db").stat().st_mode & 0o777 == 0o600
    assert any(p.suffix == ".png" for p in (data / "studies").rglob("*"))


def test_upload_errors_show_no_server_paths(rad, app, tmp_path) -> None:
    broken = tmp_path / "scan.nii.gz"
    broken.write_bytes(gzip.compress(b"\x5c\x01\x00\x00" + b"\x00" * 400))
    junk = tmp_path / "scan.nii"
    junk.write_bytes(b"not a nifti" * 40)
    data_dir = str(app.state.settings.data_dir)
    for path in (broken, junk):
        response = rad.upload(path)
        assert 400 <= response.status_code < 500, response.text
        detail = response.json()["detail"]
        assert data_dir not in detail and "/tmp" not in detail and "upload-" not in detail, detail
    assert scrub_paths("cannot read /srv/data/tmp/upload-x1/input/study.nii: bad", "it") == "cannot read it: bad"
    assert scrub_paths("no /srv/models/chest/weights.pt found") == "no weights.pt found"
    assert scrub_paths(r"bad C:\data\tmp\x.dcm here") == "bad x.dcm here"
    assert scrub_paths("chest_0042.png: not 2-D") == "chest_0042.png: not 2-D"


def test_api_docs_only_after_login_and_without_cdn(app, app_factory) -> None:
    anonymous = TestClient(app, follow_redirects=False)
    assert anonymous.get("/openapi.json").status_code == 303  # to the log-in form
    assert anonymous.get("/docs").status_code == 303
    assert anonymous.get("/redoc").status_code == 404
    rad = login(app, "rad")
    schema = rad.client.get("/openapi.json").json()
    assert "/api/auth/login" in schema["paths"] and "/api/me/password" in schema["paths"]
    page = rad.client.get("/docs")
    assert page.status_code == 200 and "/api/login-locks" in page.text
    assert "cdn" not in page.text.lower() and "<script" not in page.text
    closed = TestClient(app_factory(api_docs=False))
    assert closed.get("/docs").status_code == 404


def test_access_log_has_user_and_no_query(rad, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="medanomaly.access"):
        rad.client.get("/api/studies?q=PATIENT-4711")
        TestClient(rad.client.app).get("/api/health")
    lines = [r.getMessage() for r in caplog.records if r.name == "medanomaly.access"]
    assert any("GET /api/studies 200" in line and "user=rad" in line for line in lines), lines
    assert any("GET /api/health 200" in line and "user=-" in line for line in lines), lines
    assert not any("PATIENT-4711" in line for line in lines)


def test_admin_page_lists_and_unlocks(app_factory) -> None:
    app = app_factory(**STRICT)
    client = TestClient(app)
    for _ in range(4):
        _api_login(client, "ghost", "wrong-password")
    admin = login(app, "admin")
    page = admin.client.get("/admin/logins")
    assert page.status_code == 200 and 'data-key="ghost"' in page.text and "unknown user" in page.text
    done = admin.client.post(
        "/admin/logins/unlock", data={"kind": "user", "key": "ghost", "csrf_token": admin.csrf}, follow_redirects=True
    )
    assert done.status_code == 200 and "ghost unlocked" in done.text and 'data-key="ghost"' not in done.text


def test_old_failures_are_forgotten(app) -> None:
    import datetime as dt

    from medanomaly.service.db import utcnow

    with app.state.session_factory() as db:
        old = utcnow() - dt.timedelta(days=1)
        db.add(LoginThrottle(kind="user", key="made-up-name", failures=9, last_failure_at=old))
        db.add(
            LoginThrottle(
                kind="user",
                key="locked-long",
                failures=9,
                last_failure_at=old,
                locked_until=utcnow() + dt.timedelta(hours=1),
            )
        )
        db.commit()
    assert _api_login(TestClient(app), "someone-else", "wrong-password").status_code == 401
    with app.state.session_factory() as db:
        keys = set(db.scalars(select(LoginThrottle.key)))
    assert keys == {"locked-long", "someone-else", "testclient"}


class _BlockedHasher:
    """A password check that hangs until released (a login burst frozen in place)."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def verify(self, stored: str, password: str) -> bool:
        self.release.wait(30)
        return False


def test_health_answers_while_password_checks_are_stuck(app) -> None:
    """Waiting log-ins hold neither database connections nor more than their bounded share of threads."""
    hasher = _BlockedHasher()
    app.state.login_guard.checker.hasher = hasher
    statuses: list[int] = []

    def attempt(i: int) -> None:
        statuses.append(_api_login(TestClient(app), f"visitor{i}", "wrong-password").status_code)

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(30)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)
    try:
        started = time.perf_counter()
        assert TestClient(app).get("/api/health").status_code == 200
        assert time.perf_counter() - started < 5.0
        assert statuses.count(503) >= 30 - 18  # 2 checks running + 16 waiting; the rest refused at once
    finally:
        hasher.release.set()
        for thread in threads:
            thread.join(60)
    assert sorted(set(statuses)) == [401, 503]

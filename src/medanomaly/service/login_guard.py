"""Log-in protection: throttling and lockout per user name and per client address, bounded password checks.

Every way in (the log-in form, the JSON log-in, HTTP Basic on ``/api``, the current password of a password change)
goes through :func:`check_login`, which

* refuses at once (429, no password check) a user name or address that is locked, or that failed recently and must
  still wait: after ``login_free_failures`` failures each further try waits ``login_delay_seconds``, doubling with
  each failure; ``login_user_lockout`` (``login_address_lockout``) failures lock the name (address) for
  ``login_lockout_minutes``, or until an admin unlocks it (an address gets ``login_address_free_failures`` tries
  before its waits start: a reading room shares one). Failures older than that are forgotten. Unknown user
  names are counted like known ones, so neither the answers nor their timing tell which names exist (OWASP
  authentication and credential-stuffing cheat sheets);
* checks the password with :class:`PasswordChecker`: at most ``password_checks`` Argon2 verifications at a time,
  at most ``password_queue`` waiting (more are answered 503 at once), and an unknown user's password is verified
  against a dummy hash of the same cost, so both take the same time;
* audits every failure (``user.login_failed``: user name, client address, reason, way in) and every log-in.
The throttle state lives in the ``login_throttle`` table, so it survives a restart.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass

from argon2 import PasswordHasher
from fastapi import Request
from sqlalchemy import Select, delete, select
from sqlalchemy.orm import Session

from medanomaly.service import audit
from medanomaly.service.db import LoginThrottle, User, utcnow
from medanomaly.service.security import verify_password
from medanomaly.service.settings import Settings

logger = logging.getLogger(__name__)
_KEY_LENGTH = 128
KINDS = ("user", "addr")


class LoginRefused(Exception):
    """A log-in refused before its password was checked: throttled or locked (429), or too busy (503)."""

    def __init__(self, status_code: int, reason: str, retry_after: int) -> None:
        super().__init__(reason)
        self.status_code, self.reason, self.retry_after = status_code, reason, retry_after


class PasswordChecker:
    """Argon2 verifications, at most ``workers`` at a time and ``queue`` waiting; same work for unknown users."""

    def __init__(self, hasher: PasswordHasher, workers: int, queue: int) -> None:
        self.hasher = hasher
        self._running = threading.BoundedSemaphore(workers)
        self._admitted = threading.BoundedSemaphore(workers + queue)
        self._dummy = hasher.hash(secrets.token_urlsafe(24))

    def verify(self, stored_hash: str | None, password: str, recheck: Callable[[], None] = lambda: None) -> bool:
        """True if ``password`` matches ``stored_hash``; None (unknown user) is checked against the dummy hash.

        ``recheck`` runs once a slot is free and may raise :class:`LoginRefused` (the name was locked meanwhile).

        Raises:
            LoginRefused: 503 when ``workers + queue`` checks are already under way.
        """
        if not self._admitted.acquire(blocking=False):
            raise LoginRefused(503, "too many log-ins at the same time: try again in a few seconds", 2)
        try:
            with self._running:
                recheck()
                matches = verify_password(self.hasher, stored_hash or self._dummy, password)
        finally:
            self._admitted.release()
        return matches and stored_hash is not None

    def hash(self, password: str) -> str:
        """Hash a new password within the same bound."""
        with self._running:
            return self.hasher.hash(password)


@dataclass(frozen=True)
class Attempt:
    """Who tries to log in, from where and how (``form``, ``api``, ``basic``, ``password-change``)."""

    username: str
    address: str
    via: str

    @property
    def keys(self) -> tuple[tuple[str, str], tuple[str, str]]:
        """(kind, key) of the user name and of the address."""
        return ("user", self.username.strip().lower()[:_KEY_LENGTH]), ("addr", self.address[:_KEY_LENGTH])


def client_address(request: Request) -> str:
    """The client's address as the server sees it (behind a proxy: run uvicorn with ``--proxy-headers``)."""
    return request.client.host if request.client else "unknown"


class Throttle:
    """Reads and updates the ``login_throttle`` rows under one lock (no lost updates within the process)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.window = dt.timedelta(minutes=settings.login_lockout_minutes)
        self._lock = threading.Lock()

    def _limit(self, kind: str) -> int:
        return self.settings.login_user_lockout if kind == "user" else self.settings.login_address_lockout

    def refusal(self, db: Session, attempt: Attempt) -> LoginRefused | None:
        """Why this attempt must not be checked now (locked, or too soon after recent failures), else None."""
        now = utcnow()
        for kind, key in attempt.keys:
            row = db.scalar(_row_query(kind, key))
            if row is None:
                continue
            what = "this user name" if kind == "user" else "this computer's address"
            if row.locked_until is not None and row.locked_until > now:
                wait = int((row.locked_until - now).total_seconds()) + 1
                reason = (
                    f"too many failed log-ins: {what} is locked until {row.locked_until:%H:%M} UTC; "
                    "an admin can unlock it sooner"
                )
                return LoginRefused(429, reason, wait)
            if now - row.last_failure_at > self.window:
                continue
            earliest = row.last_failure_at + self.delay(row.failures, kind)
            if earliest > now:
                wait = int((earliest - now).total_seconds()) + 1
                return LoginRefused(429, f"too many failed log-ins: wait {wait} s before trying again", wait)
        return None

    def delay(self, failures: int, kind: str = "user") -> dt.timedelta:
        """How long after the last of ``failures`` failures of a user name (address) the next try is allowed."""
        free = self.settings.login_free_failures if kind == "user" else self.settings.login_address_free_failures
        extra = failures - free
        if extra < 0:
            return dt.timedelta(0)
        seconds = self.settings.login_delay_seconds * 2 ** min(extra, 20)
        return min(dt.timedelta(seconds=seconds), self.window)

    def failed(self, db: Session, attempt: Attempt) -> None:
        """Count a failure against the name and the address; lock either at its limit (caller commits)."""
        now = utcnow()
        with self._lock:
            stale = (LoginThrottle.last_failure_at < now - self.window) & (
                LoginThrottle.locked_until.is_(None) | (LoginThrottle.locked_until < now)
            )
            db.execute(delete(LoginThrottle).where(stale))  # forgotten failures: no table growth from made-up names
            for kind, key in attempt.keys:
                row = db.scalar(_row_query(kind, key))
                if row is None:
                    row = LoginThrottle(kind=kind, key=key, failures=0, last_failure_at=now)
                    db.add(row)
                elif now - row.last_failure_at > self.window and not _locked(row, now):
                    row.failures, row.locked_until = 0, None
                row.failures += 1
                row.last_failure_at = now
                if row.failures >= self._limit(kind) and not _locked(row, now):
                    row.locked_until = now + self.window
            db.commit()

    def succeeded(self, db: Session, attempt: Attempt) -> None:
        """Forget the user name's failures (the address keeps its own)."""
        kind, key = attempt.keys[0]
        with self._lock:
            db.execute(delete(LoginThrottle).where(LoginThrottle.kind == kind, LoginThrottle.key == key))
            db.commit()


def _row_query(kind: str, key: str) -> Select[LoginThrottle]:
    query = select(LoginThrottle).where(LoginThrottle.kind == kind, LoginThrottle.key == key)
    return query.execution_options(populate_existing=True)  # other requests may have changed the row


def _locked(row: LoginThrottle, now: dt.datetime) -> bool:
    return row.locked_until is not None and row.locked_until > now


class LoginGuard:
    """The throttle and the password checker of one application (``app.state.login_guard``)."""

    def __init__(self, settings: Settings, hasher: PasswordHasher) -> None:
        self.throttle = Throttle(settings)
        self.checker = PasswordChecker(hasher, settings.password_checks, settings.password_queue)


def check_login(request: Request, db: Session, attempt: Attempt, password: str) -> User | None:
    """The active user with these credentials, else None; every failure audited and counted.

    Raises:
        LoginRefused: Locked, too soon after failures, or too many checks under way (also audited).
    """
    guard: LoginGuard = request.app.state.login_guard
    user = None
    try:
        _raise_if_refused(guard, db, attempt)
        user = db.scalar(select(User).where(User.username == attempt.username))
        stored = user.password_hash if user is not None else None
        db.commit()  # hand the connection back to the pool while waiting: other requests need it (found by the bench)
        matches = guard.checker.verify(stored, password, lambda: _raise_if_refused(guard, db, attempt))
    except LoginRefused as refused:
        reason = "busy" if refused.status_code == 503 else "throttled"
        _audit_failure(db, attempt, user, reason)
        db.commit()
        raise
    if user is None or not matches or not user.active:
        reason = "unknown user" if user is None else ("wrong password" if not matches else "account disabled")
        _audit_failure(db, attempt, user, reason)
        guard.throttle.failed(db, attempt)
        return None
    guard.throttle.succeeded(db, attempt)
    return user


def _raise_if_refused(guard: LoginGuard, db: Session, attempt: Attempt) -> None:
    refused = guard.throttle.refusal(db, attempt)
    if refused is not None:
        raise refused


def _audit_failure(db: Session, attempt: Attempt, user: User | None, reason: str) -> None:
    target = f"user:{user.id}" if user is not None else None
    name, address, via = attempt.username[:64], attempt.address, attempt.via
    logger.warning("failed log-in: user=%r address=%s reason=%s via=%s", name, address, reason, via)
    audit.record(
        db,
        None,
        "user.login_failed",
        target,
        actor="anonymous",
        username=attempt.username[:64],
        address=attempt.address,
        reason=reason,
        via=attempt.via,
    )


def unlock(db: Session, kind: str, key: str) -> bool:
    """Lift the lock and forget the failures of a user name or address (caller audits and commits)."""
    key = key.strip().lower() if kind == "user" else key.strip()
    result = db.execute(delete(LoginThrottle).where(LoginThrottle.kind == kind, LoginThrottle.key == key))
    return bool(getattr(result, "rowcount", 0))


def locks(db: Session, settings: Settings) -> list[dict[str, object]]:
    """Current throttle rows with recent failures or a lock, newest first (for the admin page and API)."""
    now = utcnow()
    since = now - dt.timedelta(minutes=settings.login_lockout_minutes)
    rows = db.scalars(select(LoginThrottle).order_by(LoginThrottle.last_failure_at.desc()))
    return [
        {
            "kind": row.kind,
            "key": row.key,
            "failures": row.failures,
            "last_failure_at": row.last_failure_at,
            "locked_until": row.locked_until if _locked(row, now) else None,
            "locked": _locked(row, now),
        }
        for row in rows
        if _locked(row, now) or row.last_failure_at > since
    ]

"""Passwords (Argon2id), session log-in state and CSRF tokens.

Sessions are Starlette's signed, HttpOnly, SameSite=Lax cookies holding only the user id, the user's session epoch
(bumped at log-out and password change, which ends every session of that user) and the CSRF token. Requests that
change data and carry the session cookie must echo the CSRF token, in the ``X-CSRF-Token`` header (JSON API) or a
``csrf_token`` form field (HTML forms): the synchronizer-token pattern of the OWASP CSRF cheat sheet.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
MIN_PASSWORD_LENGTH = 8
_USERNAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


class PasswordPolicyError(ValueError):
    """A new password or username breaks the rules."""


def password_hasher(time_cost: int = 3, memory_kib: int = 65536) -> PasswordHasher:
    """Argon2id hasher with the given costs (defaults: RFC 9106's second recommended option, 64 MiB)."""
    return PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=1)


def hash_password(hasher: PasswordHasher, password: str) -> str:
    """Hash a new password after checking the policy (at least 8 characters)."""
    if len(password) < MIN_PASSWORD_LENGTH:
        msg = f"password too short: use at least {MIN_PASSWORD_LENGTH} characters"
        raise PasswordPolicyError(msg)
    return hasher.hash(password)


def verify_password(hasher: PasswordHasher, stored_hash: str, password: str) -> bool:
    """True when ``password`` matches ``stored_hash``; never raises on a bad password or hash."""
    try:
        return bool(hasher.verify(stored_hash, password))
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def check_username(name: str) -> str:
    """Return the username if it is 1-64 characters of letters, digits, ``.``, ``_`` or ``-``."""
    if not 1 <= len(name) <= 64 or not set(name) <= _USERNAME_CHARS:
        msg = f"invalid username {name!r}: use 1-64 letters, digits, '.', '_' or '-'"
        raise PasswordPolicyError(msg)
    return name


def csrf_token(session: dict[str, Any]) -> str:
    """The session's CSRF token, created on first use."""
    token = session.get("csrf")
    if not token:
        token = secrets.token_urlsafe(32)
        session["csrf"] = token
    return str(token)


def csrf_matches(session: dict[str, Any], presented: str | None) -> bool:
    """Constant-time comparison of a presented token with the session's."""
    expected = session.get("csrf")
    return bool(expected and presented and hmac.compare_digest(str(expected), str(presented)))


def log_in(session: dict[str, Any], user_id: int, epoch: int) -> None:
    """Start a fresh authenticated session (new CSRF token: no fixation of a pre-login session)."""
    session.clear()
    session.update(uid=user_id, epoch=epoch, csrf=secrets.token_urlsafe(32))


def basic_credentials(header: str | None) -> tuple[str, str] | None:
    """(username, password) from an ``Authorization: Basic ...`` header, else None."""
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    username, sep, password = decoded.partition(":")
    return (username, password) if sep else None

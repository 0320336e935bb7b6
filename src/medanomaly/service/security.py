"""Passwords (Argon2id), session log-in state and CSRF tokens.

Sessions are Starlette's signed, HttpOnly, SameSite=Lax cookies holding only the user id, the user's session epoch
(bumped at log-out and password change, which ends every session of that user), the CSRF token, when the session
started and when it was last used (for the absolute and the idle timeout, checked in :mod:`.deps`). Requests that
change data and carry the session cookie must echo the CSRF token, in the ``X-CSRF-Token`` header (JSON API) or a
``csrf_token`` form field (HTML forms): the synchronizer-token pattern of the OWASP CSRF cheat sheet.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
import time
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
MIN_PASSWORD_LENGTH = 10
# Common choices (the top of public breached-password frequency lists, plus the words of this field and product).
COMMON_PASSWORDS = frozenset(
    """password passw0rd p@ssword p@ssw0rd passwort motdepasse contraseña wachtwoord 123456 1234567 12345678
    123456789 1234567890 0123456789 987654321 qwerty qwertz azerty qwertyuiop asdfghjkl zxcvbnm 1q2w3e4r 1qaz2wsx
    abc123 abcdef abcdefgh abcdefghij letmein welcome welcome1 iloveyou admin administrator root changeme default
    secret trustno1 monkey dragon football baseball sunshine princess master superman batman starwars whatever
    shadow michael jennifer hello freedom computer internet login guest test testing hospital hopital krankenhaus
    doctor radiology radiologist radiologie xray medical medanomaly workstation anomaly summer winter spring autumn
    january december""".split()
)
_USERNAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


class PasswordPolicyError(ValueError):
    """A new password or username breaks the rules."""


def password_hasher(time_cost: int = 3, memory_kib: int = 65536) -> PasswordHasher:
    """Argon2id hasher with the given costs (defaults: RFC 9106's second recommended option, 64 MiB)."""
    return PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=1)


def check_password_policy(password: str, username: str | None = None) -> str:
    """Return ``password`` if it has 10+ characters, is not a common password and does not contain the user name.

    The list check follows NIST SP 800-63B 5.1.1.2 (compare new passwords with commonly used ones); a trailing run of
    digits or symbols does not make a common password acceptable ("Password123!").
    """
    if len(password) < MIN_PASSWORD_LENGTH:
        msg = f"password too short: use at least {MIN_PASSWORD_LENGTH} characters"
        raise PasswordPolicyError(msg)
    lower = password.lower()
    stem = lower.rstrip("0123456789!?.#@$%*_-+ ")
    if lower in COMMON_PASSWORDS or stem in COMMON_PASSWORDS or len(set(lower)) < 4:
        raise PasswordPolicyError("this password is too common or too easy to guess: choose another")
    if username and username.lower() in lower:
        raise PasswordPolicyError("the password must not contain the user name")
    return password


def hash_password(hasher: PasswordHasher, password: str, username: str | None = None) -> str:
    """Hash a new password after :func:`check_password_policy`."""
    return hasher.hash(check_password_policy(password, username))


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
    now = int(time.time())
    session.clear()
    session.update(uid=user_id, epoch=epoch, csrf=secrets.token_urlsafe(32), since=now, seen=now)


def session_expiry(session: dict[str, Any], max_seconds: float, idle_seconds: float, now: float) -> str | None:
    """Why the session has ended (``"expired"`` past its absolute lifetime, ``"idle"`` unused too long), else None."""
    if now - float(session.get("since", 0)) > max_seconds:
        return "expired"
    if now - float(session.get("seen", 0)) > idle_seconds:
        return "idle"
    return None


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

"""Dependencies shared by the routers: settings, database session, the logged-in user, roles, CSRF, templates."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.templating import Jinja2Templates
from sqlalchemy.orm import Session

from medanomaly import __version__
from medanomaly.service.db import User
from medanomaly.service.jobs import JobRunner
from medanomaly.service.login_guard import Attempt, check_login, client_address
from medanomaly.service.model_store import ModelStore
from medanomaly.service.security import (
    CSRF_FIELD,
    CSRF_HEADER,
    basic_credentials,
    csrf_matches,
    csrf_token,
    session_expiry,
)
from medanomaly.service.settings import Settings

UI_DIR = Path(__file__).resolve().parents[1] / "ui"
_UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}
_CSRF_EXEMPT_JSON = {"/api/auth/login"}
BACKGROUND_HEADER = "X-Background"
_ENDED = {
    "idle": "Your session ended after {settings.session_idle_minutes:.0f} minutes without activity: log in again.",
    "expired": "Your session ended after {settings.session_hours:g} hours: log in again.",
}


class AuthRequired(Exception):
    """No logged-in user: pages redirect to the login form, the API answers 401."""


class Forbidden(Exception):
    """The user's role does not allow this action (403)."""


class CsrfError(Exception):
    """A request changing data came with the session cookie but without the right CSRF token (403)."""


def get_settings(request: Request) -> Settings:
    """The service settings."""
    return request.app.state.settings


def get_db(request: Request) -> Iterator[Session]:
    """A database session for one request."""
    with request.app.state.session_factory() as db:
        yield db


def get_store(request: Request) -> ModelStore:
    """The served models."""
    return request.app.state.store


def get_jobs(request: Request) -> JobRunner:
    """The scoring job runner."""
    return request.app.state.jobs


SettingsDep = Annotated[Settings, Depends(get_settings)]
DbDep = Annotated[Session, Depends(get_db)]
StoreDep = Annotated[ModelStore, Depends(get_store)]
JobsDep = Annotated[JobRunner, Depends(get_jobs)]


def optional_user(request: Request, db: DbDep) -> User | None:
    """The user of the session cookie, or of HTTP Basic credentials on ``/api`` calls; None when anonymous.

    A session ends past its absolute lifetime or when unused for ``session_idle_minutes``; requests sent with the
    ``X-Background`` header (the pages' polling) do not count as use. Basic credentials go through
    :func:`check_login` (throttled, audited when wrong).
    """
    session = request.session
    if session.get("uid") is not None:
        user = _session_user(request, db)
        if user is not None:
            return _identified(request, user, "session")
    credentials = basic_credentials(request.headers.get("authorization"))
    if credentials and request.url.path.startswith("/api/"):
        attempt = Attempt(credentials[0], client_address(request), "basic")
        user = check_login(request, db, attempt, credentials[1])
        if user is not None:
            return _identified(request, user, "basic")
    return None


def _session_user(request: Request, db: Session) -> User | None:
    """The session's user if the session is still valid; else the session is cleared (with a note why)."""
    session, settings = request.session, request.app.state.settings
    now = time.time()
    ended = session_expiry(session, settings.session_hours * 3600, settings.session_idle_minutes * 60, now)
    user = db.get(User, session["uid"])
    if ended is None and user is not None and user.active and user.session_epoch == session.get("epoch"):
        if BACKGROUND_HEADER not in request.headers:
            session["seen"] = int(now)
        return user
    session.clear()
    if ended is not None:
        flash(request, _ENDED[ended].format(settings=settings))
    return None


def _identified(request: Request, user: User, how: str) -> User:
    request.state.auth = how
    request.state.username = user.username
    return user


def current_user(user: Annotated[User | None, Depends(optional_user)]) -> User:
    """The logged-in user (AuthRequired otherwise)."""
    if user is None:
        raise AuthRequired
    return user


def admin_user(user: Annotated[User, Depends(current_user)]) -> User:
    """The logged-in user if an admin (Forbidden otherwise)."""
    if not user.is_admin:
        raise Forbidden("this needs the admin role")
    return user


UserDep = Annotated[User, Depends(current_user)]
AdminDep = Annotated[User, Depends(admin_user)]
OptionalUserDep = Annotated[User | None, Depends(optional_user)]


async def csrf_protect(request: Request) -> None:
    """Reject unsafe requests made with the session cookie unless they echo the session's CSRF token.

    Requests authenticated by an ``Authorization`` header alone (scripts) carry no ambient credential and are
    exempt; so is the JSON log-in call, which a cross-site form cannot send without a CORS preflight.
    """
    if request.method not in _UNSAFE:
        return
    has_cookie = request.app.state.session_cookie in request.cookies
    if not has_cookie and request.headers.get("authorization"):
        return
    content_type = request.headers.get("content-type", "")
    if request.url.path in _CSRF_EXEMPT_JSON and content_type.startswith("application/json"):
        return
    presented = request.headers.get(CSRF_HEADER)
    if presented is None and content_type.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        form = await request.form()
        value = form.get(CSRF_FIELD)
        presented = value if isinstance(value, str) else None
    if not csrf_matches(request.session, presented):
        raise CsrfError


def templates(request: Request) -> Jinja2Templates:
    """The UI's Jinja2 templates."""
    return request.app.state.templates


def render(request: Request, name: str, status_code: int = 200, **context: Any) -> Any:
    """Render a UI template with the common context (user, CSRF token, flash message, version)."""
    context.setdefault("user", getattr(request.state, "user", None))
    context.update(
        csrf_token=csrf_token(request.session),
        flash=request.session.pop("flash", None),
        version=__version__,
        store_errors=_visible_store_errors(request.app.state.store.errors, context["user"]),
    )
    return request.app.state.templates.TemplateResponse(request, name, context, status_code=status_code)


def _visible_store_errors(errors: dict[str, str], user: Any) -> dict[str, str]:
    """Model problems for the banner: the full reason (it may name server folders) for admins only."""
    if user is not None and getattr(user, "is_admin", False):
        return dict(errors)
    return {name: "ask an administrator (they see the reason here; it is also in the server log)" for name in errors}


def flash(request: Request, message: str, kind: str = "info") -> None:
    """Show a one-line message on the next page."""
    request.session["flash"] = {"message": message, "kind": kind}

"""Log-in and log-out (form and JSON), the current user and their personal display settings."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import RedirectResponse

from medanomaly.service import audit
from medanomaly.service.db import User, utcnow
from medanomaly.service.deps import DbDep, OptionalUserDep, UserDep, flash, render
from medanomaly.service.login_guard import Attempt, LoginRefused, check_login, client_address
from medanomaly.service.schemas import DisplaySettings, LoginIn, LoginOut, UserOut
from medanomaly.service.security import csrf_token, log_in

router = APIRouter(tags=["auth"])
BAD_LOGIN = "Unknown user or wrong password."


class LoginFailed(Exception):
    """Unknown user, wrong password or disabled account: one answer for all, so none can be told apart."""


def authenticate(request: Request, db: DbDep, username: str, password: str, via: str) -> User:
    """The active user with these credentials, now logged in this session (see :func:`check_login`).

    Raises:
        LoginFailed: Unknown user, wrong password or disabled account (401, one message for all three).
        LoginRefused: Throttled or locked (429) or too many log-ins at once (503).
    """
    address = client_address(request)
    user = check_login(request, db, Attempt(username, address, via), password)
    if user is None:
        raise LoginFailed
    user.last_login_at = utcnow()
    audit.record(db, user, "user.login", f"user:{user.id}", address=address, via=via)
    db.commit()
    log_in(request.session, user.id, user.session_epoch)
    return user


def _safe_next(target: str | None) -> str:
    return target if target and target.startswith("/") and not target.startswith("//") else "/"


@router.get("/login", include_in_schema=False)
def login_page(request: Request, user: OptionalUserDep, next: str | None = None):
    """The log-in form."""
    if user is not None:
        return RedirectResponse(_safe_next(next), status_code=303)
    return render(request, "login.html", next=_safe_next(next), user=None)


@router.post("/login", include_in_schema=False)
def login_form(
    request: Request,
    db: DbDep,
    username: Annotated[str, Form()],
    password: Annotated[str, Form()],
    next: Annotated[str, Form()] = "/",
):
    """Check the form's credentials; back to the form with a message when they are wrong or refused."""
    try:
        authenticate(request, db, username.strip(), password, "form")
    except (LoginFailed, LoginRefused) as error:
        status, reason = (error.status_code, error.reason) if isinstance(error, LoginRefused) else (401, BAD_LOGIN)
        page = render(request, "login.html", status_code=status, next=_safe_next(next), user=None, error=reason)
        if isinstance(error, LoginRefused):
            page.headers["Retry-After"] = str(error.retry_after)
        return page
    return RedirectResponse(_safe_next(next), status_code=303)


@router.post("/logout", include_in_schema=False)
def logout_form(request: Request, db: DbDep, user: OptionalUserDep) -> RedirectResponse:
    """End every session of the user (the session epoch changes) and go to the log-in form."""
    if user is not None:
        user.session_epoch += 1
        audit.record(db, user, "user.logout", f"user:{user.id}")
        db.commit()
    request.session.clear()
    flash(request, "You have been logged out.")
    return RedirectResponse("/login", status_code=303)


@router.post("/api/auth/login")
def login_api(request: Request, db: DbDep, body: LoginIn) -> LoginOut:
    """Log in with JSON; sets the session cookie and returns the CSRF token for later calls.

    401 for an unknown user, a wrong password or a disabled account alike; 429 (with ``Retry-After``) while the user
    name or the client address is throttled or locked; 503 when too many log-ins are being checked at once.
    """
    try:
        user = authenticate(request, db, body.username, body.password, "api")
    except LoginFailed:
        raise HTTPException(401, BAD_LOGIN) from None
    return LoginOut(user=UserOut.model_validate(user), csrf_token=csrf_token(request.session))


@router.post("/api/auth/logout", status_code=204)
def logout_api(request: Request, db: DbDep, user: UserDep) -> None:
    """End every session of the user."""
    user.session_epoch += 1
    audit.record(db, user, "user.logout", f"user:{user.id}")
    db.commit()
    request.session.clear()


@router.get("/api/me")
def me(user: UserDep) -> UserOut:
    """The logged-in user."""
    return UserOut.model_validate(user)


@router.get("/api/me/settings")
def get_display_settings(user: UserDep) -> DisplaySettings:
    """The user's viewer defaults."""
    return DisplaySettings(**(user.display_settings or {}))


@router.put("/api/me/settings")
def put_display_settings(db: DbDep, user: UserDep, body: DisplaySettings) -> DisplaySettings:
    """Replace the user's viewer defaults."""
    user.display_settings = body.model_dump()
    audit.record(db, user, "settings.update", f"user:{user.id}")
    db.commit()
    return body

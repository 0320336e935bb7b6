"""Log-in and log-out (form and JSON), the current user and their personal display settings."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import RedirectResponse
from sqlalchemy import select

from medanomaly.service import audit
from medanomaly.service.db import User, utcnow
from medanomaly.service.deps import DbDep, OptionalUserDep, UserDep, flash, render
from medanomaly.service.schemas import DisplaySettings, LoginIn, LoginOut, UserOut
from medanomaly.service.security import csrf_token, log_in, verify_password

router = APIRouter(tags=["auth"])


def authenticate(request: Request, db: DbDep, username: str, password: str) -> User | None:
    """The active user with these credentials (audited either way), started in this session; else None."""
    user = db.scalar(select(User).where(User.username == username))
    if user is None or not user.active or not verify_password(request.app.state.hasher, user.password_hash, password):
        audit.record(db, None, "user.login_failed", None, actor="anonymous")
        db.commit()
        return None
    user.last_login_at = utcnow()
    audit.record(db, user, "user.login", f"user:{user.id}")
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
    """Check the form's credentials; back to the form with a message when they are wrong."""
    if authenticate(request, db, username.strip(), password) is None:
        return render(
            request,
            "login.html",
            status_code=401,
            next=_safe_next(next),
            user=None,
            error="Unknown user or wrong password.",
        )
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
    """Log in with JSON; sets the session cookie and returns the CSRF token for later calls."""
    user = authenticate(request, db, body.username, body.password)
    if user is None:
        raise HTTPException(401, "unknown user or wrong password")
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

"""A user's own password: change it (page and API) with the current one; other sessions of the user end."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import BaseModel, Field

from medanomaly.service import audit
from medanomaly.service.db import User, utcnow
from medanomaly.service.deps import DbDep, UserDep, flash
from medanomaly.service.login_guard import Attempt, LoginGuard, LoginRefused, check_login, client_address
from medanomaly.service.schemas import LoginOut, UserOut
from medanomaly.service.security import PasswordPolicyError, check_password_policy, csrf_token, log_in

router = APIRouter(tags=["auth"])


class PasswordChangeIn(BaseModel):
    """The current password and the new one."""

    current_password: str = Field(min_length=1, max_length=1024)
    new_password: str = Field(min_length=1, max_length=1024)


class WrongCurrentPassword(Exception):
    """The current password given with a change is wrong (counted like a failed log-in)."""


def change_password(request: Request, db: DbDep, user: User, current: str, new: str) -> None:
    """Check ``current`` (throttled and audited like a log-in), apply the policy to ``new`` and store it.

    Every session of the user ends (the session epoch changes) except this one, which is renewed.

    Raises:
        WrongCurrentPassword, LoginRefused, PasswordPolicyError.
    """
    attempt = Attempt(user.username, client_address(request), "password-change")
    if check_login(request, db, attempt, current) is None:
        raise WrongCurrentPassword
    check_password_policy(new, user.username)
    if new == current:
        raise PasswordPolicyError("the new password must differ from the current one")
    guard: LoginGuard = request.app.state.login_guard
    user.password_hash = guard.checker.hash(new)
    user.password_changed_at = utcnow()
    user.session_epoch += 1
    audit.record(db, user, "user.password_change", f"user:{user.id}", address=attempt.address)
    db.commit()
    log_in(request.session, user.id, user.session_epoch)


@router.post("/api/me/password")
def change_password_api(request: Request, db: DbDep, user: UserDep, body: PasswordChangeIn) -> LoginOut:
    """Change one's own password; returns the renewed session's CSRF token (other sessions end).

    403 if the current password is wrong, 422 if the new one breaks the policy, 429/503 as for log-ins.
    """
    try:
        change_password(request, db, user, body.current_password, body.new_password)
    except WrongCurrentPassword:
        raise HTTPException(403, "the current password is wrong") from None
    except PasswordPolicyError as error:
        raise HTTPException(422, str(error)) from None
    return LoginOut(user=UserOut.model_validate(user), csrf_token=csrf_token(request.session))


@router.post("/settings/password", include_in_schema=False)
def change_password_form(
    request: Request,
    db: DbDep,
    user: UserDep,
    current_password: Annotated[str, Form()],
    new_password: Annotated[str, Form()],
    new_password_again: Annotated[str, Form()],
) -> Response:
    """The settings page's password form; the outcome shows as a message on the settings page."""
    if new_password != new_password_again:
        flash(request, "Password not changed: the two new passwords differ.", "error")
        return RedirectResponse("/settings", status_code=303)
    try:
        change_password(request, db, user, current_password, new_password)
        flash(request, "Password changed. Your other sessions have ended.")
    except WrongCurrentPassword:
        flash(request, "Password not changed: the current password is wrong.", "error")
    except LoginRefused as error:
        flash(request, f"Password not changed: {error.reason}", "error")
    except PasswordPolicyError as error:
        flash(request, f"Password not changed: {error}.", "error")
    return RedirectResponse("/settings", status_code=303)

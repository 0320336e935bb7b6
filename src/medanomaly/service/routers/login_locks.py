"""Admin: user names and client addresses throttled or locked after failed log-ins, and unlocking them."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import BaseModel, Field
from sqlalchemy import select

from medanomaly.service import audit
from medanomaly.service.db import AuditEvent, User
from medanomaly.service.deps import AdminDep, DbDep, SettingsDep, flash, render
from medanomaly.service.login_guard import locks, unlock
from medanomaly.service.schemas import AuditOut

router = APIRouter(tags=["admin"])
Kind = Literal["user", "addr"]


class LoginLockOut(BaseModel):
    """Recent failed log-ins of a user name (``user``) or client address (``addr``), and its lock if any."""

    kind: Kind
    key: str
    failures: int
    last_failure_at: dt.datetime
    locked: bool
    locked_until: dt.datetime | None


class UnlockIn(BaseModel):
    """What to unlock."""

    kind: Kind
    key: str = Field(min_length=1, max_length=128)


def _unlock(db: DbDep, admin: User, kind: str, key: str) -> bool:
    done = unlock(db, kind, key)
    audit.record(db, admin, "login.unlock", f"{kind}:{key[:58]}", found=done)
    db.commit()
    return done


@router.get("/api/login-locks")
def list_login_locks(db: DbDep, settings: SettingsDep, admin: AdminDep) -> list[LoginLockOut]:
    """User names and addresses with recent failed log-ins, locked ones marked."""
    return [LoginLockOut.model_validate(row) for row in locks(db, settings)]


@router.post("/api/login-locks/unlock")
def unlock_api(db: DbDep, admin: AdminDep, body: UnlockIn) -> dict[str, bool]:
    """Lift a lock and forget the failures of a user name or address (``unlocked``: whether there was any)."""
    return {"unlocked": _unlock(db, admin, body.kind, body.key)}


@router.get("/admin/logins", include_in_schema=False)
def logins_page(request: Request, db: DbDep, settings: SettingsDep, admin: AdminDep) -> Response:
    """Locked and throttled names and addresses with unlock buttons, and the latest failed log-ins."""
    query = select(AuditEvent).where(AuditEvent.action == "user.login_failed").order_by(AuditEvent.id.desc())
    failures = [AuditOut.model_validate(row) for row in db.scalars(query.limit(100))]
    return render(request, "admin_logins.html", user=admin, locks=locks(db, settings), failures=failures)


@router.post("/admin/logins/unlock", include_in_schema=False)
def unlock_form(
    request: Request, db: DbDep, admin: AdminDep, kind: Annotated[Kind, Form()], key: Annotated[str, Form()]
) -> Response:
    """Unlock from the admin page."""
    what = "User name" if kind == "user" else "Address"
    if _unlock(db, admin, kind, key):
        flash(request, f"{what} {key} unlocked.")
    else:
        flash(request, f"{what} {key} had no failed log-ins left.", "error")
    return RedirectResponse("/admin/logins", status_code=303)

"""Admin pages: users, model versions with recalibration from feedback, the audit trail."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy import select

from medanomaly.service.db import AuditEvent, User
from medanomaly.service.deps import AdminDep, DbDep, StoreDep, flash, render
from medanomaly.service.feedback import feedback_cases, recalibrate
from medanomaly.service.routers.admin import create_user, update_user
from medanomaly.service.routers.pages import model_versions
from medanomaly.service.schemas import UserIn, UserPatch

router = APIRouter(prefix="/admin", include_in_schema=False)
CALIBRATIONS = {
    "youden": "Youden's J (balance sensitivity and specificity)",
    "f1": "Best F1",
    "sensitivity:0.95": "Sensitivity >= 95 %",
    "specificity:0.95": "Specificity >= 95 %",
    "percentile:95": "95th percentile of normal scores",
}


@router.get("")
def admin_page(request: Request, db: DbDep, store: StoreDep, admin: AdminDep) -> Response:
    """Users, models (versions, before/after metrics), recalibration, recent audit rows."""
    users = list(db.scalars(select(User).order_by(User.username)))
    events = list(db.scalars(select(AuditEvent).order_by(AuditEvent.id.desc()).limit(100)))
    feedback = {name: len([c for c in feedback_cases(db, name) if c.score is not None]) for name in store.models}
    return render(
        request,
        "admin.html",
        user=admin,
        users=users,
        events=events,
        versions=model_versions(db),
        models=store.models,
        feedback=feedback,
        calibrations=CALIBRATIONS,
        errors=store.errors,
        training={name: store.training(name) for name in store.models},
    )


def _message(error: Exception) -> str:
    if isinstance(error, ValidationError):
        first = error.errors()[0]
        return f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
    return str(error.detail) if isinstance(error, HTTPException) else str(error)


@router.post("/users")
def add_user_form(
    request: Request,
    db: DbDep,
    admin: AdminDep,
    username: Annotated[str, Form()],
    password: Annotated[str, Form()],
    role: Annotated[str, Form()] = "radiologist",
) -> Response:
    """Create a user from the admin form."""
    try:
        user = create_user(request, db, admin, UserIn(username=username.strip(), password=password, role=role))
        flash(request, f"User {user.username} created.")
    except (ValidationError, HTTPException) as error:
        flash(request, f"User not created: {_message(error)}", "error")
    return RedirectResponse("/admin", status_code=303)


@router.post("/users/{user_id}")
def update_user_form(
    request: Request,
    db: DbDep,
    admin: AdminDep,
    user_id: int,
    role: Annotated[str | None, Form()] = None,
    active: Annotated[str | None, Form()] = None,
    password: Annotated[str | None, Form()] = None,
) -> Response:
    """Change a user's role, active flag or password from the admin form."""
    user = db.get(User, user_id)
    if user is None:
        raise HTTPException(404, f"no user {user_id}")
    try:
        patch = UserPatch(
            role=role or None, active=None if active is None else active == "true", password=password or None
        )
        update_user(request, db, admin, user, patch)
        flash(request, f"User {user.username} updated.")
    except (ValidationError, HTTPException) as error:
        flash(request, f"User not updated: {_message(error)}", "error")
    return RedirectResponse("/admin", status_code=303)


@router.post("/models/{name}/recalibrate")
def recalibrate_form(
    request: Request,
    db: DbDep,
    store: StoreDep,
    admin: AdminDep,
    name: str,
    method: Annotated[str, Form()] = "youden",
) -> Response:
    """Recalibrate a model's threshold on the feedback set (new version) from the admin page."""
    if name not in store.models:
        raise HTTPException(404, f"no model named {name!r} is served")
    try:
        row = recalibrate(db, store, name, method, admin)
        after = row.recalibration["after"]
        flash(
            request,
            f"{row.label} saved: threshold {row.threshold:.4g}, sensitivity "
            f"{_pct(after['sensitivity'])}, specificity {_pct(after['specificity'])} on the feedback set.",
        )
    except ValueError as error:
        flash(request, f"Recalibration not done: {error}", "error")
    return RedirectResponse("/admin", status_code=303)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.0f} %"

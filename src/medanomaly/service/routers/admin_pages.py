"""Admin pages: users, model versions with recalibration from feedback, the audit trail."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy import select

from medanomaly.service.db import AuditEvent, User
from medanomaly.service.deps import AdminDep, DbDep, SettingsDep, StoreDep, flash, render
from medanomaly.service.feedback import feedback_cases
from medanomaly.service.routers.admin import change_version, create_user, recalibrate_served, update_user
from medanomaly.service.routers.pages import model_versions
from medanomaly.service.schemas import UserIn, UserPatch
from medanomaly.service.versions import sensitivity_drop

router = APIRouter(prefix="/admin", include_in_schema=False)
CALIBRATIONS = {
    "youden": "Youden's J (balance sensitivity and specificity)",
    "f1": "Best F1",
    "sensitivity:0.95": "Sensitivity >= 95 %",
    "specificity:0.95": "Specificity >= 95 %",
    "percentile:95": "95th percentile of normal scores",
    "keep": "Keep the threshold (add the triage rule-out point only)",
}


@router.get("")
def admin_page(request: Request, db: DbDep, store: StoreDep, settings: SettingsDep, admin: AdminDep) -> Response:
    """Users, models (versions, before/after metrics), recalibration, recent audit rows."""
    users = list(db.scalars(select(User).order_by(User.username)))
    events = list(db.scalars(select(AuditEvent).order_by(AuditEvent.id.desc()).limit(100)))
    feedback = {name: _class_counts(db, name) for name in store.models}
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
        min_per_class=settings.recalibration_min_per_class,
        triage_sensitivity=settings.triage_sensitivity,
        sensitivity_drop=sensitivity_drop,
    )


def _class_counts(db: DbDep, name: str) -> dict[str, int]:
    """Labelled studies of model ``name`` with a score: ``{"normal": n, "abnormal": m}``."""
    cases = [case for case in feedback_cases(db, name) if case.score is not None]
    n_abnormal = sum(case.abnormal for case in cases)
    return {"normal": len(cases) - n_abnormal, "abnormal": n_abnormal}


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
    settings: SettingsDep,
    admin: AdminDep,
    name: str,
    method: Annotated[str, Form()] = "youden",
) -> Response:
    """Propose a recalibrated version (inactive) from the admin page; its figures are shown before activation."""
    try:
        row = recalibrate_served(db, store, settings, admin, name, method)
        after = row.recalibration["after"]
        flash(
            request,
            f"{row.label} proposed (not active): threshold {row.threshold:.4g}, sensitivity "
            f"{_pct(after['sensitivity'])}, specificity {_pct(after['specificity'])} on held-out labelled studies. "
            "Review it below, then activate or discard it.",
        )
    except HTTPException as error:
        flash(request, f"Recalibration not done: {error.detail}", "error")
    return RedirectResponse("/admin#model-versions", status_code=303)


@router.post("/models/{name}/versions/{version}/{action}")
def version_form(
    request: Request,
    db: DbDep,
    admin: AdminDep,
    name: str,
    version: int,
    action: Literal["activate", "discard"],
    accept_drop: Annotated[str | None, Form()] = None,
) -> Response:
    """Activate (with the sensitivity-drop confirmation when needed) or discard a version from the admin page."""
    try:
        change_version(db, admin, name, version, accept_drop == "on" if action == "activate" else None)
        flash(request, f"{name} v{version} {'is now active' if action == 'activate' else 'discarded'}.")
    except HTTPException as error:
        flash(request, f"{name} v{version} not {action}d: {error.detail}", "error")
    return RedirectResponse("/admin#model-versions", status_code=303)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.0f} %"

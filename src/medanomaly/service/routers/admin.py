"""Admin JSON API: users, model versions (recalibration from feedback, activation, rollback), the audit trail."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request
from sqlalchemy import select

from medanomaly.service import audit
from medanomaly.service.db import AuditEvent, ModelVersion, User, utcnow
from medanomaly.service.deps import AdminDep, DbDep, SettingsDep, StoreDep, UserDep
from medanomaly.service.feedback import recalibrate
from medanomaly.service.schemas import (
    ActivateIn,
    AuditOut,
    ModelVersionOut,
    RecalibrateIn,
    UserIn,
    UserOut,
    UserPatch,
)
from medanomaly.service.security import PasswordPolicyError, check_username, hash_password
from medanomaly.service.settings import Settings
from medanomaly.service.versions import VersionConflict, activate_version, discard_version

router = APIRouter(prefix="/api", tags=["admin"])


def create_user(request: Request, db: DbDep, actor: User | None, body: UserIn) -> User:
    """Insert a user (409 if the name is taken, 422 on a bad name or password)."""
    try:
        check_username(body.username)
        password_hash = hash_password(request.app.state.hasher, body.password, body.username)
    except PasswordPolicyError as error:
        raise HTTPException(422, str(error)) from None
    if db.scalar(select(User).where(User.username == body.username)) is not None:
        raise HTTPException(409, f"user {body.username!r} exists already")
    user = User(username=body.username, password_hash=password_hash, role=body.role)
    db.add(user)
    db.flush()
    audit.record(db, actor, "user.create", f"user:{user.id}", role=body.role)
    db.commit()
    return user


def update_user(request: Request, db: DbDep, actor: User, user: User, body: UserPatch) -> User:
    """Change role, active flag or password; a password change or deactivation ends the user's sessions."""
    changed = body.model_dump(exclude_none=True)
    if user.id == actor.id and (body.active is False or body.role == "radiologist"):
        raise HTTPException(409, "you cannot remove your own admin role or deactivate yourself")
    if body.password is not None:
        try:
            user.password_hash = hash_password(request.app.state.hasher, body.password, user.username)
            user.password_changed_at = utcnow()
        except PasswordPolicyError as error:
            raise HTTPException(422, str(error)) from None
        changed["password"] = "changed"
    if body.role is not None:
        user.role = body.role
    if body.active is not None:
        user.active = body.active
    if body.password is not None or body.active is False:
        user.session_epoch += 1
    audit.record(db, actor, "user.update", f"user:{user.id}", **changed)
    db.commit()
    return user


@router.get("/users")
def list_users(db: DbDep, admin: AdminDep) -> list[UserOut]:
    """Every user."""
    return [UserOut.model_validate(u) for u in db.scalars(select(User).order_by(User.username))]


@router.post("/users", status_code=201)
def add_user(request: Request, db: DbDep, admin: AdminDep, body: UserIn) -> UserOut:
    """Create a user."""
    return UserOut.model_validate(create_user(request, db, admin, body))


@router.patch("/users/{user_id}")
def patch_user(request: Request, db: DbDep, admin: AdminDep, user_id: int, body: UserPatch) -> UserOut:
    """Change a user's role, active flag or password."""
    user = db.get(User, user_id)
    if user is None:
        raise HTTPException(404, f"no user {user_id}")
    return UserOut.model_validate(update_user(request, db, admin, user, body))


@router.get("/models")
def list_models(db: DbDep, user: UserDep) -> list[ModelVersionOut]:
    """Every registered model version (with before/after metrics of recalibrations)."""
    rows = db.scalars(select(ModelVersion).order_by(ModelVersion.name, ModelVersion.version))
    return [ModelVersionOut.model_validate(row) for row in rows]


def recalibrate_served(db: DbDep, store: StoreDep, settings: Settings, admin: User, name: str, method: str):
    """Propose an inactive recalibrated version of a served model (404 unknown model, 422 refused)."""
    if name not in store.models:
        raise HTTPException(404, f"no model named {name!r} is served")
    try:
        return recalibrate(db, store, name, method, admin, min_per_class=settings.recalibration_min_per_class,
                           folds=settings.recalibration_folds, triage_sensitivity=settings.triage_sensitivity)
    except ValueError as error:
        raise HTTPException(422, str(error)) from None


def change_version(db: DbDep, admin: User, name: str, version: int, accept_drop: bool | None) -> ModelVersion | None:
    """Activate (``accept_drop`` given) or discard (None) a version; 404 unknown, 409 refused."""
    try:
        if accept_drop is None:
            discard_version(db, name, version, user=admin)
            return None
        return activate_version(db, name, version, user=admin, accept_drop=accept_drop)
    except KeyError as error:
        raise HTTPException(404, error.args[0]) from None
    except VersionConflict as error:
        raise HTTPException(409, str(error)) from None


@router.post("/models/{name}/recalibrate", status_code=201)
def recalibrate_model(
    db: DbDep, store: StoreDep, settings: SettingsDep, admin: AdminDep, name: str, body: RecalibrateIn
) -> ModelVersionOut:
    """Propose a new, inactive version whose threshold is fitted on the radiologists' labels (before/after shown)."""
    return ModelVersionOut.model_validate(recalibrate_served(db, store, settings, admin, name, body.method))


@router.post("/models/{name}/versions/{version}/activate")
def activate_model_version(db: DbDep, admin: AdminDep, name: str, version: int, body: ActivateIn) -> ModelVersionOut:
    """Make a version the active one (also an earlier one: rollback); 409 when a sensitivity drop is not accepted."""
    return ModelVersionOut.model_validate(change_version(db, admin, name, version, body.accept_drop))


@router.delete("/models/{name}/versions/{version}", status_code=204)
def discard_model_version(db: DbDep, admin: AdminDep, name: str, version: int) -> None:
    """Delete a proposed version that was never active and scored nothing."""
    change_version(db, admin, name, version, None)


@router.get("/audit")
def list_audit(
    db: DbDep,
    admin: AdminDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    action: Annotated[str | None, Query(max_length=64)] = None,
) -> list[AuditOut]:
    """The newest audit rows."""
    query = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
    if action:
        query = query.where(AuditEvent.action == action)
    return [AuditOut.model_validate(row) for row in db.scalars(query)]

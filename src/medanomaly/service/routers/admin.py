"""Admin JSON API: users, model versions and recalibration from feedback, the audit trail."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request
from sqlalchemy import select

from medanomaly.service import audit
from medanomaly.service.db import AuditEvent, ModelVersion, User
from medanomaly.service.deps import AdminDep, DbDep, StoreDep, UserDep
from medanomaly.service.feedback import recalibrate
from medanomaly.service.schemas import AuditOut, ModelVersionOut, RecalibrateIn, UserIn, UserOut, UserPatch
from medanomaly.service.security import PasswordPolicyError, check_username, hash_password

router = APIRouter(prefix="/api", tags=["admin"])


def create_user(request: Request, db: DbDep, actor: User | None, body: UserIn) -> User:
    """Insert a user (409 if the name is taken, 422 on a bad name or password)."""
    try:
        check_username(body.username)
        password_hash = hash_password(request.app.state.hasher, body.password)
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
            user.password_hash = hash_password(request.app.state.hasher, body.password)
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


@router.post("/models/{name}/recalibrate", status_code=201)
def recalibrate_model(db: DbDep, store: StoreDep, admin: AdminDep, name: str, body: RecalibrateIn) -> ModelVersionOut:
    """Recompute the threshold on the radiologists' labels and save it as a new model version."""
    if name not in store.models:
        raise HTTPException(404, f"no model named {name!r} is served")
    try:
        row = recalibrate(db, store, name, body.method, admin)
    except ValueError as error:
        raise HTTPException(422, str(error)) from None
    return ModelVersionOut.model_validate(row)


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

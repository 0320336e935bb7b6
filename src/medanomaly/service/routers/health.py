"""``GET /api/health``: liveness, served models and queue length (no login needed, no patient data)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from sqlalchemy import func, select

from medanomaly import __version__
from medanomaly.service.db import Study
from medanomaly.service.deps import DbDep, StoreDep

router = APIRouter(tags=["health"])


@router.get("/api/health")
def health(db: DbDep, store: StoreDep) -> dict[str, Any]:
    """Service status: version, models (active version or the reason they are unusable), jobs by status."""
    models: dict[str, Any] = {}
    for name in store.models:
        active = store.active(db, name)
        models[name] = {"version": active.version if active else None, "error": store.errors.get(name)}
    counts = dict(db.execute(select(Study.status, func.count()).group_by(Study.status)).all())
    return {"status": "ok", "version": __version__, "models": models, "studies": counts}

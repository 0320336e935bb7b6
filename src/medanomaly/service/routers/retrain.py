"""Retraining from feedback: the admin JSON API (``/api/.../retrain``, ``/api/retraining``) and the admin page.

The work is done by :class:`medanomaly.service.retrain.RetrainRunner` (``app.state.retraining``); the version it
proposes is activated or discarded through the version endpoints of :mod:`.admin`.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from medanomaly.service.db import ModelVersion, User
from medanomaly.service.db.retrain import RetrainJob
from medanomaly.service.deps import AdminDep, DbDep, flash, render
from medanomaly.service.retrain import RetrainRunner
from medanomaly.training.retrain import RetrainOptions

router = APIRouter(tags=["admin"])
#: Threshold rules offered for a retrained version (None: the model's own).
CALIBRATIONS = {
    "": "The model's own rule",
    "youden": "Youden's J (uses confirmed abnormal studies)",
    "percentile:95": "95th percentile of normal scores",
}


def get_runner(request: Request) -> RetrainRunner:
    """The retraining runner of the app."""
    return request.app.state.retraining


RunnerDep = Annotated[RetrainRunner, Depends(get_runner)]


class RetrainIn(BaseModel):
    """Settings of a retraining started by an admin."""

    epochs: int = Field(5, ge=1, le=50, description="fine-tuning epochs of torch methods (others refit)")
    calibration: str | None = Field(None, description="threshold rule; None = the model's own")


class RetrainJobOut(BaseModel):
    """A retraining job: its state and progress, and the inactive version it proposed."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    model_name: str
    from_version: int
    status: str
    stage: str | None
    progress: float
    options: dict[str, Any]
    created_by: str
    created_at: dt.datetime
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    error: str | None = None
    new_version: int | None = None
    summary: dict[str, Any] | None = None


def start_retraining(db: Session, runner: RetrainRunner, admin: User, name: str, body: RetrainIn) -> RetrainJob:
    """Queue a retraining (404 unknown model, 422 refused: no active version, one running, too few normals)."""
    if name not in runner.store.models:
        raise HTTPException(404, f"no model named {name!r} is served")
    options = RetrainOptions(epochs=body.epochs, calibration=body.calibration or None)
    try:
        return runner.start(db, name, admin, options)
    except ValueError as error:
        raise HTTPException(422, str(error)) from None


def _jobs(db: Session, limit: int = 50) -> list[RetrainJob]:
    return list(db.scalars(select(RetrainJob).order_by(RetrainJob.id.desc()).limit(limit)))


def _version_states(db: Session, jobs: list[RetrainJob]) -> dict[int, str]:
    """``proposed``, ``active``, ``inactive`` or ``discarded``: what became of each finished job's version."""
    states = {}
    for job in jobs:
        if job.new_version is None:
            continue
        row = db.scalar(
            select(ModelVersion).where(ModelVersion.name == job.model_name, ModelVersion.version == job.new_version)
        )
        if row is None or (job.started_at is not None and row.created_at < job.started_at):
            states[job.id] = "discarded"  # gone, or its number taken again by a later version
        else:
            states[job.id] = "active" if row.active else "inactive" if row.activated_at else "proposed"
    return states


@router.post("/api/models/{name}/retrain", status_code=202)
def retrain_api(db: DbDep, runner: RunnerDep, admin: AdminDep, name: str, body: RetrainIn) -> RetrainJobOut:
    """Start retraining the model on its training data plus the feedback; poll ``/api/retraining/{id}``."""
    return RetrainJobOut.model_validate(start_retraining(db, runner, admin, name, body))


@router.get("/api/retraining")
def list_retraining(db: DbDep, admin: AdminDep) -> list[RetrainJobOut]:
    """The latest 50 retraining jobs, newest first."""
    return [RetrainJobOut.model_validate(job) for job in _jobs(db)]


@router.get("/api/retraining/{job_id}")
def get_retraining(db: DbDep, admin: AdminDep, job_id: int) -> RetrainJobOut:
    """One retraining job."""
    job = db.get(RetrainJob, job_id)
    if job is None:
        raise HTTPException(404, f"no retraining job {job_id}")
    return RetrainJobOut.model_validate(job)


@router.get("/admin/retraining", include_in_schema=False)
def retraining_page(request: Request, db: DbDep, runner: RunnerDep, admin: AdminDep) -> Response:
    """Start a retraining, follow its progress, review the proposed version."""
    feedback = {name: runner.counts(db, name) for name in runner.store.models}
    jobs = _jobs(db)
    return render(
        request,
        "retraining.html",
        user=admin,
        jobs=jobs,
        states=_version_states(db, jobs),
        models=runner.store.models,
        feedback=feedback,
        calibrations=CALIBRATIONS,
    )


@router.post("/admin/models/{name}/retrain", include_in_schema=False)
def retrain_form(
    request: Request,
    db: DbDep,
    runner: RunnerDep,
    admin: AdminDep,
    name: str,
    epochs: Annotated[int, Form(ge=1, le=50)] = 5,
    calibration: Annotated[str, Form()] = "",
) -> Response:
    """Start a retraining from the admin page."""
    try:
        job = start_retraining(db, runner, admin, name, RetrainIn(epochs=epochs, calibration=calibration or None))
        flash(request, f"Retraining #{job.id} of {name} v{job.from_version} started; its progress is shown below.")
    except HTTPException as error:
        flash(request, f"Retraining not started: {error.detail}", "error")
    return RedirectResponse("/admin/retraining", status_code=303)

"""Server-rendered pages: worklist (with upload), study view, printable report, personal settings."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy import select

from medanomaly.reporting import DECISION_SUPPORT, render_html
from medanomaly.service import audit
from medanomaly.service.db import ModelVersion
from medanomaly.service.deps import DbDep, JobsDep, SettingsDep, StoreDep, UserDep, flash, render
from medanomaly.service.imaging import COLORMAPS, load_arrays, window_levels
from medanomaly.service.model_store import training_of
from medanomaly.service.reports import build_report
from medanomaly.service.routers.reading import reading_context
from medanomaly.service.routers.studies import done_result, get_study
from medanomaly.service.schemas import DisplaySettings
from medanomaly.service.signoff import signoff_of
from medanomaly.service.storage import UploadRejected
from medanomaly.service.studies import DECISIONS, SORT_KEYS, create_study, decision_summary, worklist_studies
from medanomaly.service.triage import triage_context

router = APIRouter(include_in_schema=False)
_STATUSES = ("queued", "scoring", "done", "failed")


def _worklist_context(db: DbDep, store: StoreDep, params: dict[str, Any], max_wait: float) -> dict[str, Any]:
    status = params.get("status") if params.get("status") in _STATUSES else None
    decision = params.get("decision") if params.get("decision") in DECISIONS else None
    sort = params.get("sort") if params.get("sort") in SORT_KEYS else "created_at"
    order = "asc" if params.get("order") == "asc" else "desc"
    text = (params.get("q") or "").strip()[:100] or None
    filters = {"status": status, "decision": decision, "text": text, "sort": sort, "order": order}
    return {
        "studies": worklist_studies(db, filters, max_wait),
        "filters": {**filters, "q": text or ""},
        "models": list(store.models),
        "statuses": _STATUSES,
        "triage": triage_context(db, store, max_wait),
    }


@router.get("/")
def worklist(request: Request, db: DbDep, store: StoreDep, user: UserDep) -> Response:
    """The worklist: every study with status, decision, score and date; sortable, filterable."""
    wait = request.app.state.settings.triage_max_wait_minutes
    context = _worklist_context(db, store, dict(request.query_params), wait)
    return render(request, "worklist.html", user=user, **context)


@router.post("/upload")
def upload(
    request: Request,
    db: DbDep,
    settings: SettingsDep,
    store: StoreDep,
    jobs: JobsDep,
    user: UserDep,
    file: Annotated[UploadFile, File()],
    model: Annotated[str | None, Form()] = None,
) -> Response:
    """The worklist's upload form; a rejected file re-renders the worklist with the reason (4xx)."""
    try:
        study = create_study(db, settings, store, jobs, user, file.file, file.filename or "upload", model or None)
    except UploadRejected as error:
        context = _worklist_context(db, store, {}, settings.triage_max_wait_minutes)
        return render(
            request, "worklist.html", status_code=error.status_code, user=user, upload_error=error.reason, **context
        )
    flash(request, f"Study {study.id} uploaded and queued for scoring.")
    return RedirectResponse(f"/studies/{study.id}", status_code=303)


def _viewer_config(request: Request, study, result, settings, user) -> dict[str, Any]:
    prefs = DisplaySettings(**(user.display_settings or {})).model_dump()
    config: dict[str, Any] = {"study": study.id, "status": study.status, "prefs": prefs, "colormaps": COLORMAPS}
    if result is None:
        return config
    arrays = load_arrays(settings.data_dir / result.arrays_path)
    config.update(
        n_slices=arrays.n_slices,
        slice_scores=result.slice_scores,
        threshold=result.threshold,
        findings=result.findings,
        extras=result.extras,
        windows=arrays.window_choices(),
        levels=window_levels(arrays),
        units="HU" if arrays.header.get("is_hu") else "",
        has_map=arrays.maps is not None,
        start_slice=max(range(len(result.slice_scores)), key=result.slice_scores.__getitem__, default=0),
        aspect=[int(arrays.display.shape[2]), int(arrays.display.shape[1])],
        opinion_regions=study.opinion.regions if study.opinion else [],
    )
    if prefs["window"] not in config["windows"]:
        config["prefs"]["window"] = "auto"
    return config


@router.get("/studies/{study_id}")
def study_view(request: Request, db: DbDep, settings: SettingsDep, user: UserDep, study_id: int) -> Response:
    """The study: image with heat-map overlay, findings, decision vs threshold, opinion form, reports."""
    study = get_study(db, study_id)
    result = study.result
    config = _viewer_config(request, study, result, settings, user)
    reading = reading_context(db, settings, study)
    config["signed"] = reading["signoff"] is not None
    own_label = result and result.status == "scored" and result.label not in ("NORMAL", "ABNORMAL")
    labels = ["NORMAL", "ABNORMAL"] + ([result.label] if own_label else [])
    return render(
        request,
        "study.html",
        user=user,
        study=study,
        result=result,
        summary=decision_summary(result) if result else None,
        statement=DECISION_SUPPORT,
        viewer_config=json.dumps(config),
        labels=labels,
        prefs=config["prefs"],
        windows=config.get("windows", {}),
        colormaps=COLORMAPS,
        training=training_of(result.model_version.path) if result else None,
        **reading,
    )


@router.get("/studies/{study_id}/report")
def report_page(request: Request, db: DbDep, settings: SettingsDep, user: UserDep, study_id: int) -> HTMLResponse:
    """The report as a printable HTML page (print it from the browser, or download the PDF)."""
    study = get_study(db, study_id)
    report = build_report(settings, study, done_result(study), user, signoff_of(db, study.id))
    html = render_html(
        report,
        pdf_url=f"/api/studies/{study.id}/report.pdf",
        back_url=f"/studies/{study.id}",
        nonce=request.state.csp_nonce,
    )
    return HTMLResponse(html)


@router.get("/settings")
def settings_page(request: Request, user: UserDep) -> Response:
    """Personal display settings."""
    prefs = DisplaySettings(**(user.display_settings or {}))
    return render(
        request,
        "settings.html",
        user=user,
        prefs=prefs,
        colormaps=COLORMAPS,
        windows={
            "auto": "Auto",
            "full": "Full range",
            "contrast": "High contrast",
            "lung": "Lung (CT)",
            "mediastinum": "Mediastinum (CT)",
            "abdomen": "Abdomen (CT)",
            "brain": "Brain (CT)",
            "bone": "Bone (CT)",
            "dicom": "As stored in the file",
        },
    )


@router.post("/settings")
async def save_settings(request: Request, db: DbDep, user: UserDep) -> Response:
    """Save the settings form (checkboxes absent from the form mean 'hide')."""
    form = await request.form()
    values = {key: form.get(key) for key in ("overlay_opacity", "colormap", "window")}
    for panel in ("show_overlay", "show_findings", "show_extras", "show_slice_plot"):
        values[panel] = form.get(panel) == "on"
    try:
        prefs = DisplaySettings(**values)
    except ValidationError as error:
        flash(request, f"Settings not saved: {error.errors()[0]['msg']}", "error")
        return RedirectResponse("/settings", status_code=303)
    user.display_settings = prefs.model_dump()
    audit.record(db, user, "settings.update", f"user:{user.id}")
    db.commit()
    flash(request, "Display settings saved.")
    return RedirectResponse("/settings", status_code=303)


def model_versions(db: DbDep) -> list[ModelVersion]:
    """Every model version, newest first within each model."""
    return list(db.scalars(select(ModelVersion).order_by(ModelVersion.name, ModelVersion.version.desc())))

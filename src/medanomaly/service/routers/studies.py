"""JSON API of studies: upload, list, status, result, slice images, opinions, PDF report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, HTTPException, Query, Response, UploadFile
from fastapi.responses import FileResponse
from sqlalchemy.orm import selectinload

from medanomaly.io.png import encode_png
from medanomaly.service.db import Opinion, Result, Study
from medanomaly.service.deps import DbDep, JobsDep, SettingsDep, StoreDep, UserDep
from medanomaly.service.imaging import extra_image, load_arrays, map_rgba, window_slice
from medanomaly.service.reports import current_report, save_pdf
from medanomaly.service.schemas import FindingOut, OpinionIn, OpinionOut, ResultOut, ResultSummaryOut, StudyOut
from medanomaly.service.signoff import refuse_if_signed
from medanomaly.service.studies import (
    add_opinion,
    create_study,
    decision_summary,
    opinion_out,
    rescore,
    result_history,
    study_out,
    version_out,
    worklist_studies,
)

router = APIRouter(prefix="/api/studies", tags=["studies"])
_PNG_HEADERS = {"Cache-Control": "private, max-age=300"}


def get_study(db: DbDep, study_id: int) -> Study:
    """The study or 404."""
    study = db.get(
        Study,
        study_id,
        options=[
            selectinload(Study.results).selectinload(Result.model_version),
            selectinload(Study.opinions).selectinload(Opinion.user),
        ],
    )
    if study is None:
        raise HTTPException(404, f"no study {study_id}")
    return study


def done_result(study: Study) -> Result:
    """The study's latest result, or 409 saying where the job stands."""
    if study.result is None:
        where = f" (slice {study.progress_done}/{study.progress_total})" if study.status == "scoring" else ""
        reason = f"study {study.id} has no result: {study.status}{where}"
        raise HTTPException(409, reason + (f": {study.error}" if study.error else ""))
    return study.result


@router.post("", status_code=201)
def upload_study(
    db: DbDep,
    settings: SettingsDep,
    store: StoreDep,
    jobs: JobsDep,
    user: UserDep,
    file: Annotated[UploadFile, File(description="PNG/JPEG, a DICOM file, a zip of a DICOM series, or NIfTI")],
    model: Annotated[str | None, Form(description="served model name (default: the first)")] = None,
) -> StudyOut:
    """Upload a study; it is validated, stored and queued for scoring (poll ``GET /api/studies/{id}``)."""
    study = create_study(db, settings, store, jobs, user, file.file, file.filename or "upload", model or None)
    return study_out(get_study(db, study.id))


@router.get("")
def list_studies(
    db: DbDep,
    user: UserDep,
    settings: SettingsDep,
    status: Literal["queued", "scoring", "done", "failed"] | None = None,
    decision: Literal["normal", "abnormal", "out_of_domain", "none"] | None = None,
    q: Annotated[str | None, Query(max_length=100)] = None,
    sort: Literal["created_at", "status", "score", "decision", "modality", "id", "priority"] = "created_at",
    order: Literal["asc", "desc"] = "desc",
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[StudyOut]:
    """The worklist, filtered and sorted (``priority``: overdue unread first, then by triage band and score)."""
    wait = settings.triage_max_wait_minutes
    filters = {"status": status, "decision": decision, "text": q, "sort": sort, "order": order}
    return [study_out(study, wait) for study in worklist_studies(db, filters, wait, limit, offset)]


@router.get("/{study_id}")
def read_study_status(db: DbDep, user: UserDep, study_id: int) -> StudyOut:
    """A study and its job status (``progress_done``/``progress_total`` slices while scoring)."""
    return study_out(get_study(db, study_id))


@router.get("/{study_id}/result")
def read_result(db: DbDep, settings: SettingsDep, user: UserDep, study_id: int) -> ResultOut:
    """The latest model result: decision, score vs threshold, findings, model version, timings."""
    study = get_study(db, study_id)
    result = done_result(study)
    arrays = load_arrays(settings.data_dir / result.arrays_path)
    return ResultOut(
        study_id=study.id,
        decision=result.label,
        status=result.status,
        domain_reason=result.domain_reason,
        domain=result.domain or {},
        abnormal=result.abnormal,
        score=result.score,
        threshold=result.threshold,
        summary=decision_summary(result),
        slice_scores=result.slice_scores,
        findings=[FindingOut(**f) for f in result.findings],
        extras=result.extras,
        model=version_out(result.model_version),
        timings=result.timings,
        created_at=result.created_at,
        window_choices=arrays.window_choices(),
    )


@router.post("/{study_id}/rescore", status_code=202)
def rescore_study(db: DbDep, user: UserDep, jobs: JobsDep, study_id: int) -> StudyOut:
    """Queue the study again, to be scored by the active version of its model."""
    study = get_study(db, study_id)
    rescore(db, study, user, jobs)
    return study_out(study)


def _arrays_for(db: DbDep, settings: SettingsDep, study_id: int):
    study = get_study(db, study_id)
    return load_arrays(settings.data_dir / done_result(study).arrays_path)


def _png(render, *args) -> Response:
    try:
        return Response(encode_png(render(*args)), media_type="image/png", headers=_PNG_HEADERS)
    except IndexError as error:
        raise HTTPException(404, str(error)) from None
    except (KeyError, ValueError) as error:
        raise HTTPException(400, error.args[0] if error.args else str(error)) from None


@router.get("/{study_id}/slices/{index}/image.png", response_class=Response)
def slice_image(
    db: DbDep,
    settings: SettingsDep,
    user: UserDep,
    study_id: int,
    index: int,
    window: Annotated[str, Query(max_length=32)] = "auto",
) -> Response:
    """Slice ``index`` (0-based) under a window preset, as PNG."""
    return _png(window_slice, _arrays_for(db, settings, study_id), index, window)


@router.get("/{study_id}/slices/{index}/map.png", response_class=Response)
def slice_map(
    db: DbDep,
    settings: SettingsDep,
    user: UserDep,
    study_id: int,
    index: int,
    cmap: Annotated[str, Query(max_length=16)] = "jet",
) -> Response:
    """The anomaly heat map of slice ``index`` as RGBA PNG (transparent where unremarkable)."""
    arrays = _arrays_for(db, settings, study_id)
    if not 0 <= index < arrays.n_slices:
        raise HTTPException(404, f"slice {index} outside 0..{arrays.n_slices - 1}")
    return _png(map_rgba, arrays, index, cmap)


@router.get("/{study_id}/slices/{index}/{name}.png", response_class=Response)
def slice_extra(
    db: DbDep,
    settings: SettingsDep,
    user: UserDep,
    study_id: int,
    index: int,
    name: Literal["reconstruction", "translation"],
) -> Response:
    """The model's reconstruction or healthy translation of slice ``index``."""
    arrays = _arrays_for(db, settings, study_id)
    if not 0 <= index < arrays.n_slices:
        raise HTTPException(404, f"slice {index} outside 0..{arrays.n_slices - 1}")
    return _png(extra_image, arrays, name, index)


@router.get("/{study_id}/results")
def list_results(db: DbDep, user: UserDep, study_id: int) -> list[ResultSummaryOut]:
    """Every result of the study (rescoring keeps the earlier ones), newest first, with the opinions on each."""
    return result_history(get_study(db, study_id))


@router.get("/{study_id}/opinions")
def list_opinions(db: DbDep, user: UserDep, study_id: int) -> list[OpinionOut]:
    """Every opinion on the study, oldest first."""
    return [opinion_out(o) for o in get_study(db, study_id).opinions]


@router.post("/{study_id}/opinions", status_code=201)
def create_opinion(db: DbDep, user: UserDep, study_id: int, body: OpinionIn) -> OpinionOut:
    """Record the user's opinion (a label with who and when; the model's result is not changed); 409 once signed."""
    study = get_study(db, study_id)
    refuse_if_signed(db, study)
    opinion = add_opinion(db, study, user, body)
    db.refresh(opinion)
    return opinion_out(opinion)


@router.get("/{study_id}/report.pdf", response_class=FileResponse)
def report_pdf(db: DbDep, settings: SettingsDep, user: UserDep, study_id: int) -> FileResponse:
    """The PDF report of the latest result and opinion (made and saved with the study if not current)."""
    study = get_study(db, study_id)
    done_result(study)
    report = current_report(db, study) or save_pdf(db, settings, study, user)
    name = f"medanomaly-study-{study.id}-report.pdf"
    return FileResponse(Path(settings.data_dir / report.path), media_type="application/pdf", filename=name)

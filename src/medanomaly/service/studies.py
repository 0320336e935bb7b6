"""Study operations shared by the JSON API and the HTML pages: upload, list, describe, give an opinion."""

from __future__ import annotations

import logging
from typing import Any, BinaryIO

from sqlalchemy import Select, func, or_, select
from sqlalchemy.orm import Session, selectinload

from medanomaly.pipeline import OUT_OF_DOMAIN
from medanomaly.service import audit
from medanomaly.service.db import ModelVersion, Opinion, Result, Study, User, utcnow
from medanomaly.service.feedback import ABNORMAL_LABEL, NORMAL_LABEL, NORMAL_LABELS, clean_label
from medanomaly.service.jobs import JobRunner
from medanomaly.service.model_store import ModelStore
from medanomaly.service.schemas import ModelVersionOut, OpinionIn, OpinionOut, Region, ResultSummaryOut, StudyOut
from medanomaly.service.settings import Settings
from medanomaly.service.storage import StoredUpload, UploadRejected, discard, store_upload
from medanomaly.service.triage import by_priority, is_overdue, result_band

logger = logging.getLogger(__name__)
SORT_KEYS = ("created_at", "status", "score", "decision", "modality", "id", "priority")
DECISIONS = ("normal", "abnormal", "out_of_domain", "none")  # worklist filter; none = no result yet


def fmt_score(value: float | None) -> str:
    """Three significant digits (``0.0412``), ``-`` when missing."""
    return "-" if value is None else f"{value:.3g}"


def decision_summary(result: Result) -> str:
    """``ABNORMAL — score 0.0412, threshold 0.0305`` (the sentence the UI and report show); out of domain: why."""
    if result.status == OUT_OF_DOMAIN:
        return f"OUT OF DOMAIN — no decision: {result.domain_reason}"
    return f"{result.label} — score {fmt_score(result.score)}, threshold {fmt_score(result.threshold)}"


def create_study(
    db: Session, settings: Settings, store: ModelStore, jobs: JobRunner, user: User, stream: BinaryIO,
    filename: str, model_name: str | None = None,
) -> Study:
    """Validate and store an upload, insert the study as ``queued`` and wake the worker.

    Raises:
        UploadRejected: Bad input (4xx with the reason), or 409 when the model is unavailable; nothing is stored.
    """
    name = model_name or store.default_name
    if name is None or store.active(db, name) is None:
        served = ", ".join(store.models) or "none"
        problem = store.errors.get(name or "", "start the server with --model MODEL_DIR")
        raise UploadRejected(409, f"no usable model {name or ''!r} (served: {served}): {problem}".replace(" ''", ""))
    stored = store_upload(stream, filename, settings)
    try:
        study = _insert_study(db, stored, user, filename, name)
    except Exception:  # whatever broke the insert, the stored files must go too
        db.rollback()
        discard(settings, stored.uid)
        raise
    logger.info("study %d queued (%d slices)", study.id, study.n_slices)
    jobs.wake()
    return study


def _insert_study(db: Session, stored: StoredUpload, user: User, filename: str, model_name: str) -> Study:
    meta = stored.meta
    study = Study(
        uid=stored.uid, uploaded_by_id=user.id, original_name=filename[:255] or "upload",
        input_path=stored.input_path, size_bytes=stored.size_bytes, sha256=stored.sha256, kind=meta["kind"],
        modality=meta["modality"], patient_id=meta["patient_id"], study_instance_uid=meta["study_uid"],
        n_slices=meta["n_slices"], model_name=model_name, progress_total=meta["n_slices"],
    )
    db.add(study)
    db.flush()
    audit.record(db, user, "study.upload", f"study:{study.id}", size_bytes=stored.size_bytes, kind=meta["kind"],
                 n_slices=meta["n_slices"], model=model_name)
    db.commit()
    return study


def rescore(db: Session, study: Study, user: User, jobs: JobRunner) -> None:
    """Queue a study again (it will be scored by the active version of its model)."""
    if study.status in ("queued", "scoring"):
        raise UploadRejected(409, f"study {study.id} is already {study.status}")
    study.status, study.progress_done, study.error = "queued", 0, None
    study.queued_at = utcnow()
    audit.record(db, user, "study.rescore", f"study:{study.id}")
    db.commit()
    jobs.wake()


def query_studies(
    status: str | None = None,
    decision: str | None = None,
    text: str | None = None,
    sort: str = "created_at",
    order: str = "desc",
) -> Select:
    """The worklist query: filters by status, decision (``normal``/``abnormal``/``out_of_domain``/``none``) and text."""
    newest = select(func.max(Result.id).label("rid")).group_by(Result.study_id).subquery()
    latest = (
        select(Result.study_id, Result.score, Result.abnormal, Result.status)
        .join(newest, Result.id == newest.c.rid)
        .subquery()
    )
    query = (
        select(Study)
        .outerjoin(latest, latest.c.study_id == Study.id)
        .options(
            selectinload(Study.results).selectinload(Result.model_version),
            selectinload(Study.opinions),
            selectinload(Study.uploaded_by),
        )
    )
    if status:
        query = query.where(Study.status == status)
    if decision == "abnormal":
        query = query.where(latest.c.abnormal.is_(True))
    elif decision == "normal":
        query = query.where(latest.c.abnormal.is_(False))
    elif decision == "out_of_domain":
        query = query.where(latest.c.status == OUT_OF_DOMAIN)
    elif decision == "none":
        query = query.where(latest.c.study_id.is_(None))
    if text:
        pattern = f"%{text.strip()}%"
        query = query.where(
            or_(Study.original_name.ilike(pattern), Study.patient_id.ilike(pattern), Study.modality.ilike(pattern))
        )
    columns: dict[str, Any] = {
        "created_at": Study.created_at,
        "status": Study.status,
        "score": latest.c.score,
        "decision": latest.c.abnormal,
        "modality": Study.modality,
        "id": Study.id,
    }
    column = columns.get(sort, Study.created_at)
    ordered = column.desc().nulls_last() if order == "desc" else column.asc().nulls_last()
    return query.order_by(ordered, Study.id.desc())


def worklist_studies(
    db: Session, filters: dict[str, Any], max_wait_minutes: float, limit: int = 500, offset: int = 0
) -> list[Study]:
    """The worklist rows: ``filters`` as :func:`query_studies` takes them; ``sort="priority"`` sorts by triage."""
    query = query_studies(**filters)
    if filters.get("sort") != "priority":
        return list(db.scalars(query.limit(limit).offset(offset)).unique())
    ordered = by_priority(db.scalars(query).unique(), max_wait_minutes)
    return ordered[offset:offset + limit]


def study_out(study: Study, max_wait_minutes: float | None = None) -> StudyOut:
    """API view of a study (latest result and the opinion on it summarised; triage band, overdue)."""
    result, opinion = study.result, study.opinion
    return StudyOut(
        id=study.id,
        uid=study.uid,
        original_name=study.original_name,
        created_at=study.created_at,
        uploaded_by=study.uploaded_by.username if study.uploaded_by else None,
        kind=study.kind,
        modality=study.modality,
        patient_id=study.patient_id,
        n_slices=study.n_slices,
        model_name=study.model_name,
        status=study.status,
        progress_done=study.progress_done,
        progress_total=study.progress_total,
        error=study.error,
        decision=result.label if result else None,
        result_status=result.status if result else None,
        domain_reason=result.domain_reason if result else None,
        abnormal=result.abnormal if result else None,
        score=result.score if result else None,
        threshold=result.threshold if result else None,
        model_version=result.model_version.version if result else None,
        opinion=None if opinion is None else ("agrees" if opinion.agrees else "disagrees") + f": {opinion.label}",
        triage_band=result_band(result),
        overdue=max_wait_minutes is not None and is_overdue(study, max_wait_minutes),
    )


def result_history(study: Study) -> list[ResultSummaryOut]:
    """Every result of the study, newest first, each with the opinions given on it."""
    latest = study.result
    return [
        ResultSummaryOut(
            id=r.id, model=r.model_version.name, model_version=r.model_version.version, decision=r.label,
            status=r.status, score=r.score, threshold=r.threshold, triage_band=result_band(r), created_at=r.created_at,
            latest=r is latest, opinions=[opinion_out(o) for o in study.opinions if o.result_id == r.id],
        )
        for r in reversed(study.results)
    ]


def version_out(version: ModelVersion) -> ModelVersionOut:
    """API view of a model version."""
    return ModelVersionOut.model_validate(version)


def add_opinion(db: Session, study: Study, user: User, body: OpinionIn) -> Opinion:
    """Store an opinion on the study's latest result as a new row (the model's result is left untouched).

    The label is the radiologist's own if given; otherwise the model's decision when agreeing, or its opposite.

    Raises:
        UploadRejected: 409 when the study has no result yet.
    """
    result = study.result
    if result is None:
        raise UploadRejected(409, f"study {study.id} has no result yet ({study.status}); wait for scoring to finish")
    label = clean_label(body.label or "")
    if not label and result.abnormal is None:
        raise UploadRejected(422, f"study {study.id}: the model made no decision (out of its domain); give your label")
    if not label:
        abnormal = result.abnormal if body.agrees else not result.abnormal
        keep_model_label = body.agrees and result.abnormal
        label = (clean_label(result.label) if keep_model_label else ABNORMAL_LABEL) if abnormal else NORMAL_LABEL
    abnormal = label not in NORMAL_LABELS
    opinion = Opinion(
        study_id=study.id,
        result_id=result.id,
        user_id=user.id,
        agrees=body.agrees,
        label=label,
        abnormal=abnormal,
        note=body.note.strip(),
        regions=[r.model_dump() for r in body.regions],
    )
    db.add(opinion)
    db.flush()
    audit.record(
        db,
        user,
        "opinion.create",
        f"study:{study.id}",
        opinion=opinion.id,
        agrees=body.agrees,
        label=label,
        n_regions=len(body.regions),
    )
    db.commit()
    return opinion


def opinion_out(opinion: Opinion) -> OpinionOut:
    """API view of an opinion."""
    return OpinionOut(
        id=opinion.id,
        study_id=opinion.study_id,
        result_id=opinion.result_id,
        user=opinion.user.username,
        agrees=opinion.agrees,
        label=opinion.label,
        abnormal=opinion.abnormal,
        note=opinion.note,
        regions=[Region(**r) for r in opinion.regions],
        created_at=opinion.created_at,
    )

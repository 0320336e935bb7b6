"""Retraining a served model from the radiologists' feedback, as a background job of the workstation.

An admin starts a job (a ``retrain_jobs`` row, status ``queued``); a worker thread claims it (``running``), gathers
the model's feedback (studies with an opinion and a result of that model, :func:`~.feedback.feedback_cases`) and
runs :func:`medanomaly.training.retrain.retrain_model` (the path of ``medanomaly retrain``), writing its stage and
progress to the row. The new model is proposed as an **inactive** version through
:func:`medanomaly.service.versions.propose_version`, with its before/after figures measured on feedback studies held
out from the retraining; an admin then activates or discards it like any proposed version. One job runs at a time
(training takes both cores); a job cut by a restart is marked failed at start-up.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy import CursorResult, select, update
from sqlalchemy.orm import Session, sessionmaker

from medanomaly.errors import MedanomalyError
from medanomaly.service import audit
from medanomaly.service.db import User, utcnow
from medanomaly.service.db.retrain import RetrainJob
from medanomaly.service.feedback import feedback_cases
from medanomaly.service.model_store import ModelStore
from medanomaly.service.settings import Settings
from medanomaly.service.versions import find_version, propose_version
from medanomaly.training.retrain import (
    FeedbackStudy,
    RetrainOptions,
    RetrainReport,
    retrain_model,
    split_feedback,
)

logger = logging.getLogger(__name__)
_EXPECTED = (MedanomalyError, ValueError, OSError, RuntimeError, KeyError, MemoryError)
_OPEN = ("queued", "running")


class RetrainRunner:
    """Starts retraining jobs and runs them, in a background thread when ``settings.start_worker`` is set.

    Args:
        session_factory: Makes database sessions.
        store: The served models.
        settings: Data directory; ``start_worker`` False (tests) leaves jobs queued for :meth:`run_pending`.
    """

    def __init__(self, session_factory: sessionmaker[Session], store: ModelStore, settings: Settings) -> None:
        self.session_factory = session_factory
        self.store = store
        self.settings = settings
        self._thread: threading.Thread | None = None
        self._starting = threading.Lock()  # the "one open job" check and the insert happen as one step

    def recover(self) -> int:
        """Mark the jobs a previous run left open as failed; returns how many."""
        with self.session_factory() as db:
            jobs = list(db.scalars(select(RetrainJob).where(RetrainJob.status.in_(_OPEN))))
            for job in jobs:
                job.status, job.error, job.finished_at = "failed", "interrupted by a restart: start it again", utcnow()
                audit.record(db, None, "model.retrain.failed", f"retrain:{job.id}", reason="restart")
            db.commit()
        return len(jobs)

    def start(self, db: Session, name: str, user: User, options: RetrainOptions) -> RetrainJob:
        """Queue a retraining of ``name``'s active version (committed) and wake the worker.

        Raises:
            KeyError: No such model is served.
            ValueError: No usable active version, another retraining is open, or too few confirmed normals.
        """
        self.store.base_dir(name)
        current = self.store.active(db, name)
        if current is None:
            raise ValueError(f"model {name!r} has no usable active version ({self.store.errors.get(name, 'unknown')})")
        with self._starting:
            db.commit()  # end this session's read snapshot: see a job another request committed a moment ago
            running = db.scalar(select(RetrainJob).where(RetrainJob.status.in_(_OPEN)))
            if running is not None:
                raise ValueError(
                    f"retraining #{running.id} of {running.model_name!r} is still {running.status}: wait for it"
                )
            split_feedback(self._feedback(db, name), options)  # refuses too few confirmed normals now, not later
            job = RetrainJob(
                model_name=name,
                from_version=current.version,
                options=_options_record(options),
                created_by_id=user.id,
                created_by=user.username,
            )
            db.add(job)
            db.flush()
            audit.record(
                db,
                user,
                "model.retrain.start",
                f"retrain:{job.id}",
                name=name,
                from_version=current.version,
                epochs=options.epochs,
            )
            db.commit()
        if self.settings.start_worker:
            self._thread = threading.Thread(target=self.run_pending, name="medanomaly-retrain", daemon=True)
            self._thread.start()
        return job

    def wait(self, timeout: float | None = None) -> None:
        """Wait for the background job (if any) to end."""
        if self._thread is not None:
            self._thread.join(timeout)

    def run_pending(self) -> int:
        """Run the queued jobs in this thread, oldest first; returns how many ran."""
        count = 0
        while (job_id := self._claim()) is not None:
            self.process(job_id)
            count += 1
        return count

    def _claim(self) -> int | None:
        with self.session_factory() as db:
            job_id = db.scalar(select(RetrainJob.id).where(RetrainJob.status == "queued").order_by(RetrainJob.id))
            if job_id is None:
                return None
            claimed: CursorResult[Any] = db.execute(  # type: ignore[assignment]  # an UPDATE: a cursor result
                update(RetrainJob)
                .where(RetrainJob.id == job_id, RetrainJob.status == "queued")
                .values(status="running", started_at=utcnow(), stage="starting", progress=0.0)
            )
            db.commit()
            return job_id if claimed.rowcount == 1 else None

    def process(self, job_id: int) -> None:
        """Run one claimed job: retrain, propose the inactive version, or record why it failed."""
        try:
            self._retrain(job_id)
        except _EXPECTED as error:
            reason = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
            with self.session_factory() as db:
                job = _job(db, job_id)
                job.status, job.error, job.finished_at = "failed", str(reason), utcnow()
                audit.record(db, None, "model.retrain.failed", f"retrain:{job_id}", error=type(error).__name__)
                db.commit()
            logger.warning("retraining %d failed: %s", job_id, reason)

    def _retrain(self, job_id: int) -> None:
        with self.session_factory() as db:
            job = _job(db, job_id)
            current = self.store.active(db, job.model_name)
            if current is None:
                raise ValueError(f"model {job.model_name!r} has no usable active version any more")
            feedback, path, name = self._feedback(db, job.model_name), current.path, job.model_name
            options = RetrainOptions(**job.options, device=self.store.device)
        report = retrain_model(path, feedback, None, options, progress=self._progress(job_id), source="workstation")
        details = _details(report)
        with self.session_factory() as db:
            job = _job(db, job_id)
            current = find_version(db, name, job.from_version)
            user = db.get(User, job.created_by_id) if job.created_by_id is not None else None
            row = propose_version(
                db, self.store, current, report.model, details, user=user, actor=job.created_by, action="model.retrain"
            )
            job = _job(db, job_id)
            job.status, job.stage, job.progress, job.finished_at = "done", "done", 1.0, utcnow()
            job.new_version, job.summary = row.version, _summary(details, report.seconds)
            db.commit()
        logger.info("retraining %d of %s: v%d proposed (inactive)", job_id, name, row.version)

    def counts(self, db: Session, name: str) -> dict[str, int]:
        """``{"normal": n, "abnormal": m}``: the labelled studies of ``name`` a retraining would use."""
        feedback = self._feedback(db, name)
        n_abnormal = sum(case.abnormal for case in feedback)
        return {"normal": len(feedback) - n_abnormal, "abnormal": n_abnormal}

    def _feedback(self, db: Session, name: str) -> list[FeedbackStudy]:
        """The model's labelled studies whose input is still stored, as retraining cases (named by study id)."""
        cases = feedback_cases(db, name)
        found = [(case, self.settings.data_dir / case.input_path) for case in cases]
        return [FeedbackStudy(path, case.abnormal, f"study:{case.study_id}") for case, path in found if path.exists()]

    def _progress(self, job_id: int) -> Callable[[str, float], None]:
        def report(stage: str, fraction: float) -> None:
            with self.session_factory() as db:
                db.execute(
                    update(RetrainJob).where(RetrainJob.id == job_id).values(stage=stage[:64], progress=float(fraction))
                )
                db.commit()

        return report


def _job(db: Session, job_id: int) -> RetrainJob:
    """The job's row; KeyError when it is gone."""
    job = db.get(RetrainJob, job_id)
    if job is None:
        raise KeyError(f"no retraining job {job_id}")
    return job


def _options_record(options: RetrainOptions) -> dict[str, Any]:
    """What a job stores of its options (the device is the store's)."""
    return {
        "epochs": options.epochs,
        "held_out_fraction": options.held_out_fraction,
        "calibration": options.calibration,
        "max_minutes": options.max_minutes,
    }


def _details(report: RetrainReport) -> dict[str, Any]:
    """``ModelVersion.recalibration`` of a retrained version: before/after on the held-out feedback, and how."""
    record = report.record
    n_held = len(record["feedback"]["held_out"])
    return {
        "kind": "retrain",
        "spec": f"retrained: {record['mode']}",
        "n_cases": n_held,
        "before": report.before,
        "after": {**report.after, "validation": f"{n_held} feedback studies held out from the retraining"},
        "from_version": record["from_version"],
        "retraining": {key: record[key] for key in ("mode", "note", "feedback", "original_data")},
    }


def _summary(details: dict[str, Any], seconds: float) -> dict[str, Any]:
    """What the job list shows: before/after on the held-out studies, how the model was retrained, the time."""
    keep = ("sensitivity", "specificity", "auroc", "n_normal", "n_abnormal")
    feedback = details["retraining"]["feedback"]
    return {
        "before": {k: details["before"].get(k) for k in keep},
        "after": {k: details["after"].get(k) for k in keep},
        "mode": details["retraining"]["mode"],
        "note": details["retraining"]["note"],
        "n_feedback_normal": feedback["n_normal"],
        "n_feedback_abnormal": feedback["n_abnormal"],
        "abnormal_use": feedback["abnormal_use"],
        "seconds": round(seconds, 1),
    }

"""Background scoring: one worker thread takes queued studies from the database, oldest first.

The queue *is* the ``studies`` table (status ``queued`` -> ``scoring`` -> ``done``/``failed``), so queued work
survives a restart; a study left ``scoring`` by a crash is queued again at start-up. Reading goes through
:func:`medanomaly.io.read_study` and scoring through :func:`medanomaly.pipeline.score_study` (the path the CLI
uses). For progress, the detector call is split into chunks of slices and ``progress_done``/``progress_total``
(slice k of S) are written after each chunk; the map filter and the volume score still see the whole volume.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from medanomaly.errors import MedanomalyError
from medanomaly.io import read_study
from medanomaly.pipeline import score_study
from medanomaly.service import audit
from medanomaly.service.db import Study, utcnow
from medanomaly.service.model_store import ModelStore
from medanomaly.service.private_files import scrub_paths
from medanomaly.service.results import record_result
from medanomaly.service.settings import Settings

logger = logging.getLogger(__name__)
_PROGRESS_STEPS = 20  # progress updates per volume (batches of at most 64 slices)
_EXPECTED = (MedanomalyError, ValueError, OSError, RuntimeError, KeyError, MemoryError)


class JobRunner:
    """Scores queued studies in a background thread.

    Args:
        session_factory: Makes database sessions.
        store: The served models.
        settings: Data directory and polling interval.
    """

    def __init__(self, session_factory: sessionmaker[Session], store: ModelStore, settings: Settings) -> None:
        self.session_factory = session_factory
        self.store = store
        self.settings = settings
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def recover(self) -> int:
        """Queue again the studies a previous run left half-scored; returns how many."""
        with self.session_factory() as db:
            ids = list(db.scalars(select(Study.id).where(Study.status == "scoring")))
            for study_id in ids:
                db.execute(update(Study).where(Study.id == study_id).values(status="queued", progress_done=0))
                audit.record(db, None, "job.requeue", f"study:{study_id}", reason="interrupted by a restart")
            db.commit()
        return len(ids)

    def start(self) -> None:
        """Start the worker thread (daemon)."""
        self.recover()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="medanomaly-scoring", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Ask the worker to finish its current study and stop."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def wake(self) -> None:
        """Tell the worker that a study was queued."""
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                worked = self.run_pending(max_jobs=1)
            except Exception:  # the worker must outlive any single failure; details are in the study row
                logger.exception("scoring worker error")
                worked = 0
            if not worked:
                self._wake.wait(self.settings.poll_seconds)
                self._wake.clear()

    def run_pending(self, max_jobs: int | None = None) -> int:
        """Score queued studies in this thread until none is left (or ``max_jobs``); returns how many ran."""
        count = 0
        while max_jobs is None or count < max_jobs:
            study_id = self._claim()
            if study_id is None:
                break
            self.process(study_id)
            count += 1
        return count

    def _claim(self) -> int | None:
        with self.session_factory() as db:
            for study_id in db.scalars(select(Study.id).where(Study.status == "queued").order_by(Study.queued_at)):
                claimed = db.execute(
                    update(Study)
                    .where(Study.id == study_id, Study.status == "queued")
                    .values(status="scoring", started_at=utcnow(), progress_done=0, error=None)
                )
                db.commit()
                if claimed.rowcount == 1:
                    return study_id
        return None

    def _progress(self, study_id: int) -> Callable[[int, int], None]:
        def report(done: int, total: int) -> None:
            with self.session_factory() as db:
                db.execute(update(Study).where(Study.id == study_id).values(progress_done=done, progress_total=total))
                db.commit()

        return report

    def process(self, study_id: int) -> None:
        """Score one claimed study and store its result, or mark it failed with the reason."""
        started = time.perf_counter()
        with self.session_factory() as db:
            study = db.get(Study, study_id)
            try:
                self._score(db, study, started)
            except _EXPECTED as error:
                db.rollback()
                study = db.get(Study, study_id)
                reason = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
                study.status, study.error, study.finished_at = "failed", scrub_paths(str(reason)), utcnow()
                audit.record(db, None, "job.failed", f"study:{study_id}", error=type(error).__name__)
                db.commit()
                logger.warning("study %d failed: %s", study_id, type(error).__name__)

    def _score(self, db: Session, study: Study, started: float) -> None:
        version = self.store.active(db, study.model_name)
        if version is None:
            problem = self.store.errors.get(study.model_name, "it is not served or its directory is gone")
            raise MedanomalyError(f"model {study.model_name!r} unavailable: {problem}")
        model = self.store.load(version)
        raw = read_study(self.settings.data_dir / study.input_path, color=model.preprocessing.channels == 3)
        read_seconds = time.perf_counter() - started
        db.execute(update(Study).where(Study.id == study.id).values(progress_total=raw.n_slices))
        db.commit()
        batch_size = max(1, min(64, -(-raw.n_slices // _PROGRESS_STEPS)))
        result = score_study(model, raw, progress=self._progress(study.id), batch_size=batch_size)
        db.refresh(study)
        timings = {"read_s": read_seconds, "score_s": result.seconds, "total_s": time.perf_counter() - started}
        record_result(db, self.settings.data_dir, study, version, raw, result, model, timings)
        study.status, study.finished_at, study.progress_done = "done", utcnow(), raw.n_slices
        audit.record(db, None, "job.done", f"study:{study.id}", model=version.label, abnormal=result.abnormal)
        db.commit()
        logger.info("study %d scored by %s in %.2f s", study.id, version.label, time.perf_counter() - started)

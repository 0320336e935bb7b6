"""The service's public API for programs that score studies outside it (the PACS link).

:class:`ResultStore` adds a scored study to the service's database and data folder exactly as the service's own
worker stores an upload it scored, so it appears in the worklist and can be re-scored there. The database rows and
the data folder's layout stay the service's business: callers pass a model, the study as read, its result and the
files it was read from.
"""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from medanomaly.model import Model
from medanomaly.pipeline import StudyResult
from medanomaly.service import audit
from medanomaly.service.db import ModelVersion, Study, make_engine, make_session_factory, migrate, utcnow
from medanomaly.service.model_store import register_version
from medanomaly.service.results import record_result
from medanomaly.service.settings import parse_model_spec
from medanomaly.service.storage import store_copy
from medanomaly.types import Study as RawStudy


def data_dir_for(db_url: str) -> Path:
    """The service's data folder: ``MEDANOMALY_DATA_DIR``, else the folder of a SQLite database file.

    Raises:
        ValueError: A non-SQLite URL without ``MEDANOMALY_DATA_DIR``.
    """
    if os.environ.get("MEDANOMALY_DATA_DIR"):
        return Path(os.environ["MEDANOMALY_DATA_DIR"])
    url = make_url(db_url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        return Path(url.database).resolve().parent
    msg = f"{url.render_as_string()}: set MEDANOMALY_DATA_DIR to the service's data folder (arrays live there)"
    raise ValueError(msg)


class ResultStore:
    """The service's database (schema brought up to date on open) and data folder.

    Args:
        db_url: SQLAlchemy URL of the service's database.
        data_dir: The service's data folder; default :func:`data_dir_for` ``(db_url)``.
    """

    def __init__(self, db_url: str, data_dir: Path | None = None) -> None:
        self.data_dir = data_dir or data_dir_for(db_url)
        engine = make_engine(db_url)
        migrate(engine)
        self.sessions = make_session_factory(engine)

    def add_scored_study(
        self, model: Model, raw: RawStudy, result: StudyResult, source: Path, name: str, *, actor: str
    ) -> bool:
        """Store one scored study (status ``done``) under the display ``name``; False when already stored.

        A study is identified by its Study Instance UID and ``name``: scoring it again with another model version
        adds that version's result to the same row; the same version again adds nothing.
        """
        with self.sessions() as db:
            version = self._version(db, model, actor)
            row = db.scalar(
                select(Study).where(Study.study_instance_uid == raw.meta.get("study_uid"), Study.original_name == name)
            )
            if row is not None and any(r.model_version_id == version.id for r in row.results):
                return False
            row = row or self._new_study(db, raw, name, source, version.name)
            record_result(db, self.data_dir, row, version, raw, result, model, {"score_s": result.seconds})
            audit.record(db, None, f"{actor}.import", f"study:{row.id}", actor=actor, model=version.label,
                         abnormal=result.abnormal)  # fmt: skip
            db.commit()
        return True

    @staticmethod
    def _version(db: Session, model: Model, actor: str) -> ModelVersion:
        """The row of the model's directory and version, under any served name, else registered by folder name."""
        path = Path(str(model.info.get("path", "."))).resolve()
        query = select(ModelVersion).where(ModelVersion.path == str(path), ModelVersion.version == model.version)
        return db.scalar(query) or register_version(db, parse_model_spec(str(path))[0], path, created_by=actor)

    def _new_study(self, db: Session, raw: RawStudy, name: str, source: Path, model_name: str) -> Study:
        stored = store_copy(source, self.data_dir, {})
        meta, now = raw.meta, utcnow()
        row = Study(
            uid=stored.uid, original_name=name, input_path=stored.input_path, size_bytes=stored.size_bytes,
            sha256=stored.sha256, kind=meta.get("kind"), modality=meta.get("modality"),
            patient_id=meta.get("patient_id"), study_instance_uid=meta.get("study_uid"), n_slices=raw.n_slices,
            model_name=model_name, status="done", progress_done=raw.n_slices, progress_total=raw.n_slices,
            started_at=now, finished_at=now,
        )  # fmt: skip
        db.add(row)
        db.flush()
        return row

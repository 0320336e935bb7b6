"""Put PACS results into the web service's database, so they appear in its worklist with their PACS identifiers.

Each scored unit becomes a service ``Study`` (status ``done``; ``study_instance_uid`` = the PACS Study Instance UID,
``original_name`` = ``PACS series <SeriesInstanceUID>``) with a ``Result`` of the model version that scored it,
its display arrays saved the way the service's own worker saves them (:func:`medanomaly.service.imaging.save_arrays`)
and the source images copied into the service's data folder (so "re-score" works there too). Registering the same
series with the same model version again does nothing.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medanomaly.pacs.client import PacsError

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from medanomaly.model import Model
    from medanomaly.pipeline import StudyResult
    from medanomaly.types import Study as RawStudy

ACTOR = "pacs"


def service_data_dir(db_url: str) -> Path:
    """The service's data folder: ``MEDANOMALY_DATA_DIR``, else the folder of a SQLite database file.

    Raises:
        PacsError: A non-SQLite URL without ``MEDANOMALY_DATA_DIR``.
    """
    from sqlalchemy.engine import make_url

    if os.environ.get("MEDANOMALY_DATA_DIR"):
        return Path(os.environ["MEDANOMALY_DATA_DIR"])
    url = make_url(db_url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        return Path(url.database).resolve().parent
    msg = f"--db {url.render_as_string()}: set MEDANOMALY_DATA_DIR to the service's data folder (arrays live there)"
    raise PacsError(msg)


def _digest(path: Path) -> tuple[int, str]:
    """Total size and SHA-256 of a file or of a folder's files (sorted by name)."""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    digest, size = hashlib.sha256(), 0
    for file in files:
        data = file.read_bytes()
        size += len(data)
        digest.update(data)
    return size, digest.hexdigest()


class Worklist:
    """The web service's database (schema brought up to date on open).

    Args:
        db_url: SQLAlchemy URL of the service's database.
    """

    def __init__(self, db_url: str) -> None:
        try:
            from medanomaly.service.db import make_engine, make_session_factory, migrate
        except ImportError as error:
            msg = f"--db needs the web service's dependencies ({error}); pip install 'medanomaly[service]'"
            raise PacsError(msg) from None
        self.data_dir = service_data_dir(db_url)
        engine = make_engine(db_url)
        migrate(engine)
        self.sessions = make_session_factory(engine)

    def register(self, model: Model, series_uid: str, raw: RawStudy, result: StudyResult, source: Path) -> int:
        """Add one scored unit (returns 1), or nothing when this model version already scored it (returns 0)."""
        from sqlalchemy import select

        from medanomaly.service import audit
        from medanomaly.service.db import Study

        name = f"PACS series {series_uid}" + (f" image {source.stem}" if source.is_file() else "")
        with self.sessions() as db:
            version = self._model_version(db, model)
            row = db.scalar(
                select(Study).where(Study.study_instance_uid == raw.meta.get("study_uid"), Study.original_name == name)
            )
            if row is not None and any(r.model_version_id == version.id for r in row.results):
                return 0
            row = row or self._new_study(db, raw, name, source, version.name)
            self._add_result(db, row, version, raw, result, model)
            audit.record(
                db, None, "pacs.import", f"study:{row.id}", actor=ACTOR, model=version.label, abnormal=result.abnormal
            )
            db.commit()
        return 1

    def _model_version(self, db: Session, model: Model) -> Any:
        """The service's row for this model directory and version (created when the service does not know it)."""
        from sqlalchemy import select

        from medanomaly.service.db import ModelVersion
        from medanomaly.service.settings import parse_model_spec

        path = str(Path(str(model.info.get("path", "."))).resolve())
        name = parse_model_spec(path)[0]
        row = db.scalar(select(ModelVersion).where(ModelVersion.path == path, ModelVersion.version == model.version))
        row = row or db.scalar(
            select(ModelVersion).where(ModelVersion.name == name, ModelVersion.version == model.version)
        )
        if row is None:
            threshold = model.threshold
            row = ModelVersion(
                name=name,
                version=model.version,
                path=path,
                method=model.method,
                threshold=None if threshold is None else threshold.value,
                threshold_method=None if threshold is None else threshold.method,
                created_by=ACTOR,
            )
            db.add(row)
            db.flush()
        return row

    def _new_study(self, db: Session, raw: RawStudy, name: str, source: Path, model_name: str) -> Any:
        from medanomaly.service.db import Study, utcnow

        uid = uuid.uuid4().hex
        target = self.data_dir / "studies" / uid / "input"
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            target.mkdir(parents=True)
            shutil.copy2(source, target / source.name)
            target = target / source.name
        size, sha256 = _digest(target)
        meta = raw.meta
        row = Study(
            uid=uid,
            original_name=name,
            input_path=str(target.relative_to(self.data_dir)),
            size_bytes=size,
            sha256=sha256,
            kind=meta.get("kind"),
            modality=meta.get("modality"),
            patient_id=meta.get("patient_id"),
            study_instance_uid=meta.get("study_uid"),
            n_slices=raw.n_slices,
            model_name=model_name,
            status="done",
            progress_done=raw.n_slices,
            progress_total=raw.n_slices,
            started_at=utcnow(),
            finished_at=utcnow(),
        )
        db.add(row)
        db.flush()
        return row

    def _add_result(
        self, db: Session, row: Any, version: Any, raw: RawStudy, result: StudyResult, model: Model
    ) -> None:
        from medanomaly.service.results import record_result

        record_result(db, self.data_dir, row, version, raw, result, model, {"score_s": result.seconds})

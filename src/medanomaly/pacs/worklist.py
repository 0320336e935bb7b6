"""Put PACS results into the web service's worklist, through the service's public API (:mod:`medanomaly.service.api`).

Each scored unit becomes a service study named ``PACS series <SeriesInstanceUID>`` (plus ``image <SOPInstanceUID>``
for a single-image unit) with the PACS Study Instance UID, stored as the service stores what it scores itself.
Registering the same series with the same model version again does nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from medanomaly.pacs.client import PacsError

if TYPE_CHECKING:
    from medanomaly.model import Model
    from medanomaly.pipeline import StudyResult
    from medanomaly.types import Study as RawStudy

ACTOR = "pacs"


class Worklist:
    """The web service's database and data folder.

    Args:
        db_url: SQLAlchemy URL of the service's database (its data folder: ``MEDANOMALY_DATA_DIR``, else the
            SQLite file's folder).
    """

    def __init__(self, db_url: str) -> None:
        try:
            from medanomaly.service.api import ResultStore
        except ImportError as error:
            msg = f"--db needs the web service's dependencies ({error}); pip install 'medanomaly[service]'"
            raise PacsError(msg) from None
        try:
            self.store = ResultStore(db_url)
        except ValueError as error:
            raise PacsError(f"--db {error}") from None

    def register(self, model: Model, series_uid: str, raw: RawStudy, result: StudyResult, source: Path) -> int:
        """Add one scored unit (returns 1), or nothing when this model version already scored it (returns 0)."""
        name = f"PACS series {series_uid}" + (f" image {source.stem}" if source.is_file() else "")
        return int(self.store.add_scored_study(model, raw, result, source, name, actor=ACTOR))

"""Database options shared by the ``serve``, ``users``, ``feedback`` and ``recalibrate`` commands.

Only the standard library is imported here, so ``medanomaly --help`` works without the ``service`` extra.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path
from typing import Any

from medanomaly.errors import MedanomalyError

DEFAULT_DATA_DIR = "medanomaly-data"
_NEEDED = ("fastapi", "uvicorn", "sqlalchemy", "alembic", "argon2", "reportlab", "pydantic_settings", "multipart")


def require_service() -> None:
    """Raise a one-line error naming the install command when the ``service`` extra is missing."""
    missing = [name for name in _NEEDED if importlib.util.find_spec(name) is None]
    if missing:
        msg = (
            f"the workstation needs the 'service' extra (missing: {', '.join(missing)}): "
            "pip install 'medanomaly[service]'"
        )
        raise MedanomalyError(msg)


def add_database_arguments(parser: argparse.ArgumentParser) -> None:
    """``--data-dir`` and ``--db``."""
    parser.add_argument(
        "--data-dir",
        default=None,
        help=f"service data folder: uploads, results, reports, SQLite db (default {DEFAULT_DATA_DIR}, "
        "or $MEDANOMALY_DATA_DIR)",
    )
    parser.add_argument(
        "--db",
        default=None,
        metavar="URL",
        help="SQLAlchemy database URL (default sqlite:///DATA_DIR/medanomaly.db; postgresql+psycopg://... works too)",
    )


def settings_from(args: argparse.Namespace, **extra: Any) -> Any:
    """Settings from the environment, overridden by the flags that were given."""
    require_service()
    from medanomaly.service.settings import Settings

    given: dict[str, Any] = {key: value for key, value in extra.items() if value is not None}
    if getattr(args, "data_dir", None):
        given["data_dir"] = Path(args.data_dir)
    if getattr(args, "db", None):
        given["db_url"] = args.db
    return Settings(**given)


def open_database(settings: Any) -> Any:
    """Connect, migrate to the newest schema and return a session factory."""
    from medanomaly.service.db import make_engine, make_session_factory, migrate

    engine = make_engine(settings.database_url)
    migrate(engine)
    return make_session_factory(engine)

"""Database layer: SQLAlchemy models (:mod:`.models`), engine and Alembic migrations (:mod:`.session`)."""

from medanomaly.service.db.models import (
    AuditEvent,
    Base,
    LoginThrottle,
    ModelVersion,
    Opinion,
    Report,
    Result,
    Study,
    User,
    utcnow,
)
from medanomaly.service.db.session import make_engine, make_session_factory, migrate

__all__ = [
    "AuditEvent",
    "Base",
    "LoginThrottle",
    "ModelVersion",
    "Opinion",
    "Report",
    "Result",
    "Study",
    "User",
    "make_engine",
    "make_session_factory",
    "migrate",
    "utcnow",
]

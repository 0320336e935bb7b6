"""The audit trail: one row per action that changes data (who, what, when). Never put patient identifiers in it."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.orm import Session

from medanomaly.service.db import AuditEvent, User

logger = logging.getLogger(__name__)
SYSTEM = "system"


def record(db: Session, user: User | None, action: str, target: str | None = None, **detail: Any) -> AuditEvent:
    """Add an audit row to the session (committed with the change it describes).

    Args:
        db: The session holding the change.
        user: Who did it; None for the system (scoring worker, start-up).
        action: Dotted verb such as ``study.upload``, ``opinion.create``, ``model.recalibrate``.
        target: What it touched, e.g. ``study:12``.
        **detail: JSON-able facts about the action (no names, patient ids or file names).
    """
    actor = user.username if user is not None else detail.pop("actor", SYSTEM)
    event = AuditEvent(
        user_id=user.id if user is not None else None, actor=actor, action=action, target=target, detail=detail
    )
    db.add(event)
    logger.info("audit %s %s %s", actor, action, target or "")
    return event

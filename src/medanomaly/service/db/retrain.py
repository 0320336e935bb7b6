"""Table of retraining jobs (migration ``0006_retrain``).

A served model retrained on the radiologists' feedback in the background, its progress and the inactive version it
proposed. Kept beside :mod:`.models` on the same declarative base.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Float, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from medanomaly.service.db.models import Base, utcnow

#: Job states: waiting for the worker, retraining, finished with a proposed version, failed (``error`` says why).
RETRAIN_STATUSES = ("queued", "running", "done", "failed")


class RetrainJob(Base):
    """One retraining of a served model from feedback (no foreign key to the version: a discarded one is deleted)."""

    __tablename__ = "retrain_jobs"

    id: Mapped[int] = mapped_column(primary_key=True)
    model_name: Mapped[str] = mapped_column(String(128))
    from_version: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    stage: Mapped[str | None] = mapped_column(String(64))
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    options: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column()
    finished_at: Mapped[dt.datetime | None] = mapped_column()
    error: Mapped[str | None] = mapped_column(Text)
    new_version: Mapped[int | None] = mapped_column(Integer)
    summary: Mapped[dict[str, Any] | None] = mapped_column()

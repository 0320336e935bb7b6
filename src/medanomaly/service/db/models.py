"""SQLAlchemy models of the workstation: users, model versions, studies, results, opinions, reports, audit trail.

Timestamps are UTC. A study's model result is never overwritten by an opinion: opinions are rows of their own, with
who and when. JSON columns hold lists/dicts that are only read whole (findings, slice scores, regions).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

ROLES = ("radiologist", "admin")
STATUSES = ("queued", "scoring", "done", "failed")


def utcnow() -> dt.datetime:
    """Current time in UTC, timezone-aware."""
    return dt.datetime.now(dt.UTC)


class UTCDateTime(TypeDecorator):
    """A timezone-aware UTC datetime on every backend (SQLite stores it naive; it comes back tagged as UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        """Store in UTC."""
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(dt.UTC)
        return value

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        """Read back as aware UTC."""
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return value


class Base(DeclarativeBase):
    """Declarative base of every table."""

    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, dt.datetime: UTCDateTime}


class User(Base):
    """A person who logs in; ``role`` is ``radiologist`` or ``admin`` (admins can do everything)."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16), default="radiologist")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    session_epoch: Mapped[int] = mapped_column(Integer, default=0)
    display_settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_login_at: Mapped[dt.datetime | None] = mapped_column()
    password_changed_at: Mapped[dt.datetime | None] = mapped_column()

    @property
    def is_admin(self) -> bool:
        """True for the admin role."""
        return self.role == "admin"


class LoginThrottle(Base):
    """Recent failed log-ins of one user name (``kind`` ``user``) or client address (``addr``), known or not."""

    __tablename__ = "login_throttle"
    __table_args__ = (UniqueConstraint("kind", "key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(8))
    key: Mapped[str] = mapped_column(String(128))
    failures: Mapped[int] = mapped_column(Integer, default=0)
    last_failure_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    locked_until: Mapped[dt.datetime | None] = mapped_column()


class ModelVersion(Base):
    """One version of a served model: a model directory with its threshold."""

    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("name", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    version: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(Text)
    method: Mapped[str] = mapped_column(String(64))
    threshold: Mapped[float | None] = mapped_column(Float)
    threshold_method: Mapped[str | None] = mapped_column(String(32))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str | None] = mapped_column(String(64))
    recalibration: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    active: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")  # the one new studies get
    activated_at: Mapped[dt.datetime | None] = mapped_column()
    activated_by: Mapped[str | None] = mapped_column(String(64))
    triage: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # rule-out point: medanomaly.service.triage

    @property
    def label(self) -> str:
        """``name v2``."""
        return f"{self.name} v{self.version}"


class Study(Base):
    """An uploaded study and the state of its scoring job."""

    __tablename__ = "studies"

    id: Mapped[int] = mapped_column(primary_key=True)
    uid: Mapped[str] = mapped_column(String(32), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    uploaded_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    original_name: Mapped[str] = mapped_column(String(255))
    input_path: Mapped[str] = mapped_column(Text)
    size_bytes: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str | None] = mapped_column(String(32))
    modality: Mapped[str | None] = mapped_column(String(16))
    patient_id: Mapped[str | None] = mapped_column(String(128))
    study_instance_uid: Mapped[str | None] = mapped_column(String(128))
    n_slices: Mapped[int] = mapped_column(Integer, default=1)
    model_name: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    progress_done: Mapped[int] = mapped_column(Integer, default=0)
    progress_total: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    queued_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column()
    finished_at: Mapped[dt.datetime | None] = mapped_column()

    uploaded_by: Mapped[User | None] = relationship()
    results: Mapped[list[Result]] = relationship(back_populates="study", order_by="Result.id")
    opinions: Mapped[list[Opinion]] = relationship(back_populates="study", order_by="Opinion.id")

    @property
    def result(self) -> Result | None:
        """The latest model result, if any."""
        return self.results[-1] if self.results else None

    @property
    def opinion(self) -> Opinion | None:
        """The latest opinion on the latest result, if any (opinions on earlier results stay with those)."""
        result = self.result
        mine = [o for o in self.opinions if result is not None and o.result_id == result.id]
        return mine[-1] if mine else None


class Result(Base):
    """What a model version said about a study; arrays (maps, display slices) live in ``arrays_path``."""

    __tablename__ = "results"

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"))
    score: Mapped[float | None] = mapped_column(Float)  # None: out of domain, not scored
    threshold: Mapped[float] = mapped_column(Float)
    abnormal: Mapped[bool | None] = mapped_column(Boolean)  # None: out of domain, no decision
    label: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(32), default="scored", server_default="scored")  # or out_of_domain
    domain_reason: Mapped[str | None] = mapped_column(Text)
    domain: Mapped[dict[str, Any]] = mapped_column(default=dict)
    slice_scores: Mapped[list[Any]] = mapped_column(default=list)
    findings: Mapped[list[Any]] = mapped_column(default=list)
    extras: Mapped[list[Any]] = mapped_column(default=list)
    timings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    arrays_path: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    study: Mapped[Study] = relationship(back_populates="results")
    model_version: Mapped[ModelVersion] = relationship()


class Opinion(Base):
    """A radiologist's opinion on a study's result: a label with who and when, never a change to the result."""

    __tablename__ = "opinions"

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    result_id: Mapped[int | None] = mapped_column(ForeignKey("results.id"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    agrees: Mapped[bool] = mapped_column(Boolean)
    label: Mapped[str] = mapped_column(String(64))
    abnormal: Mapped[bool] = mapped_column(Boolean)
    note: Mapped[str] = mapped_column(Text, default="")
    regions: Mapped[list[Any]] = mapped_column(default=list)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    study: Mapped[Study] = relationship(back_populates="opinions")
    user: Mapped[User] = relationship()
    result: Mapped[Result | None] = relationship()


class Report(Base):
    """A PDF report saved with a study."""

    __tablename__ = "reports"

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    result_id: Mapped[int] = mapped_column(ForeignKey("results.id"))
    opinion_id: Mapped[int | None] = mapped_column(ForeignKey("opinions.id"))
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    path: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class AuditEvent(Base):
    """Who did what, when: one row per action that changed data. ``detail`` never holds patient identifiers."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64), index=True)
    target: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)

"""Tables of signed reports (migration ``0005_report_signoff``), beside :mod:`.models` on the same base.

The sign-off locks a study's report; addenda are written after it.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from medanomaly.service.db.models import Base, Opinion, Result, User, utcnow


class ReportSignoff(Base):
    """A study's report, signed: who and when, and the result and opinion it covers.

    One per study; afterwards the report's content is fixed and only addenda are added.
    """

    __tablename__ = "report_signoffs"

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), unique=True)
    result_id: Mapped[int] = mapped_column(ForeignKey("results.id"))
    opinion_id: Mapped[int] = mapped_column(ForeignKey("opinions.id"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    signed_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    user: Mapped[User] = relationship()
    result: Mapped[Result] = relationship()
    opinion: Mapped[Opinion] = relationship()
    addenda: Mapped[list[ReportAddendum]] = relationship(order_by="ReportAddendum.id", back_populates="signoff")


class ReportAddendum(Base):
    """Text added to a signed report, with who and when."""

    __tablename__ = "report_addenda"

    id: Mapped[int] = mapped_column(primary_key=True)
    signoff_id: Mapped[int] = mapped_column(ForeignKey("report_signoffs.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    user: Mapped[User] = relationship()
    signoff: Mapped[ReportSignoff] = relationship(back_populates="addenda")

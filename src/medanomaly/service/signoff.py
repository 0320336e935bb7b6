"""Signing a study's report: the sign-off locks it (who, when, the result and opinion it covers), addenda follow.

A signed report is written once as PDF at sign-off and again after each addendum; the signed part never changes
(it is built from the signed result and the opinions up to the signed one), and no opinion can be added afterwards.
"""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from medanomaly.service import audit
from medanomaly.service.db import Study, User
from medanomaly.service.db.signoff import ReportAddendum, ReportSignoff
from medanomaly.service.storage import UploadRejected


class AddendumIn(BaseModel):
    """Text added to a signed report."""

    text: str = Field(min_length=1, max_length=5000)


class AddendumOut(BaseModel):
    """An addendum with who and when."""

    id: int
    user: str
    text: str
    created_at: dt.datetime


class SignoffOut(BaseModel):
    """A report's sign-off with its addenda."""

    study_id: int
    result_id: int
    opinion_id: int
    user: str
    signed_at: dt.datetime
    addenda: list[AddendumOut]


def signoff_of(db: Session, study_id: int) -> ReportSignoff | None:
    """The study's sign-off (with signer and addenda loaded), or None while the report is open."""
    query = select(ReportSignoff).where(ReportSignoff.study_id == study_id).options(
        selectinload(ReportSignoff.user), selectinload(ReportSignoff.addenda).selectinload(ReportAddendum.user)
    )
    return db.scalar(query)


def addendum_out(addendum: ReportAddendum) -> AddendumOut:
    """API view of an addendum."""
    return AddendumOut(id=addendum.id, user=addendum.user.username, text=addendum.text, created_at=addendum.created_at)


def signoff_out(signoff: ReportSignoff) -> SignoffOut:
    """API view of a sign-off."""
    return SignoffOut(
        study_id=signoff.study_id, result_id=signoff.result_id, opinion_id=signoff.opinion_id,
        user=signoff.user.username, signed_at=signoff.signed_at, addenda=[addendum_out(a) for a in signoff.addenda],
    )


def refuse_if_signed(db: Session, study: Study) -> None:
    """Raise 409 when the study's report is signed (opinions would change a locked report).

    Raises:
        UploadRejected: 409 with the signer and time.
    """
    signoff = signoff_of(db, study.id)
    if signoff is not None:
        when = signoff.signed_at.strftime("%Y-%m-%d %H:%M UTC")
        msg = f"the report of study {study.id} was signed off by {signoff.user.username} on {when}; add an addendum"
        raise UploadRejected(409, msg)


def sign_off(db: Session, study: Study, user: User) -> ReportSignoff:
    """Sign the report of the study's latest result and opinion.

    Raises:
        UploadRejected: 409 without a result or an opinion on it, or when already signed.
    """
    refuse_if_signed(db, study)
    result, opinion = study.result, study.opinion
    if result is None or opinion is None:
        raise UploadRejected(409, f"study {study.id} needs a result and your opinion on it before sign-off")
    signoff = ReportSignoff(study_id=study.id, result_id=result.id, opinion_id=opinion.id, user_id=user.id)
    db.add(signoff)
    db.flush()
    audit.record(db, user, "report.signoff", f"study:{study.id}", result=result.id, opinion=opinion.id)
    db.commit()
    return signoff_of(db, study.id)  # type: ignore[return-value]


def add_addendum(db: Session, study: Study, user: User, text: str) -> ReportAddendum:
    """Add an addendum to a signed report.

    Raises:
        UploadRejected: 409 when the report is not signed yet (edit the opinion instead).
    """
    signoff = signoff_of(db, study.id)
    if signoff is None:
        raise UploadRejected(409, f"the report of study {study.id} is not signed yet: give or change the opinion")
    addendum = ReportAddendum(user_id=user.id, text=text.strip())
    signoff.addenda.append(addendum)  # keeps the loaded sign-off's addenda current for the PDF written next
    db.flush()
    audit.record(db, user, "report.addendum", f"study:{study.id}", addendum=addendum.id)
    db.commit()
    db.refresh(addendum)
    return addendum

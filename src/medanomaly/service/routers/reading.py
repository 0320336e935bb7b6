"""JSON API of reading a study: raw slice values for the viewer, and the report's sign-off and addenda."""

from __future__ import annotations

import gzip
from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response

from medanomaly.service.db import Study
from medanomaly.service.deps import DbDep, SettingsDep, UserDep
from medanomaly.service.imaging import slice_values
from medanomaly.service.reports import save_pdf
from medanomaly.service.routers.studies import _arrays_for, get_study
from medanomaly.service.signoff import (
    AddendumIn,
    AddendumOut,
    SignoffOut,
    add_addendum,
    addendum_out,
    sign_off,
    signoff_of,
    signoff_out,
)
from medanomaly.service.study_details import labelled, study_details

router = APIRouter(prefix="/api/studies", tags=["reading"])


def reading_context(db: DbDep, settings: SettingsDep, study: Study) -> dict[str, Any]:
    """What the study page shows beside the image: DICOM details and the report's sign-off."""
    details = study_details(settings.data_dir, study.input_path)
    return {"details": details, "details_rows": labelled(details), "signoff": signoff_of(db, study.id)}


@router.get("/{study_id}/slices/{index}/values", response_class=Response)
def slice_raw_values(
    request: Request, db: DbDep, settings: SettingsDep, user: UserDep, study_id: int, index: int
) -> Response:
    """Slice ``index`` in stored units (HU for CT) at display resolution, as raw little-endian samples, row-major.

    ``X-Shape`` gives ``rows,columns[,3]`` and ``X-Dtype`` the sample type (``int16``, ``uint16``, ``float32`` or
    ``uint8`` for colour); gzip-compressed when the client accepts it.
    """
    arrays = _arrays_for(db, settings, study_id)
    try:
        values = slice_values(arrays, index)
    except IndexError as error:
        raise HTTPException(404, str(error)) from None
    body = values.astype(values.dtype.newbyteorder("<"), copy=False).tobytes()
    headers = {
        "Cache-Control": "private, max-age=300",
        "X-Shape": ",".join(str(n) for n in values.shape),
        "X-Dtype": values.dtype.name,
        "Access-Control-Expose-Headers": "X-Shape, X-Dtype",
    }
    if "gzip" in request.headers.get("accept-encoding", ""):
        body, headers["Content-Encoding"] = gzip.compress(body, compresslevel=1), "gzip"
    return Response(body, media_type="application/octet-stream", headers=headers)


@router.get("/{study_id}/signoff")
def read_signoff(db: DbDep, user: UserDep, study_id: int) -> SignoffOut:
    """The report's sign-off and addenda (404 while the report is not signed)."""
    signoff = signoff_of(db, get_study(db, study_id).id)
    if signoff is None:
        raise HTTPException(404, f"the report of study {study_id} is not signed off")
    return signoff_out(signoff)


@router.post("/{study_id}/signoff", status_code=201)
def create_signoff(db: DbDep, settings: SettingsDep, user: UserDep, study_id: int) -> SignoffOut:
    """Sign off the report of the latest result and opinion: it is locked (no more opinions) and saved as PDF."""
    study = get_study(db, study_id)
    signoff = sign_off(db, study, user)
    save_pdf(db, settings, study, user)
    return signoff_out(signoff)


@router.post("/{study_id}/addenda", status_code=201)
def create_addendum(db: DbDep, settings: SettingsDep, user: UserDep, study_id: int, body: AddendumIn) -> AddendumOut:
    """Add an addendum to a signed report; the report's PDF is written again with it."""
    study = get_study(db, study_id)
    addendum = add_addendum(db, study, user, body.text)
    save_pdf(db, settings, get_study(db, study_id), user)
    return addendum_out(addendum)

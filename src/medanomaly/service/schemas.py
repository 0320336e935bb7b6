"""Request and response bodies of the JSON API (separate from the database models)."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from medanomaly.service.imaging import COLORMAPS

Role = Literal["radiologist", "admin"]


class LoginIn(BaseModel):
    """Credentials for ``POST /api/auth/login``."""

    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class UserOut(BaseModel):
    """A user, without the password hash."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    username: str
    role: str
    active: bool
    created_at: dt.datetime
    last_login_at: dt.datetime | None = None


class LoginOut(BaseModel):
    """The logged-in user and the CSRF token to send as ``X-CSRF-Token`` with calls that change data."""

    user: UserOut
    csrf_token: str


class UserIn(BaseModel):
    """A new user (admin only)."""

    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=8, max_length=1024)
    role: Role = "radiologist"


class UserPatch(BaseModel):
    """Changes to a user (admin only); omitted fields stay."""

    role: Role | None = None
    active: bool | None = None
    password: str | None = Field(default=None, min_length=8, max_length=1024)


class DisplaySettings(BaseModel):
    """A user's personal viewer defaults."""

    overlay_opacity: float = Field(0.45, ge=0.0, le=1.0)
    colormap: str = "jet"
    window: str = "auto"
    show_overlay: bool = True
    show_findings: bool = True
    show_extras: bool = True
    show_slice_plot: bool = True

    @field_validator("colormap")
    @classmethod
    def _known_colormap(cls, value: str) -> str:
        if value not in COLORMAPS:
            msg = f"unknown colour map {value!r}; choose one of {', '.join(COLORMAPS)}"
            raise ValueError(msg)
        return value

    @field_validator("window")
    @classmethod
    def _plain_window(cls, value: str) -> str:
        if not value.isidentifier():
            msg = f"invalid window preset {value!r}"
            raise ValueError(msg)
        return value


class ModelVersionOut(BaseModel):
    """One version of a served model."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    version: int
    method: str
    threshold: float | None
    threshold_method: str | None
    created_at: dt.datetime
    created_by: str | None = None
    parent_id: int | None = None
    recalibration: dict[str, Any] | None = None
    active: bool = False
    activated_at: dt.datetime | None = None
    activated_by: str | None = None
    triage: dict[str, Any] | None = None


class StudyOut(BaseModel):
    """A study and the state of its scoring job; ``decision``/``score`` come from its latest result."""

    id: int
    uid: str
    original_name: str
    created_at: dt.datetime
    uploaded_by: str | None
    kind: str | None
    modality: str | None
    patient_id: str | None
    n_slices: int
    model_name: str
    status: str
    progress_done: int
    progress_total: int
    error: str | None
    decision: str | None = None
    result_status: str | None = None
    domain_reason: str | None = None
    abnormal: bool | None = None
    score: float | None = None
    threshold: float | None = None
    model_version: int | None = None
    opinion: str | None = None
    triage_band: str | None = None
    overdue: bool = False


class FindingOut(BaseModel):
    """A region of the thresholded anomaly map; ``box`` = [x0, y0, x1, y1] as fractions of the image."""

    slice_index: int
    bbox: list[int]
    box: list[float]
    centroid: list[float]
    area_px: int
    area_mm2: float | None
    mean_score: float
    max_score: float


class ResultOut(BaseModel):
    """A model's result for a study."""

    study_id: int
    decision: str
    status: str = "scored"
    domain_reason: str | None = None
    domain: dict[str, Any] = Field(default_factory=dict)
    abnormal: bool | None
    score: float | None
    threshold: float
    summary: str
    slice_scores: list[float]
    findings: list[FindingOut]
    extras: list[str]
    model: ModelVersionOut
    timings: dict[str, float]
    created_at: dt.datetime
    window_choices: dict[str, str]


class Region(BaseModel):
    """A box the radiologist marked: slice and [x0, y0, x1, y1] as fractions of the image."""

    slice_index: int = Field(0, ge=0)
    box: list[float] = Field(min_length=4, max_length=4)

    @field_validator("box")
    @classmethod
    def _inside_image(cls, box: list[float]) -> list[float]:
        if not all(0.0 <= v <= 1.0 for v in box) or box[0] >= box[2] or box[1] >= box[3]:
            msg = "box must be [x0, y0, x1, y1] with 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1"
            raise ValueError(msg)
        return box


class OpinionIn(BaseModel):
    """A radiologist's opinion: agree/disagree, an optional own label, a note, marked regions."""

    agrees: bool
    label: str | None = Field(default=None, max_length=64)
    note: str = Field(default="", max_length=5000)
    regions: list[Region] = Field(default_factory=list, max_length=50)


class OpinionOut(BaseModel):
    """A stored opinion with who and when."""

    id: int
    study_id: int
    result_id: int | None
    user: str
    agrees: bool
    label: str
    abnormal: bool
    note: str
    regions: list[Region]
    created_at: dt.datetime


class RecalibrateIn(BaseModel):
    """Calibration method for a recalibration from feedback (``keep``: same threshold, new triage point)."""

    method: str = Field("youden", max_length=32)


class ActivateIn(BaseModel):
    """Activation of a model version; ``accept_drop`` confirms a version measured less sensitive than before."""

    accept_drop: bool = False


class ResultSummaryOut(BaseModel):
    """One result in a study's history, with the opinions given on it."""

    id: int
    model: str
    model_version: int
    decision: str
    status: str
    score: float | None
    threshold: float
    triage_band: str | None
    created_at: dt.datetime
    latest: bool
    opinions: list[OpinionOut]


class AuditOut(BaseModel):
    """One audit-trail row."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    at: dt.datetime
    actor: str
    action: str
    target: str | None
    detail: dict[str, Any]

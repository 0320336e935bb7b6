"""Patient and study details of a stored study, from its DICOM header: what the viewer shows and the report prints.

Read from the stored input (the first DICOM file of a series, header only) and cached per file, so studies stored
before these details were shown get them too. Non-DICOM studies (PNG, NIfTI) have none. Names keep every character
the file holds (pydicom decodes the Specific Character Set), e.g. ``Müller^Anna`` or ``山田^太郎``.
"""

from __future__ import annotations

import datetime as dt
import logging
from functools import lru_cache
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)
_SEX = {"M": "male", "F": "female", "O": "other"}
_AGE_UNITS = {"D": "days", "W": "weeks", "M": "months", "Y": "years"}
#: Key -> label of every detail, in the order shown.
LABELS = {
    "patient_name": "Patient name",
    "patient_id": "Patient ID",
    "sex": "Sex",
    "birth_date": "Birth date",
    "age": "Age",
    "study_date": "Study date",
    "accession": "Accession no.",
    "study_description": "Study description",
    "series_description": "Series description",
}


def person_name(value: Any) -> str:
    """A DICOM person name for people: ``Family, Given Middle``; an ideographic form follows in brackets."""
    groups = [group for group in str(value or "").split("=")[:2] if group.strip("^ ")]
    shown = []
    for group in groups:
        family, given, middle, prefix, suffix = (group.split("^") + [""] * 5)[:5]
        first = " ".join(part for part in (prefix, given, middle) if part)
        shown.append(", ".join(part for part in (family, " ".join(p for p in (first, suffix) if p)) if part))
    return f"{shown[0]} ({shown[1]})" if len(shown) == 2 else (shown[0] if shown else "")


def _date(value: Any) -> dt.date | None:
    text = str(value or "").strip()
    try:
        return dt.datetime.strptime(text[:8], "%Y%m%d").date() if len(text) >= 8 else None
    except ValueError:
        return None


def _age(age: Any, birth: dt.date | None, on: dt.date | None) -> str:
    text = str(age or "").strip()
    if len(text) == 4 and text[:3].isdigit() and text[3] in _AGE_UNITS:
        return f"{int(text[:3])} {_AGE_UNITS[text[3]]}"
    if birth and on and on >= birth:
        years = on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))
        return f"{years} years"
    return ""


def header_details(ds: Any) -> dict[str, str]:
    """The details of a pydicom dataset, empty values left out."""
    birth, study = _date(ds.get("PatientBirthDate")), _date(ds.get("StudyDate"))
    details = {
        "patient_name": person_name(ds.get("PatientName")),
        "patient_id": str(ds.get("PatientID") or ""),
        "sex": _SEX.get(str(ds.get("PatientSex") or "").strip().upper(), ""),
        "birth_date": birth.isoformat() if birth else "",
        "age": _age(ds.get("PatientAge"), birth, study),
        "study_date": study.isoformat() if study else "",
        "accession": str(ds.get("AccessionNumber") or ""),
        "study_description": str(ds.get("StudyDescription") or ""),
        "series_description": str(ds.get("SeriesDescription") or ""),
    }
    return {key: value.strip() for key, value in details.items() if value and value.strip()}


def _first_dicom(path: Path) -> Path | None:
    from medanomaly.io.reader import file_kind

    candidates = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return next((p for p in candidates if file_kind(p) == "dicom"), None)


@lru_cache(maxsize=256)
def _read(path: str, mtime: float) -> tuple[tuple[str, str], ...]:
    import pydicom

    first = _first_dicom(Path(path))
    if first is None:
        return ()
    try:
        ds = pydicom.dcmread(first, stop_before_pixels=True, force=True)
    except Exception as error:  # an unreadable header only costs the details, never the page  # noqa: BLE001
        logger.warning("no DICOM details for a stored study (%s)", type(error).__name__)
        return ()
    return tuple(header_details(ds).items())


def study_details(data_dir: Path, input_path: str) -> dict[str, str]:
    """Details of the study stored at ``data_dir / input_path`` (empty for non-DICOM studies or a missing file)."""
    path = data_dir / input_path
    if not path.exists():
        return {}
    return dict(_read(str(path), path.stat().st_mtime))


def labelled(details: dict[str, str]) -> list[tuple[str, str]]:
    """``(label, value)`` rows in display order."""
    return [(label, details[key]) for key, label in LABELS.items() if key in details]

"""The reading API and report content: raw slice values, DICOM details, sign-off and addenda, Unicode PDF text,
and the one heat-map rendering shared by the viewer and the report."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the workstation tests need the 'service' extra")
pypdf = pytest.importorskip("pypdf", reason="needs pypdf (the 'ui-tests' extra)")

from service_helpers import Session  # noqa: E402


def relabel(path: Path, **attrs: Any) -> Path:
    """Rewrite a DICOM file's header (UTF-8) and set a 4x4 block at rows 10-13, columns 20-23 to +1000 HU."""
    import pydicom

    ds = pydicom.dcmread(path)
    pixels = ds.pixel_array.copy()
    pixels[10:14, 20:24] = 1000 + 1024  # stored value; intercept -1024
    ds.PixelData = pixels.astype("<i2").tobytes()
    ds.SpecificCharacterSet = "ISO_IR 192"
    for key, value in attrs.items():
        setattr(ds, key, value)
    ds.save_as(path, enforce_file_format=True)
    return path


HEADER = {"PatientName": "Müller^Anna", "PatientSex": "F", "PatientBirthDate": "19700402", "StudyDate": "20261130",
          "AccessionNumber": "ACC-7781", "SeriesDescription": "Thorax 1.0 B60f"}


@pytest.fixture
def ct_study(dicom_file: Path) -> Path:
    """The CT fixture with patient details and a known 1000 HU block."""
    return relabel(dicom_file, **HEADER)


def scored(session: Session, app: Any, path: Path) -> int:
    study_id = session.upload(path).json()["id"]
    app.state.jobs.run_pending()
    return study_id


def pdf_text(data: bytes) -> str:
    return " ".join(page.extract_text() for page in pypdf.PdfReader(io.BytesIO(data)).pages)


def test_values_are_stored_units_at_native_size(app, rad: Session, ct_study: Path) -> None:
    study_id = scored(rad, app, ct_study)
    response = rad.client.get(f"/api/studies/{study_id}/slices/0/values", headers={"Accept-Encoding": "gzip"})
    assert response.status_code == 200
    assert response.headers["X-Dtype"] == "int16" and response.headers["X-Shape"] == "32,32"
    values = np.frombuffer(response.content, "<i2").reshape(32, 32)
    import pydicom

    expected = pydicom.dcmread(ct_study).pixel_array.astype(int) - 1024
    assert np.array_equal(values, expected)
    assert values[11, 21] == 1000
    assert rad.client.get(f"/api/studies/{study_id}/slices/1/values").status_code == 404


def test_study_page_shows_dicom_details(app, rad: Session, ct_study: Path) -> None:
    study_id = scored(rad, app, ct_study)
    html = rad.client.get(f"/studies/{study_id}").text
    for text in ("Müller, Anna", "female", "1970-04-02", "56 years", "2026-11-30", "ACC-7781", "Thorax 1.0 B60f"):
        assert text in html, text


def test_person_names_and_ages() -> None:
    from medanomaly.service.study_details import header_details, person_name

    assert person_name("Yamada^Tarou=山田^太郎") == "Yamada, Tarou (山田, 太郎)"
    assert person_name("山田^太郎") == "山田, 太郎"
    assert person_name("Doe^John^Q^Dr") == "Doe, Dr John Q"
    assert person_name("") == ""
    ds = {"PatientBirthDate": "19800615", "StudyDate": "20260614", "PatientSex": "m"}
    expected = {"sex": "male", "birth_date": "1980-06-15", "age": "45 years", "study_date": "2026-06-14"}
    assert header_details(ds) == expected
    assert header_details({"PatientAge": "007M"})["age"] == "7 months"


def test_pdf_prints_unicode_names() -> None:
    from medanomaly.reporting import ReportSignature, report_for, write_pdf
    from medanomaly.reporting.fonts import FALLBACK, missing_glyphs

    class Result:
        label, abnormal, score, threshold = "ABNORMAL", True, 0.5, 0.3

    names = "山田, 太郎 · Müller, Anna · Ødegård Ζωή Жанна"
    assert missing_glyphs(names) == set()
    report = report_for(
        Result(), identifiers=[("Patient name", names)], model=[("Model", "chest")], summary="ABNORMAL", findings=[],
        images=[], generated_by="rad", signature=ReportSignature("山田", "2026-12-05 10:00 UTC"),
    )
    out = Path(__import__("tempfile").mkdtemp()) / "r.pdf"
    write_pdf(report, out)
    text = pdf_text(out.read_bytes())
    for part in ("山田", "太郎", "Müller", "Ødegård", "Ζωή", "Жанна", "Signed off by 山田"):
        assert part in text, part
    fonts = {str(f["/BaseFont"]) for f in pypdf.PdfReader(out).pages[0]["/Resources"]["/Font"].values()}
    assert any("DejaVuSans" in f for f in fonts) and any("Helvetica" not in f for f in fonts)
    assert any(FALLBACK in f or "Fallback" in f for f in fonts), fonts


def test_signoff_locks_the_report_and_takes_addenda(app, rad: Session, ct_study: Path) -> None:
    study_id = scored(rad, app, ct_study)
    base = f"/api/studies/{study_id}"
    assert rad.post(f"{base}/signoff").status_code == 409  # no opinion yet
    assert rad.post(f"{base}/addenda", json={"text": "too early"}).status_code == 409
    opinion = {"agrees": True, "label": None, "note": "Nodule, follow-up CT.", "regions": []}
    assert rad.post(f"{base}/opinions", json=opinion).status_code == 201
    signed = rad.post(f"{base}/signoff")
    assert signed.status_code == 201, signed.text
    assert signed.json()["user"] == "rad" and signed.json()["addenda"] == []
    assert rad.post(f"{base}/signoff").status_code == 409
    refused = rad.post(f"{base}/opinions", json={**opinion, "agrees": False})
    assert refused.status_code == 409 and "signed off by rad" in refused.json()["detail"]
    first = rad.client.get(f"{base}/report.pdf").content
    assert rad.client.get(f"{base}/report.pdf").content == first  # locked: the same file every time
    text = pdf_text(first)
    assert "Signed off by rad" in text and "Müller, Anna" in text and "ACC-7781" in text and "1970-04-02" in text
    assert "Sex" in text and "female" in text and "2026-11-30" in text
    added = rad.post(f"{base}/addenda", json={"text": "Compared with the 2025 CT: unchanged."})
    assert added.status_code == 201 and added.json()["user"] == "rad"
    text = pdf_text(rad.client.get(f"{base}/report.pdf").content)
    assert "Addenda" in text and "unchanged" in text and "Nodule, follow-up CT." in text
    assert rad.client.get(f"{base}/signoff").json()["addenda"][0]["text"].startswith("Compared")
    html = rad.client.get(f"/studies/{study_id}/report").text
    assert "Signed off by rad" in html and "Compared with the 2025 CT" in html
    with app.state.session_factory() as db:
        from sqlalchemy import select

        from medanomaly.service.db import AuditEvent

        actions = set(db.scalars(select(AuditEvent.action)))
    assert {"report.signoff", "report.addendum"} <= actions


def test_report_heat_map_is_the_viewers(app, rad: Session, lesion_png: Path) -> None:
    from medanomaly.service.db import Result
    from medanomaly.service.imaging import load_arrays, map_rgba, overlay_rgb, window_slice

    scored(rad, app, lesion_png)
    with app.state.session_factory() as db:
        result = db.query(Result).one()
    arrays = load_arrays(app.state.settings.data_dir / result.arrays_path)
    grey, rgba = window_slice(arrays, 0, "auto"), map_rgba(arrays, 0, "jet").astype(float) / 255
    weight = rgba[..., 3:] * 0.45  # what the browser draws: the heat PNG at 45 % opacity over the slice
    expected = np.round(((1 - weight) * grey[..., None] + weight * rgba[..., :3]) * 255)
    assert np.abs(overlay_rgb(arrays, 0, opacity=0.45).astype(float) - expected).max() <= 1
    calm = rgba[..., 3] == 0  # below the map's low end: untinted grey, not washed blue
    assert calm.any()
    picture = overlay_rgb(arrays, 0)
    assert np.array_equal(picture[calm][:, 0], picture[calm][:, 2])


def test_radiograph_kept_at_native_resolution(app, rad: Session, tmp_path: Path) -> None:
    from service_helpers import phantom_png

    big = phantom_png(tmp_path / "in" / "big.png", lesion=True, size=1000, seed=3)
    study_id = scored(rad, app, big)
    response = rad.client.get(f"/api/studies/{study_id}/slices/0/values")
    assert response.headers["X-Shape"] == "1000,1000" and response.headers["X-Dtype"] == "int16"
    from PIL import Image

    stored = np.frombuffer(response.content, "<i2").reshape(1000, 1000)
    assert np.array_equal(stored, np.asarray(Image.open(big), dtype=np.int16))  # the file's own 8-bit values
    assert rad.client.get(f"/api/studies/{study_id}/slices/0/map.png").status_code == 200

"""Bad input never gets stored half-way: each case answers 4xx with a reason and the server keeps serving."""

from __future__ import annotations

import stat
import zipfile
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the workstation tests need the 'service' extra")
from service_helpers import login
from sqlalchemy import func, select

from medanomaly.service.db import Study


def _zip(path: Path, members: dict[str, bytes], *, symlink: str | None = None) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, "/etc/passwd")
    return path


def _count_studies(app) -> int:
    with app.state.session_factory() as db:
        return db.scalar(select(func.count()).select_from(Study))


def _bad_files(tmp: Path, lesion_png: Path, dicom_file: Path) -> dict[str, tuple[Path, int, str]]:
    """name -> (file, expected status, words the reason must contain)."""
    tmp.mkdir(parents=True, exist_ok=True)
    png = lesion_png.read_bytes()
    dcm = dicom_file.read_bytes()
    text = tmp / "notes.txt"
    text.write_text("not an image")
    corrupt = tmp / "broken.dcm"
    corrupt.write_bytes(dcm[:132] + b"\x08\x00\x16\x00UI\xff\x7f" + b"garbage" * 20)
    truncated = tmp / "half.png"
    truncated.write_bytes(png[: len(png) // 2])
    empty = tmp / "empty.png"
    empty.write_bytes(b"")
    fake_zip = tmp / "fake.zip"
    fake_zip.write_bytes(b"PK\x03\x04" + b"\x00" * 50)
    many = {f"s/{i:04d}.dcm": dcm for i in range(12)}
    return {
        "text": (text, 415, "not a supported image"),
        "corrupt dicom": (corrupt, 422, "broken.dcm"),
        "truncated png": (truncated, 422, "half.png"),
        "empty": (empty, 400, "empty"),
        "corrupt zip": (fake_zip, 400, "not a valid zip"),
        "traversal": (_zip(tmp / "evil.zip", {"../../evil.dcm": dcm}), 400, "unsafe path"),
        "absolute": (_zip(tmp / "abs.zip", {"/etc/cron.d/x.dcm": dcm}), 400, "unsafe path"),
        "symlink": (_zip(tmp / "link.zip", {"a.dcm": dcm}, symlink="b.dcm"), 400, "symbolic link"),
        "zip bomb": (_zip(tmp / "bomb.zip", {"zeros.dcm": b"\x00" * 3_000_000}), 413, "zip bomb"),
        "too many files": (_zip(tmp / "many.zip", many), 413, "more than the limit"),
        "two studies": (_zip(tmp / "two.zip", {"a/x.png": png, "b/y.png": png}), 400, "2 studies"),
        "no image in zip": (_zip(tmp / "readme.zip", {"README.txt": b"hello"}), 415, "no readable image"),
        "too large": (tmp / "big.png", 413, "upload limit"),
    }


@pytest.mark.filterwarnings("ignore:The value length:UserWarning")
def test_each_bad_upload_is_refused_with_a_reason(app_factory, lesion_png, dicom_file, tmp_path) -> None:
    app = app_factory(max_upload_mb=0.3, max_archive_files=10, max_compression_ratio=50)
    rad = login(app, "rad")
    cases = _bad_files(tmp_path / "bad", lesion_png, dicom_file)
    cases["too large"][0].write_bytes(lesion_png.read_bytes() + b"\x00" * 400_000)
    data_dir = app.state.settings.data_dir
    for name, (path, status, words) in cases.items():
        response = rad.upload(path)
        assert response.status_code == status, f"{name}: {response.status_code} {response.text}"
        assert words in response.json()["detail"], f"{name}: {response.json()['detail']}"
        assert "/tmp" not in response.json()["detail"] and str(data_dir) not in response.json()["detail"]
        assert rad.client.get("/api/health").status_code == 200, name
    assert _count_studies(app) == 0
    assert not any((data_dir / "studies").glob("*")) if (data_dir / "studies").exists() else True
    assert not any((data_dir / "tmp").iterdir())
    assert rad.upload(lesion_png).status_code == 201  # still serving, and a good file still goes through


def test_big_upload_is_refused_before_reading_the_body(app_factory, tmp_path) -> None:
    app = app_factory(max_upload_mb=0.01)
    rad = login(app, "rad")
    big = tmp_path / "big.png"
    big.write_bytes(b"\x89PNG" + b"\x00" * 2_000_000)
    response = rad.upload(big)
    assert response.status_code == 413 and "limit" in response.json()["detail"]


def test_upload_form_shows_the_reason(app, tmp_path) -> None:
    rad = login(app, "rad")
    page = rad.client.get("/")
    token = page.text.split('name="csrf_token" value="')[1].split('"')[0]
    response = rad.client.post("/upload", data={"csrf_token": token},
                               files={"file": ("notes.txt", b"hello", "text/plain")})
    assert response.status_code == 415
    assert "notes.txt: not a supported image file" in response.text and 'id="upload-error"' in response.text
    missing_token = rad.client.post("/upload", files={"file": ("notes.txt", b"hello", "text/plain")})
    assert missing_token.status_code == 403


def test_missing_model_is_reported_and_refuses_uploads(app_factory, lesion_png, tmp_path) -> None:
    app = app_factory(model_dirs=(str(tmp_path / "no-such-model"),))
    rad = login(app, "rad")
    response = rad.upload(lesion_png)
    assert response.status_code == 409 and "model directory not found" in response.json()["detail"]
    health = rad.client.get("/api/health").json()
    assert health["models"]["no-such-model"]["version"] is None and health["models"]["no-such-model"]["error"]
    assert "Model no-such-model unavailable" in rad.client.get("/").text
    assert _count_studies(app) == 0


def test_model_gone_after_upload_fails_the_job_cleanly(app, lesion_png, model_dir) -> None:
    rad = login(app, "rad")
    study_id = rad.upload(lesion_png).json()["id"]
    (model_dir / "weights.pt").unlink()
    app.state.jobs.run_pending()
    study = rad.client.get(f"/api/studies/{study_id}").json()
    assert study["status"] == "failed" and "weights.pt" in study["error"]
    reason = rad.client.get(f"/api/studies/{study_id}/result").json()["detail"]
    assert "failed" in reason
    assert "Scoring failed" in rad.client.get(f"/studies/{study_id}").text


@pytest.mark.parametrize("name", ["x.zip", "series.ZIP"])
def test_zip_of_one_dicom_series_is_accepted(app, dicom_zip, name) -> None:
    rad = login(app, "rad")
    response = rad.upload(dicom_zip, name=name)
    assert response.status_code == 201 and response.json()["n_slices"] == 5
    stored = app.state.settings.data_dir / "studies" / response.json()["uid"]
    names = [p.name for p in stored.rglob("*") if p.is_file()]
    assert len(names) == 5 and not any("slice" in n for n in names)  # uploaded names are not kept on disk


def test_upload_never_keeps_a_partial_study_when_the_database_fails(app, lesion_png, monkeypatch) -> None:
    from medanomaly.service import studies

    rad = login(app, "rad")

    def broken(*args, **kwargs):
        raise RuntimeError("database went away")

    monkeypatch.setattr(studies.audit, "record", broken)
    with pytest.raises(RuntimeError):
        rad.upload(lesion_png)
    assert _count_studies(app) == 0
    assert not any((app.state.settings.data_dir / "studies").iterdir())
    monkeypatch.undo()
    assert rad.upload(lesion_png).status_code == 201

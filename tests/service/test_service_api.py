"""JSON API of the workstation: upload -> job -> result, volumes, opinions, reports, restarts, schema."""

from __future__ import annotations

import io
import logging
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the workstation tests need the 'service' extra")
from service_helpers import login
from sqlalchemy import select

from medanomaly.model import Model
from medanomaly.pipeline import score_path
from medanomaly.service.db import AuditEvent, Report, Study


def _actions(app) -> list[str]:
    with app.state.session_factory() as db:
        return list(db.scalars(select(AuditEvent.action).order_by(AuditEvent.id)))


def test_upload_scores_like_the_cli(app, rad, lesion_png: Path, model_dir: Path) -> None:
    response = rad.upload(lesion_png)
    assert response.status_code == 201, response.text
    study = response.json()
    assert study["status"] == "queued" and study["n_slices"] == 1 and study["kind"] == "png"
    assert rad.client.get(f"/api/studies/{study['id']}/result").status_code == 409
    assert app.state.jobs.run_pending() == 1
    status = rad.client.get(f"/api/studies/{study['id']}").json()
    assert status["status"] == "done" and status["progress_done"] == status["progress_total"] == 1
    result = rad.client.get(f"/api/studies/{study['id']}/result").json()
    cli = score_path(Model.load(model_dir), lesion_png)  # the path 'medanomaly score' takes
    assert result["score"] == pytest.approx(cli.score, rel=1e-6)
    assert result["threshold"] == pytest.approx(cli.threshold)
    assert result["decision"] == cli.label and result["abnormal"] == cli.abnormal
    assert result["summary"] == f"{cli.label} — score {cli.score:.3g}, threshold {cli.threshold:.3g}"
    assert result["model"]["name"] == "chest" and result["model"]["version"] == 1
    assert result["extras"] == ["reconstruction"] and set(result["timings"]) == {"read_s", "score_s", "total_s"}
    for kind in ("image", "map", "reconstruction"):
        picture = rad.client.get(f"/api/studies/{study['id']}/slices/0/{kind}.png")
        assert picture.status_code == 200 and picture.content.startswith(b"\x89PNG")
    assert rad.client.get(f"/api/studies/{study['id']}/slices/1/image.png").status_code == 404
    assert rad.client.get(f"/api/studies/{study['id']}/slices/0/image.png?window=lung").status_code == 400
    assert _actions(app)[-2:] == ["study.upload", "job.done"]


def test_volume_is_scored_slice_by_slice_with_progress(app, rad, nifti_volume: Path, monkeypatch) -> None:
    from medanomaly.service.jobs import JobRunner

    reports: list[tuple[int, int]] = []
    original = JobRunner._progress

    def spy(self, study_id):
        report = original(self, study_id)
        return lambda done, total: (reports.append((done, total)), report(done, total))

    monkeypatch.setattr(JobRunner, "_progress", spy)
    study = rad.upload(nifti_volume).json()
    assert study["n_slices"] == 6 and study["progress_total"] == 6
    app.state.jobs.run_pending()
    assert reports[-1] == (6, 6) and len(reports) == 6 and [d for d, _ in reports] == sorted(d for d, _ in reports)
    result = rad.client.get(f"/api/studies/{study['id']}/result").json()
    assert len(result["slice_scores"]) == 6
    assert rad.client.get(f"/api/studies/{study['id']}/slices/5/map.png").status_code == 200


def test_dicom_series_zip_and_ct_windows(app, rad, dicom_zip: Path) -> None:
    study = rad.upload(dicom_zip).json()
    assert study["kind"] == "dicom_series" and study["n_slices"] == 5 and study["modality"] == "CT"
    app.state.jobs.run_pending()
    result = rad.client.get(f"/api/studies/{study['id']}/result").json()
    assert {"lung", "mediastinum", "bone"} <= set(result["window_choices"])
    lung = rad.client.get(f"/api/studies/{study['id']}/slices/2/image.png?window=lung")
    bone = rad.client.get(f"/api/studies/{study['id']}/slices/2/image.png?window=bone")
    assert lung.status_code == bone.status_code == 200 and lung.content != bone.content


def test_login_roles_and_basic_auth(app, rad, admin) -> None:
    from fastapi.testclient import TestClient

    anonymous = TestClient(app)
    assert anonymous.get("/api/studies").status_code == 401
    page = anonymous.get("/", follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"].startswith("/login")
    bad = anonymous.post("/api/auth/login", json={"username": "rad", "password": "wrong-password"})
    assert bad.status_code == 401
    assert rad.client.get("/api/users").status_code == 403
    assert rad.client.get("/admin").status_code == 403
    assert admin.client.get("/api/users").status_code == 200
    created = admin.post("/api/users", json={"username": "newdoc", "password": "long-enough-1"})
    assert created.status_code == 201 and created.json()["role"] == "radiologist"
    assert admin.post("/api/users", json={"username": "newdoc", "password": "long-enough-1"}).status_code == 409
    assert anonymous.get("/api/me", auth=("newdoc", "long-enough-1")).json()["username"] == "newdoc"
    assert anonymous.get("/api/me", auth=("newdoc", "wrong")).status_code == 401
    actions = _actions(app)
    assert "user.login_failed" in actions and "user.create" in actions and actions.count("user.login") == 2


def test_session_cookie_flags_logout_and_csrf(app, rad) -> None:
    from fastapi.testclient import TestClient

    client = TestClient(app)
    response = client.post("/api/auth/login", json={"username": "rad", "password": "rad-pass-123"})
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie
    token = response.json()["csrf_token"]
    body = {"overlay_opacity": 0.3, "colormap": "inferno", "window": "auto"}
    assert client.put("/api/me/settings", json=body).status_code == 403
    assert client.put("/api/me/settings", json=body, headers={"X-CSRF-Token": "forged"}).status_code == 403
    assert client.put("/api/me/settings", json=body, headers={"X-CSRF-Token": token}).status_code == 200
    assert client.get("/api/me/settings").json()["colormap"] == "inferno"
    bad = client.put("/api/me/settings", json={**body, "colormap": "rainbow"}, headers={"X-CSRF-Token": token})
    assert bad.status_code == 422 and "colour map" in bad.json()["detail"]
    form = client.post("/settings", data={"overlay_opacity": "0.5", "colormap": "jet", "window": "auto"})
    assert form.status_code == 403
    assert client.post("/api/auth/logout", headers={"X-CSRF-Token": token}).status_code == 204
    assert client.get("/api/me").status_code == 401
    assert rad.client.get("/api/me").status_code == 401  # logging out ends every session of the user


def test_opinion_is_a_label_and_never_changes_the_result(app, rad, lesion_png: Path) -> None:
    study_id = rad.upload(lesion_png).json()["id"]
    app.state.jobs.run_pending()
    before = rad.client.get(f"/api/studies/{study_id}/result").json()
    region = {"slice_index": 0, "box": [0.2, 0.3, 0.4, 0.5]}
    created = rad.post(f"/api/studies/{study_id}/opinions",
                       json={"agrees": False, "note": "nodule, left upper lobe", "regions": [region]})
    assert created.status_code == 201, created.text
    opinion = created.json()
    assert opinion["user"] == "rad" and opinion["regions"] == [region]
    assert opinion["abnormal"] is (not before["abnormal"])
    assert opinion["label"] == ("NORMAL" if before["abnormal"] else "ABNORMAL")
    own = rad.post(f"/api/studies/{study_id}/opinions", json={"agrees": True, "label": "nodule"}).json()
    assert own["label"] == "NODULE" and own["abnormal"] is True
    after = rad.client.get(f"/api/studies/{study_id}/result").json()
    assert after == before
    assert [o["id"] for o in rad.client.get(f"/api/studies/{study_id}/opinions").json()] == [opinion["id"], own["id"]]
    bad = rad.post(f"/api/studies/{study_id}/opinions", json={"agrees": True, "regions": [{"box": [0.5, 0, 0.2, 1]}]})
    assert bad.status_code == 422 and "box" in bad.json()["detail"]
    assert _actions(app).count("opinion.create") == 2


def test_pdf_report_is_saved_and_states_decision_support(app, rad, dicom_file: Path) -> None:
    from pypdf import PdfReader

    study_id = rad.upload(dicom_file).json()["id"]
    app.state.jobs.run_pending()
    result = rad.client.get(f"/api/studies/{study_id}/result").json()
    rad.post(f"/api/studies/{study_id}/opinions", json={"agrees": True, "note": "seen"})
    response = rad.client.get(f"/api/studies/{study_id}/report.pdf")
    assert response.status_code == 200 and response.headers["content-type"] == "application/pdf"
    text = " ".join(page.extract_text() for page in PdfReader(io.BytesIO(response.content)).pages)
    assert "Decision support only" in text and f"{result['score']:.3g}" in text
    assert "PAT-SECRET-123" in text and "chest" in text and "rad" in text
    again = rad.client.get(f"/api/studies/{study_id}/report.pdf")
    with app.state.session_factory() as db:
        reports = list(db.scalars(select(Report).where(Report.study_id == study_id)))
    assert again.content == response.content and len(reports) == 1
    assert (app.state.settings.data_dir / reports[0].path).is_file()
    html = rad.client.get(f"/studies/{study_id}/report")
    assert html.status_code == 200 and "Decision support only" in html.text and "window.print" in html.text


def test_queued_jobs_survive_a_restart(app_factory, lesion_png: Path, normal_png: Path) -> None:
    first = app_factory()
    session = login(first, "rad")
    ids = [session.upload(path).json()["id"] for path in (lesion_png, normal_png)]
    with first.state.session_factory() as db:  # as if the server died while scoring the first
        db.get(Study, ids[0]).status = "scoring"
        db.commit()
    second = app_factory(start_worker=True)
    with login(second, "rad").client as client:  # the lifespan starts the worker thread
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            states = [client.get(f"/api/studies/{i}").json()["status"] for i in ids]
            if states == ["done", "done"]:
                break
            time.sleep(0.2)
    assert states == ["done", "done"]
    assert "job.requeue" in _actions(second)


def test_migrations_match_the_models(app) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from medanomaly.service.db import Base

    with app.state.engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert diff == []


def test_no_patient_identifiers_in_logs(app, rad, dicom_file: Path, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    study_id = rad.upload(dicom_file).json()["id"]
    app.state.jobs.run_pending()
    assert rad.client.get("/api/studies?q=PAT-SECRET").json()[0]["id"] == study_id
    rad.client.get("/?q=PAT-SECRET-123")
    rad.client.get(f"/api/studies/{study_id}/report.pdf")
    server_side = ("medanomaly", "uvicorn", "fastapi", "starlette", "sqlalchemy", "alembic")  # not the test client
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith(server_side))
    assert f"study {study_id}" in logged
    assert "PAT-SECRET" not in logged and "Doe" not in logged


def test_worklist_filters_and_sorting(app, rad, lesion_png: Path, normal_png: Path, nifti_volume: Path) -> None:
    ids = [rad.upload(path).json()["id"] for path in (lesion_png, normal_png, nifti_volume)]
    app.state.jobs.run_pending(max_jobs=2)
    listing = rad.client.get("/api/studies?sort=id&order=asc").json()
    assert [s["id"] for s in listing] == ids
    assert [s["id"] for s in rad.client.get("/api/studies?status=queued").json()] == [ids[2]]
    assert {s["id"] for s in rad.client.get("/api/studies?decision=none").json()} == {ids[2]}
    scored = rad.client.get("/api/studies?status=done&sort=score&order=desc").json()
    assert [s["score"] for s in scored] == sorted((s["score"] for s in scored), reverse=True)
    assert [s["id"] for s in rad.client.get("/api/studies?q=volume").json()] == [ids[2]]
    page = rad.client.get("/?status=done&sort=score")
    assert page.status_code == 200 and "normal.png" in page.text and "volume.nii.gz" not in page.text


def test_demo_workstation_has_users_and_queued_studies(model_dir, lesion_png, normal_png, tmp_path) -> None:
    from medanomaly.service.demo import DEMO_USERS, prepare_demo

    app = prepare_demo(tmp_path / "demo-output", model_dir, [lesion_png, normal_png], size=32)
    session = login_as(app, "radiologist", DEMO_USERS["radiologist"][0])
    listing = session.get("/api/studies?sort=id&order=asc").json()
    assert [s["original_name"] for s in listing] == ["lesion.png", "normal.png", "phantom_volume.nii.gz"]
    assert {s["status"] for s in listing} == {"queued"} and listing[2]["n_slices"] == 16
    assert app.state.jobs.run_pending() == 3


def login_as(app, username: str, password: str):
    from fastapi.testclient import TestClient

    client = TestClient(app)
    assert client.post("/api/auth/login", json={"username": username, "password": password}).status_code == 200
    return client


def test_model_problem_banner_names_server_folders_to_admins_only(app, rad, admin) -> None:
    app.state.store.errors["chest"] = "/srv/secret/models/chest: model directory not found"
    try:
        assert "/srv/secret" not in rad.client.get("/").text
        assert "ask an administrator" in rad.client.get("/").text
        assert "/srv/secret/models/chest" in admin.client.get("/").text
    finally:
        app.state.store.errors.pop("chest")

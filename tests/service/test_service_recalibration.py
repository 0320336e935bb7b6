"""Recalibration that cannot hurt silently: minimum of labels, held-out before/after, inactive versions, activation,
rollback, discard, rescoring that keeps the history and opinions attached to the result they judged."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the workstation tests need the 'service' extra")

from service_helpers import label_studies, login, phantom_png

from medanomaly.cli.main import main
from medanomaly.model import Model
from medanomaly.service.versions import cross_validated_point
from medanomaly.thresholds import Threshold


def _versions(session) -> dict[int, dict]:
    return {v["version"]: v for v in session.client.get("/api/models").json()}


def _delete(session, version: int) -> int:
    url = f"/api/models/chest/versions/{version}"
    return session.client.delete(url, headers={"X-CSRF-Token": session.csrf}).status_code


def _scored_by(app: Any, session, path: Path) -> int:
    study_id = session.upload(path).json()["id"]
    app.state.jobs.run_pending()
    return session.client.get(f"/api/studies/{study_id}/result").json()["model"]["version"]


def test_cross_validation_measures_on_cases_not_fitted() -> None:
    labels = np.array([0] * 6 + [1] * 6)
    scores = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.9, 0.6, 0.7, 0.8, 0.95, 1.0, 1.1])

    def highest_normal(y: np.ndarray, s: np.ndarray) -> float:  # memorises its training normals
        return float(s[y == 0].max())

    point = cross_validated_point(labels, scores, highest_normal, folds=3)
    assert point["threshold"] == pytest.approx(0.9) and point["n_folds"] == 3
    assert point["n_normal"] == 6 and point["n_abnormal"] == 6
    # in sample the rule never flags a normal; held out, the fold that holds 0.9 flags it (fitted cut 0.5 there)
    assert point["specificity"] == pytest.approx(5 / 6)
    with pytest.raises(ValueError, match="at least 2"):
        cross_validated_point(labels[5:], scores[5:], highest_normal)


def test_too_few_labelled_cases_are_refused(app, tmp_path) -> None:
    label_studies(app, tmp_path, 3)
    response = login(app, "admin").post("/api/models/chest/recalibrate", json={"method": "youden"})
    assert response.status_code == 422
    assert "3 normal and 3 abnormal, at least 10 of each" in response.json()["detail"]
    assert not (app.state.store.base_dir("chest") / "versions").exists()


def test_new_version_starts_inactive_then_activation_and_rollback(app_factory, model_dir, tmp_path) -> None:
    app = app_factory(recalibration_min_per_class=3, recalibration_folds=3)
    label_studies(app, tmp_path, 4)
    admin, rad = login(app, "admin"), login(app, "rad")
    assert rad.post("/api/models/chest/recalibrate", json={"method": "youden"}).status_code == 403
    response = admin.post("/api/models/chest/recalibrate", json={"method": "youden"})
    assert response.status_code == 201, response.text
    proposed = response.json()
    assert proposed["version"] == 2 and proposed["active"] is False and proposed["threshold_method"] == "youden"
    details = proposed["recalibration"]
    assert details["n_cases"] == 8 and details["from_version"] == 1
    assert details["after"]["validation"] == "stratified 3-fold cross-validation"
    assert details["after"]["n_normal"] == 4 and details["after"]["n_abnormal"] == 4
    assert details["after"]["threshold"] == pytest.approx(proposed["threshold"])
    assert Model.load(model_dir / "versions" / "v2").threshold.value == pytest.approx(proposed["threshold"])
    assert {v: row["active"] for v, row in _versions(rad).items()} == {1: True, 2: False}
    new_png = phantom_png(tmp_path / "up" / "new.png", lesion=True, seed=99)
    assert _scored_by(app, rad, new_png) == 1  # proposed, not active: nothing changes yet

    page = admin.client.get("/admin").text
    assert "proposed" in page and "stratified 3-fold cross-validation" in page and "Activate v2" in page
    body = {"accept_drop": True}
    assert rad.post("/api/models/chest/versions/2/activate", json=body).status_code == 403
    activated = admin.post("/api/models/chest/versions/2/activate", json=body)
    assert activated.status_code == 200 and activated.json()["active"] and activated.json()["activated_by"] == "admin"
    assert {v: row["active"] for v, row in _versions(rad).items()} == {1: False, 2: True}
    assert _scored_by(app, rad, new_png) == 2

    assert admin.post("/api/models/chest/versions/1/activate", json={}).status_code == 200  # rollback
    assert {v: row["active"] for v, row in _versions(rad).items()} == {1: True, 2: False}
    assert _scored_by(app, rad, new_png) == 1
    assert "Roll back to v2" in admin.client.get("/admin").text
    events = admin.client.get("/api/audit?action=model.activate").json()
    assert [(e["detail"]["version"], e["detail"]["from_version"]) for e in events] == [(1, 2), (2, 1)]
    assert admin.post("/api/models/chest/versions/7/activate", json={}).status_code == 404
    assert _delete(admin, 2) == 409  # was active: kept


def test_a_sensitivity_drop_needs_confirmation(app, admin) -> None:
    from medanomaly.service.versions import propose_version

    store = app.state.store
    with app.state.session_factory() as db:
        current = store.active(db, "chest")
        model = store.load(current).with_threshold(Threshold(value=1e9, method="fixed"))
        point = lambda sensitivity: {"sensitivity": sensitivity, "specificity": 1.0}  # noqa: E731
        propose_version(db, store, current, model, {"before": point(0.62), "after": point(0.38)}, user=None,
                        actor="test")
    refused = admin.post("/api/models/chest/versions/2/activate", json={})
    assert refused.status_code == 409 and "from 62 % to 38 %" in refused.json()["detail"]
    page = admin.client.get("/admin").text
    assert "Sensitivity drops from 62 % to 38 %" in page and "I accept the lower sensitivity" in page
    assert admin.post("/api/models/chest/versions/2/activate", json={"accept_drop": True}).status_code == 200
    assert admin.client.get("/api/audit?action=model.activate").json()[0]["detail"]["accepted_drop"] is True


def test_discard_removes_a_proposed_version_only(app_factory, model_dir, tmp_path) -> None:
    app = app_factory(recalibration_min_per_class=3, recalibration_folds=3)
    label_studies(app, tmp_path, 3)
    admin = login(app, "admin")
    assert admin.post("/api/models/chest/recalibrate", json={"method": "keep"}).status_code == 201
    assert (model_dir / "versions" / "v2").is_dir()
    assert _delete(admin, 1) == 409  # the trained model stays
    assert _delete(admin, 2) == 204
    assert not (model_dir / "versions" / "v2").exists() and list(_versions(admin)) == [1]
    assert admin.client.get("/api/audit?action=model.discard").json()[0]["detail"]["version"] == 2
    again = admin.post("/api/models/chest/recalibrate", json={"method": "f1"}).json()
    assert again["version"] == 2 and again["threshold_method"] == "f1"


def test_rescoring_keeps_history_and_opinions_stay_with_their_result(app, admin, rad, lesion_png) -> None:
    from medanomaly.service.versions import activate_version, propose_version

    study_id = rad.upload(lesion_png).json()["id"]
    app.state.jobs.run_pending()
    first = rad.client.get(f"/api/studies/{study_id}/result").json()
    assert rad.post(f"/api/studies/{study_id}/opinions", json={"agrees": True, "label": "LESION"}).status_code == 201
    store = app.state.store
    with app.state.session_factory() as db:
        current = store.active(db, "chest")
        model = store.load(current).with_threshold(Threshold(value=first["threshold"] * 2, method="fixed"))
        propose_version(db, store, current, model, {}, user=None, actor="test")
        activate_version(db, "chest", 2, user=None, actor="test")
    assert rad.post(f"/api/studies/{study_id}/rescore").status_code == 202
    app.state.jobs.run_pending()
    history = rad.client.get(f"/api/studies/{study_id}/results").json()
    assert [(r["model_version"], r["latest"]) for r in history] == [(2, True), (1, False)]
    assert history[0]["opinions"] == [] and [o["label"] for o in history[1]["opinions"]] == ["LESION"]
    assert history[1]["score"] == pytest.approx(first["score"]) and history[0]["threshold"] != first["threshold"]
    study = rad.client.get(f"/api/studies/{study_id}").json()
    assert study["model_version"] == 2 and study["opinion"] is None  # the v1 opinion is not shown beside v2
    assert rad.post(f"/api/studies/{study_id}/rescore").status_code == 202  # same version twice: both kept
    app.state.jobs.run_pending()
    assert len(rad.client.get(f"/api/studies/{study_id}/results").json()) == 3
    arrays = sorted((app.state.settings.data_dir / "studies").glob("*/result-v*.npz"))
    assert len(arrays) == 3
    page = rad.client.get(f"/studies/{study_id}").text
    assert 'id="result-history"' in page and "chest v1" in page and "LESION" in page


def test_cli_proposes_then_activates(app_factory, model_dir, tmp_path, capsys, monkeypatch) -> None:
    app = app_factory()
    label_studies(app, tmp_path, 3)
    data_dir = str(app.state.settings.data_dir)
    monkeypatch.setenv("MEDANOMALY_RECALIBRATION_MIN_PER_CLASS", "3")
    capsys.readouterr()
    assert main(["recalibrate", "--model", f"chest={model_dir}", "--data-dir", data_dir, "--calibrate", "f1"]) == 0
    printed = capsys.readouterr().out
    assert "chest v1 -> v2" in printed and "inactive" in printed and "--activate 2" in printed
    assert main(["recalibrate", "--model", f"chest={model_dir}", "--data-dir", data_dir, "--activate", "2",
                 "--accept-drop"]) == 0
    assert "chest v2 is now active" in capsys.readouterr().out
    assert {v: row["active"] for v, row in _versions(login(app, "rad")).items()} == {1: False, 2: True}


def test_migration_keeps_the_served_version_active(tmp_path) -> None:
    import sqlalchemy as sa
    from alembic import command

    from medanomaly.service.db import make_engine
    from medanomaly.service.db.session import alembic_config

    url = f"sqlite:///{tmp_path / 'old.db'}"
    config = alembic_config(url)
    command.upgrade(config, "0003_login_security")
    engine = make_engine(url)
    with engine.begin() as connection:
        for name, version in (("chest", 1), ("chest", 2), ("brain", 1)):
            connection.execute(sa.text("INSERT INTO model_versions (name, version, path, method, created_at) "
                                       "VALUES (:n, :v, '/m', 'conv_ae', '2026-01-01')"), {"n": name, "v": version})
    command.upgrade(config, "0004_versions_triage")
    with engine.connect() as connection:
        rows = connection.execute(sa.text("SELECT name, version, active FROM model_versions ORDER BY name, version"))
        assert [tuple(row) for row in rows] == [("brain", 1, 1), ("chest", 1, 0), ("chest", 2, 1)]
    command.downgrade(config, "0003_login_security")
    with engine.connect() as connection:
        assert "active" not in {c["name"] for c in sa.inspect(connection).get_columns("model_versions")}

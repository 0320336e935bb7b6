"""The feedback loop: opinions -> labelled data set (export) and a recalibrated version from the CLI (the safeguards
of recalibration are tested in test_service_recalibration.py)."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the workstation tests need the 'service' extra")

from service_helpers import login, make_settings, phantom_png

from medanomaly.cli.main import main
from medanomaly.data.datasets import load_index
from medanomaly.model import Model


def _label_studies(app, tmp_path: Path) -> list[int]:
    """Upload 3 normal and 3 lesion phantoms, score them, and label each one as a radiologist would."""
    rad = login(app, "rad")
    ids, truth = [], []
    for index in range(6):
        lesion = index >= 3
        path = phantom_png(tmp_path / "up" / f"case{index}.png", lesion=lesion, seed=40 + index, radius=(0.1, 0.13))
        ids.append(rad.upload(path).json()["id"])
        truth.append(lesion)
    app.state.jobs.run_pending()
    for study_id, lesion in zip(ids, truth, strict=True):
        result = rad.client.get(f"/api/studies/{study_id}/result").json()
        agrees = result["abnormal"] == lesion
        label = "LESION" if lesion else "NORMAL"
        response = rad.post(f"/api/studies/{study_id}/opinions", json={"agrees": agrees, "label": label})
        assert response.status_code == 201
    return ids


def test_feedback_export_and_cli_recalibration(app, model_dir, tmp_path, capsys, monkeypatch) -> None:
    _label_studies(app, tmp_path)
    monkeypatch.setenv("MEDANOMALY_RECALIBRATION_MIN_PER_CLASS", "3")  # the tests in test_service_recalibration.py
    data_dir = str(app.state.settings.data_dir)
    out = tmp_path / "feedback-set"
    assert main(["feedback", "export", str(out), "--data-dir", data_dir]) == 0
    index = load_index(out)
    assert index.normal_label == "NORMAL" and sorted(index.labels) == ["LESION", "NORMAL"]
    assert len(index.select(label="NORMAL")) == 3 and len(index.select(label="LESION")) == 3
    assert all(sample.path.is_file() for sample in index.samples)
    assert "case" not in "".join(p.name for p in out.rglob("*.png"))  # files are named by uid, not upload name
    capsys.readouterr()
    argv = ["recalibrate", "--model", f"chest={model_dir}", "--data-dir", data_dir,
            "--calibrate", "f1"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "chest v1 -> v2" in printed and "sensitivity" in printed
    assert Model.load(model_dir / "versions" / "v2").threshold.method == "f1"
    assert main(["evaluate", str(out), "--model", str(model_dir / "versions" / "v2")]) == 0


def test_users_cli_creates_the_first_admin(app_factory, tmp_path, monkeypatch, capsys) -> None:
    data_dir = str(tmp_path / "fresh")
    monkeypatch.setattr(sys, "stdin", io.StringIO("a-strong-password\n"))
    assert main(["users", "add", "chief", "--admin", "--password-stdin", "--data-dir", data_dir]) == 0
    monkeypatch.setattr(sys, "stdin", io.StringIO("short\n"))
    assert main(["users", "add", "other", "--password-stdin", "--data-dir", data_dir]) == 2
    assert "too short" in capsys.readouterr().err
    monkeypatch.setattr(sys, "stdin", io.StringIO("another-password\n"))
    assert main(["users", "add", "chief", "--password-stdin", "--data-dir", data_dir]) == 2
    assert main(["users", "list", "--data-dir", data_dir]) == 0
    assert "chief" in capsys.readouterr().out
    from fastapi.testclient import TestClient

    from medanomaly.service.app import create_app

    client = TestClient(create_app(make_settings(Path(data_dir), ())))
    response = client.post("/api/auth/login", json={"username": "chief", "password": "a-strong-password"})
    assert response.status_code == 200 and response.json()["user"]["role"] == "admin"
    monkeypatch.setattr(sys, "stdin", io.StringIO("changed-password\n"))
    assert main(["users", "passwd", "chief", "--password-stdin", "--data-dir", data_dir]) == 0
    assert client.get("/api/me").status_code == 401  # a password change ends the sessions

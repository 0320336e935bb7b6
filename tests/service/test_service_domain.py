"""The workstation honours the model's domain: an out-of-domain upload is stored and shown without a decision."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the workstation tests need the 'service' extra")
from PIL import Image


@pytest.fixture
def app(app_factory, domain_model_dir: Path):
    """An app whose model keeps the domain it was trained on (8-bit PNG chest-like phantoms)."""
    return app_factory(model_dirs=(str(domain_model_dir),))


@pytest.fixture
def blank_png(tmp_path: Path) -> Path:
    path = tmp_path / "in" / "blank.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(path)
    return path


def test_out_of_domain_upload_gets_no_decision(app, rad, blank_png: Path, lesion_png: Path) -> None:
    study_id = rad.upload(blank_png).json()["id"]
    decided_id = rad.upload(lesion_png).json()["id"]
    assert app.state.jobs.run_pending() == 2
    status = rad.client.get(f"/api/studies/{study_id}").json()
    assert status["status"] == "done" and status["result_status"] == "out_of_domain"
    assert status["decision"] == "OUT OF DOMAIN" and status["abnormal"] is None and status["score"] is None
    result = rad.client.get(f"/api/studies/{study_id}/result").json()
    assert result["status"] == "out_of_domain" and result["abnormal"] is None and result["score"] is None
    assert result["domain_reason"] == "blank or constant image" and result["domain"]["known"] is True
    assert result["summary"] == "OUT OF DOMAIN — no decision: blank or constant image"
    assert result["slice_scores"] == [] and result["findings"] == []
    assert rad.client.get(f"/api/studies/{study_id}/slices/0/image.png").status_code == 200

    def listed(decision: str) -> set[int]:
        return {s["id"] for s in rad.client.get(f"/api/studies?decision={decision}").json()}

    assert listed("out_of_domain") == {study_id}
    assert study_id not in listed("normal") | listed("abnormal") | listed("none") and decided_id not in listed("none")
    worklist = rad.client.get("/?decision=out_of_domain").text
    assert "badge out-of-domain" in worklist and "OUT OF DOMAIN" in worklist
    page = rad.client.get(f"/studies/{study_id}").text
    assert 'data-status="out_of_domain"' in page and "no decision: blank or constant image" in page
    assert '<dd id="trained-on">unknown modality</dd>' in page  # PNG phantoms, no --modality given
    assert '<option value="OUT OF DOMAIN"' not in page and ">OUT OF DOMAIN</option>" not in page
    report = rad.client.get(f"/studies/{study_id}/report").text
    assert "banner out-of-domain" in report and "Out of domain: blank or constant image" in report
    pdf = rad.client.get(f"/api/studies/{study_id}/report.pdf")
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")


def test_ct_and_colour_uploads_are_out_of_domain(app, rad, dicom_file: Path, tmp_path: Path) -> None:
    rgb = tmp_path / "in" / "frame.png"
    Image.fromarray((np.random.default_rng(0).random((40, 40, 3)) * 255).astype(np.uint8)).save(rgb)
    ids = [rad.upload(path).json()["id"] for path in (dicom_file, rgb)]
    app.state.jobs.run_pending()
    results = [rad.client.get(f"/api/studies/{study_id}/result").json() for study_id in ids]
    assert [r["status"] for r in results] == ["out_of_domain", "out_of_domain"]
    assert all(r["abnormal"] is None and r["decision"] == "OUT OF DOMAIN" for r in results)
    assert "colour image" in results[1]["domain_reason"]


def test_opinion_on_an_out_of_domain_result_needs_a_label(app, rad, blank_png: Path) -> None:
    study_id = rad.upload(blank_png).json()["id"]
    app.state.jobs.run_pending()
    assert rad.post(f"/api/studies/{study_id}/opinions", json={"agrees": True}).status_code == 422
    own = rad.post(f"/api/studies/{study_id}/opinions", json={"agrees": False, "label": "NORMAL"})
    assert own.status_code == 201 and own.json()["abnormal"] is False

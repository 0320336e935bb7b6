"""Retraining a served model from the radiologists' feedback as a workstation job (API, runner, recovery)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="the workstation tests need the 'service' extra")

from service_helpers import label_studies, login

from medanomaly.model import Model


def _run_retraining(app: Any, epochs: int = 1) -> tuple[Any, dict]:
    """Start a retraining of ``chest`` as the admin, run it here; (admin session, the finished job)."""
    admin = login(app, "admin")
    job = admin.post("/api/models/chest/retrain", json={"epochs": epochs}).json()
    app.state.retraining.run_pending()
    done = admin.client.get(f"/api/retraining/{job['id']}").json()
    assert done["status"] == "done", done["error"]
    return admin, done


def _versions(session: Any) -> dict[int, dict]:
    return {v["version"]: v for v in session.client.get("/api/models").json()}


@pytest.fixture(scope="module")
def patchcore_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny PatchCore trained on 24 normal 32 px phantoms."""
    from medanomaly.data.synthetic import write_phantom_dataset
    from medanomaly.fitting import FitOptions, train_model
    from medanomaly.model import Postprocessing
    from medanomaly.training import TrainConfig
    from medanomaly.transforms import Preprocessing

    data = write_phantom_dataset(tmp_path_factory.mktemp("svc-rt-data"), n_train=24, n_test_normal=1,
                                 n_test_abnormal=1, size=32, seed=3)
    options = FitOptions(
        params={"backbone": "tiny", "coreset_ratio": 0.25, "runtime": "torch"},
        preprocessing=Preprocessing(resolution=32, normalize="minmax"),
        postprocessing=Postprocessing(median_size=3),
        train=TrainConfig(batch_size=64, progress=False),
        progress=False,
    )
    out = tmp_path_factory.mktemp("svc-rt-pc") / "chest"
    train_model(data, "patchcore", out, options)
    return out


def test_conv_ae_retraining_job_proposes_an_inactive_version(app, tmp_path: Path) -> None:
    label_studies(app, tmp_path, 4)
    admin = login(app, "admin")
    response = admin.post("/api/models/chest/retrain", json={"epochs": 2})
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["status"] == "queued" and job["from_version"] == 1 and job["options"]["epochs"] == 2
    assert admin.post("/api/models/chest/retrain", json={}).status_code == 422  # one at a time
    assert app.state.retraining.run_pending() == 1
    done = admin.client.get(f"/api/retraining/{job['id']}").json()
    assert done["status"] == "done", done["error"]
    assert done["progress"] == 1.0 and done["new_version"] == 2
    assert done["summary"]["mode"].startswith("fine-tune (2 epochs") and done["summary"]["n_feedback_normal"] == 3
    versions = _versions(admin)
    assert versions[1]["active"] and not versions[2]["active"]  # proposed, not active
    details = versions[2]["recalibration"]
    assert details["kind"] == "retrain" and details["from_version"] == 1 and details["n_cases"] == 2
    assert details["after"]["n_normal"] == 1 and details["after"]["n_abnormal"] == 1
    assert "held out from the retraining" in details["after"]["validation"]
    saved = Model.load(app.state.store.next_version_dir("chest", 2))
    assert saved.version == 2 and saved.info["retraining"]["original_data"]["reachable"]
    assert len(saved.info["retraining"]["feedback"]["held_out"]) == 2
    assert all(key.startswith("study:") for key in saved.info["retraining"]["feedback"]["held_out"])
    actions = [row["action"] for row in admin.client.get("/api/audit").json()]
    assert "model.retrain.start" in actions and "model.retrain" in actions


def test_patchcore_refit_job(app_factory, patchcore_dir: Path, tmp_path: Path) -> None:
    model = Path(shutil.copytree(patchcore_dir, tmp_path / "patchcore" / "chest"))
    app = app_factory(model_dirs=(str(model),))
    label_studies(app, tmp_path, 3)
    admin, done = _run_retraining(app)
    assert done["summary"]["mode"] == "refit" and done["new_version"] == 2
    new = Model.load(model / "versions" / "v2")
    assert new.info["n_train_normal"] == Model.load(model).info["n_train_normal"] + 2
    assert not _versions(admin)[2]["active"]


def test_unreachable_training_data_is_said(app_factory, model_dir: Path, tmp_path: Path) -> None:
    config = json.loads((model_dir / "model.json").read_text())
    config["info"]["data"] = str(tmp_path / "moved-away")
    (model_dir / "model.json").write_text(json.dumps(config))
    app = app_factory()
    label_studies(app, tmp_path, 3)
    _, done = _run_retraining(app)
    assert "feedback alone" in done["summary"]["note"]


def test_refusals(app, tmp_path: Path) -> None:
    label_studies(app, tmp_path, 1)
    admin, rad = login(app, "admin"), login(app, "rad")
    assert rad.post("/api/models/chest/retrain", json={}).status_code == 403
    assert admin.post("/api/models/nope/retrain", json={}).status_code == 404
    assert admin.post("/api/models/chest/retrain", json={"epochs": 0}).status_code == 422
    response = admin.post("/api/models/chest/retrain", json={})
    assert response.status_code == 422 and "at least 2 studies confirmed normal" in response.json()["detail"]
    assert admin.client.get("/api/retraining").json() == []


def test_a_job_cut_by_a_restart_is_marked_failed(app_factory, tmp_path: Path) -> None:
    app = app_factory()
    label_studies(app, tmp_path, 2)
    admin = login(app, "admin")
    job = admin.post("/api/models/chest/retrain", json={"epochs": 1}).json()
    app.state.retraining._claim()  # running, as when the process dies mid-training
    restarted = app_factory()
    failed = login(restarted, "admin").client.get(f"/api/retraining/{job['id']}").json()
    assert failed["status"] == "failed" and "restart" in failed["error"]


def test_two_simultaneous_starts_queue_one_job(app, tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    label_studies(app, tmp_path, 2)
    admins = [login(app, "admin") for _ in range(4)]
    with ThreadPoolExecutor(4) as pool:
        codes = list(pool.map(lambda s: s.post("/api/models/chest/retrain", json={"epochs": 1}).status_code, admins))
    assert sorted(codes) == [202, 422, 422, 422], codes  # one queued; the others told a retraining is open
    assert len(admins[0].client.get("/api/retraining").json()) == 1

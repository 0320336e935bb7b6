"""The service's public API for results scored elsewhere (the PACS link): stored like the worker's own results."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the workstation tests need the 'service' extra")

from medanomaly.io import read_study
from medanomaly.model import Model
from medanomaly.pipeline import score_study
from medanomaly.service.api import ResultStore, data_dir_for
from medanomaly.service.studies import query_studies


def test_scored_study_is_stored_once_per_model_version(service_model_dir: Path, lesion_png: Path, tmp_path) -> None:
    model = Model.load(service_model_dir)
    model.info["path"] = str(service_model_dir)
    raw = read_study(lesion_png)
    raw.meta["study_uid"] = "1.2.3"
    result = score_study(model, raw, ignore_domain=True)  # storage is under test, not the domain check
    store = ResultStore(f"sqlite:///{tmp_path / 'service' / 'db.sqlite'}")
    assert store.data_dir == tmp_path / "service"
    assert store.add_scored_study(model, raw, result, lesion_png, "PACS series 9", actor="pacs")
    assert not store.add_scored_study(model, raw, result, lesion_png, "PACS series 9", actor="pacs")
    with store.sessions() as db:
        (row,) = db.scalars(query_studies()).all()
        assert (row.status, row.study_instance_uid, row.original_name) == ("done", "1.2.3", "PACS series 9")
        assert row.result.score == pytest.approx(result.score)
        assert (store.data_dir / row.input_path).read_bytes() == lesion_png.read_bytes()
        assert (store.data_dir / row.result.arrays_path).is_file()
        assert row.result.model_version.created_by == "pacs"


def test_data_dir_needs_a_sqlite_file_or_the_environment(monkeypatch) -> None:
    monkeypatch.delenv("MEDANOMALY_DATA_DIR", raising=False)
    with pytest.raises(ValueError, match="MEDANOMALY_DATA_DIR"):
        data_dir_for("postgresql://host/db")
    monkeypatch.setenv("MEDANOMALY_DATA_DIR", "/srv/medanomaly")
    assert data_dir_for("postgresql://host/db") == Path("/srv/medanomaly")

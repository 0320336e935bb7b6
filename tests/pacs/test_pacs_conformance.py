"""Every result object type passes dciodvfy, declares its character set, keeps the patient's names and study
attributes, reads back with highdicom, and carries the configured UID root; superseded results are named in a KOS.

dciodvfy comes from the Debian package ``dicom3tools`` (``.ci/run`` installs it; under CI a missing one fails).
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
from pathlib import Path

import highdicom as hd
import pydicom
import pytest
from pydicom.sr.codedict import codes

from medanomaly.io import read_study
from medanomaly.model import Model
from medanomaly.pacs.identity import CHARACTER_SET
from medanomaly.pacs.outbox import Outbox
from medanomaly.pacs.reject import build_rejection
from medanomaly.pacs.sync import build_results, result_context, source_headers
from medanomaly.pipeline import score_study

NAMES = {"latin1": ("ISO_IR 100", "Müller^Anna"), "utf8": ("ISO_IR 192", "山田^太郎")}
UID_ROOT = "1.2.826.0.1.3680043.10.999"


def _dciodvfy() -> str:
    found = shutil.which("dciodvfy")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("dciodvfy is missing (apt-get install dicom3tools)")
        pytest.skip("dciodvfy is not installed (apt-get install dicom3tools)")
    return found


def _errors(tool: str, path: Path) -> list[str]:
    """dciodvfy's error lines for one file."""
    run = subprocess.run([tool, "-new", str(path)], capture_output=True, text=True, check=False, timeout=60)
    return [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")]


def _results(model_dir: Path, datasets: list[pydicom.Dataset], folder: Path) -> tuple[list, object]:
    """Score the written series and build every result object (region threshold at the 99th map percentile so
    that there are findings, SEG pixels and a heat-map to write)."""
    folder.mkdir(parents=True, exist_ok=True)
    for ds in datasets:
        ds.save_as(folder / f"{ds.SOPInstanceUID}.dcm", enforce_file_format=True)
    path = folder if len(datasets) > 1 else next(folder.iterdir())
    model = Model.load(model_dir)
    study = read_study(path)
    model = model.with_postprocessing(region_threshold=float(score_study(model, study).anomaly_maps.max() * 0.5))
    result = score_study(model, study)
    context = result_context(model, result, source_headers(study, path), UID_ROOT)
    return build_results(model, result, list(context.sources), context=context)[0], context


@pytest.fixture(scope="module")
def objects(pacs_model_dir, make_dx, make_ct, tmp_path_factory) -> dict[str, list[tuple[str, pydicom.Dataset]]]:
    found = {}
    for name, (charset, patient) in NAMES.items():
        dx = make_dx(seed=5)
        dx[0].SpecificCharacterSet, dx[0].PatientName = charset, patient
        dx[0].IssuerOfPatientID, dx[0].StudyDescription = "HOSPITAL-A", "Thorax p.a."
        found[f"dx-{name}"] = _results(pacs_model_dir, dx, tmp_path_factory.mktemp(name))
    found["ct"] = _results(pacs_model_dir, make_ct(seed=6, n_slices=4), tmp_path_factory.mktemp("ct"))
    return found


def test_every_object_type_passes_dciodvfy(objects, tmp_path) -> None:
    tool = _dciodvfy()
    checked = set()
    for name, (results, context) in objects.items():
        sent = Outbox(tmp_path / name)
        items = [(sent.add(ds, kind), ds.SOPClassUID) for kind, ds in results]
        results = [*results, ("ko", build_rejection(context, items))]
        for index, (kind, dataset) in enumerate(results):
            path = tmp_path / f"{name}-{kind}-{index}.dcm"
            dataset.save_as(path, enforce_file_format=True)
            assert _errors(tool, path) == [], (name, kind)
            checked.add(kind)
    assert checked >= {"sr", "seg", "sc", "ko"} | ({"pdf"} if _has_reportlab() else set())


def _has_reportlab() -> bool:
    try:
        import reportlab  # noqa: F401
    except ImportError:
        return False
    return True


def test_names_and_study_attributes_survive_in_every_object(objects, tmp_path) -> None:
    for name, (_, patient) in NAMES.items():
        for kind, dataset in objects[f"dx-{name}"][0]:
            path = tmp_path / f"{name}-{kind}.dcm"
            dataset.save_as(path, enforce_file_format=True)
            back = pydicom.dcmread(path)
            assert back.SpecificCharacterSet == CHARACTER_SET, kind
            assert str(back.PatientName) == patient, kind
            assert (back.IssuerOfPatientID, back.StudyDescription) == ("HOSPITAL-A", "Thorax p.a."), kind
            assert back.SOPInstanceUID.startswith(UID_ROOT + ".") and back.SeriesInstanceUID.startswith(UID_ROOT)
            assert "conv_ae v1" in back.SeriesDescription, kind


def test_objects_read_back_with_highdicom(objects, tmp_path) -> None:
    for name in ("dx-utf8", "ct"):
        by_kind = dict(objects[name][0])
        for kind in ("sr", "seg"):
            by_kind[kind].save_as(tmp_path / f"{name}-{kind}.dcm", enforce_file_format=True)
        sr = hd.sr.srread(tmp_path / f"{name}-sr.dcm")
        assert sr.content.get_image_measurement_groups()
        seg = hd.seg.segread(tmp_path / f"{name}-seg.dcm")  # the DX SEG too
        assert seg.number_of_segments == 1 and seg.get_source_image_uids()


def test_sr_algorithm_parameters_carry_their_values(objects, sr_items) -> None:
    sr = dict(objects["ct"][0])["sr"]
    values = {
        item.TextValue
        for item in sr_items(sr)
        if item.ValueType == "TEXT" and item.ConceptNameCodeSequence[0].CodeMeaning == "Algorithm Parameters"
    }
    assert {v.split("=")[0] for v in values} >= {"threshold", "method", "model"}
    assert all(v.split("=", 1)[1] for v in values)


def test_rejection_kos_names_the_superseded_objects(objects, tmp_path) -> None:
    results, context = objects["ct"]
    outbox = Outbox(tmp_path)
    items = [(outbox.add(ds, kind), ds.SOPClassUID) for kind, ds in results]
    kos = build_rejection(context, items)
    assert kos.ConceptNameCodeSequence[0].CodeValue == codes.DCM.RejectedForQualityReasons.value
    assert kos.StudyInstanceUID == context.first.StudyInstanceUID
    named = {
        i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID for i in kos.ContentSequence if "ReferencedSOPSequence" in i
    }
    assert named == {ds.SOPInstanceUID for _, ds in results}


def test_out_of_domain_study_gets_an_sr_without_a_decision(pacs_model_dir, make_ct, tmp_path, sr_items) -> None:
    results, context = _results(pacs_model_dir, make_ct(seed=7, n_slices=3), tmp_path / "ct")
    model = Model.load(pacs_model_dir)
    study = read_study(tmp_path / "ct")
    outside = copy.copy(score_study(model, study))
    outside.status, outside.domain_reason = "out_of_domain", "CT, HEAD; this model was trained on DX/CR CHEST"
    outside.score, outside.abnormal, outside.anomaly_maps, outside.findings = float("nan"), None, None, []
    objects, notes = build_results(model, outside, list(context.sources), context=context)
    assert [kind for kind, _ in objects] == ["sr"] and "out of the model's domain" in notes[0]
    sr = hd.sr.Comprehensive3DSR.from_dataset(objects[0][1])
    group = sr.content.get_image_measurement_groups()[0]
    assert [m.name.meaning for m in group.get_measurements()] == ["Threshold Value"]  # no score
    [evaluation] = group.get_qualitative_evaluations()
    assert evaluation.value.value == "out-of-domain" and evaluation.value.scheme_designator == "99MEDANOMALY"
    codes_used = {
        item.ConceptCodeSequence[0].CodeValue for item in sr_items(objects[0][1]) if "ConceptCodeSequence" in item
    }
    assert not codes_used & {codes.SCT.Normal.value, codes.SCT.Abnormal.value}
    texts = {item.TextValue for item in sr_items(objects[0][1]) if item.ValueType == "TEXT"}
    assert "out of domain=CT, HEAD; this model was trained on DX/CR CHEST" in texts
    if shutil.which("dciodvfy"):
        objects[0][1].save_as(tmp_path / "sr.dcm", enforce_file_format=True)
        assert _errors(_dciodvfy(), tmp_path / "sr.dcm") == []

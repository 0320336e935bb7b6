"""DICOM result writers (SR, SEG, Secondary Capture, Encapsulated PDF) on synthetic DX and CT studies, offline."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from medanomaly.io import read_study
from medanomaly.mapping import Finding
from medanomaly.model import Model
from medanomaly.pacs.capture import build_pdf, patient_orientation
from medanomaly.pacs.identity import ResultContext, to_source_box
from medanomaly.pacs.seg import anomaly_mask
from medanomaly.pacs.sync import build_results, source_headers
from medanomaly.pipeline import score_study
from medanomaly.transforms import Geometry


def _text_items(dataset: Dataset) -> dict[str, str]:
    """Concept meaning -> text value of every TEXT content item in an SR tree."""
    found = {}
    for item in dataset.get("ContentSequence", []):
        if item.ValueType == "TEXT":
            found[item.ConceptNameCodeSequence[0].CodeMeaning] = item.TextValue
        found.update(_text_items(item))
    return found


def _scored(model_dir: Path, folder: Path):
    """Score a written series; the finding threshold is set at the study's 99th map percentile so that the
    writers always have findings to write (this tests the writers, not the model)."""
    model = Model.load(model_dir)
    study = read_study(folder if len(list(folder.iterdir())) > 1 else next(folder.iterdir()))
    maps = score_study(model, study).anomaly_maps
    model = model.with_postprocessing(region_threshold=float(np.quantile(maps, 0.99)))
    result = score_study(model, study)
    sources = source_headers(study, folder if study.n_slices > 1 else Path(study.meta["path"]))
    datasets, notes = build_results(model, result, sources)
    by_kind: dict[str, list[Dataset]] = {}
    for kind, dataset in datasets:
        by_kind.setdefault(kind, []).append(dataset)
    return model, study, result, sources, by_kind, notes


@pytest.fixture(scope="module")
def ct(pacs_model_dir, make_ct, write_series, tmp_path_factory):
    return _scored(pacs_model_dir, write_series(make_ct(seed=1), tmp_path_factory.mktemp("ct") / "series"))


@pytest.fixture(scope="module")
def dx(pacs_model_dir, make_dx, write_series, tmp_path_factory):
    deidentified = make_dx(seed=2)
    del deidentified[0].PatientBirthDate, deidentified[0].StudyID  # Type 2 attributes often dropped
    return _scored(pacs_model_dir, write_series(deidentified, tmp_path_factory.mktemp("dx") / "series"))


def test_sr_holds_score_threshold_decision_algorithm_and_one_roi_per_finding(ct) -> None:
    model, study, result, sources, results, _ = ct
    sr = hd.sr.Comprehensive3DSR.from_dataset(results["sr"][0])
    assert sr.StudyInstanceUID == sources[0].StudyInstanceUID
    assert sr.SeriesInstanceUID != sources[0].SeriesInstanceUID
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence
    assert {item.ReferencedSOPInstanceUID for item in evidence} == set(study.meta["sop_uids"])
    group = sr.content.get_image_measurement_groups()[0]
    values = {m.name.meaning: m.value for m in group.get_measurements()}
    assert values["Anomaly score"] == pytest.approx(result.score, rel=1e-6)
    assert values["Threshold Value"] == pytest.approx(model.threshold.value, rel=1e-6)
    decision = group.get_qualitative_evaluations()[0].value
    assert decision == (codes.SCT.Abnormal if result.abnormal else codes.SCT.Normal)
    texts = _text_items(results["sr"][0])
    assert texts["Algorithm Name"] == "medanomaly conv_ae"
    assert texts["Algorithm Version"].endswith("model v1")
    rois = sr.content.get_planar_roi_measurement_groups()
    assert len(result.findings) >= 1
    assert len(rois) == len(result.findings)
    for roi, finding in zip(rois, result.findings, strict=True):
        referenced = roi.roi.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID
        assert referenced == study.meta["sop_uids"][finding.slice_index]
        polyline = roi.roi.value
        assert polyline[:, 0].max() <= sources[0].Columns and polyline[:, 1].max() <= sources[0].Rows
        assert np.array_equal(polyline[0], polyline[-1])


def test_seg_has_one_frame_per_source_slice_at_its_position(ct) -> None:
    model, study, result, sources, results, _ = ct
    seg = hd.seg.Segmentation.from_dataset(results["seg"][0])
    assert seg.StudyInstanceUID == sources[0].StudyInstanceUID and seg.SegmentationType == "BINARY"
    assert seg.SegmentSequence[0].SegmentLabel == "anomaly"
    assert int(seg.NumberOfFrames) == len(sources)
    expected = anomaly_mask(result, model.postprocessing.region_threshold)
    assert expected.any()
    index = {uid: i for i, uid in enumerate(study.meta["sop_uids"])}
    pixels = seg.pixel_array.reshape(len(sources), seg.Rows, seg.Columns)
    for frame, item in enumerate(seg.PerFrameFunctionalGroupsSequence):
        source_uid = item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        position = [float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient]
        assert position == [float(v) for v in sources[index[source_uid]].ImagePositionPatient]
        assert np.array_equal(pixels[frame].astype(bool), expected[index[source_uid]])


def test_dx_results_sit_on_the_radiograph_grid(dx) -> None:
    _, study, result, sources, results, _ = dx
    assert result.geometry.original_shape == (80, 64)
    seg = results["seg"][0]
    assert (int(seg.NumberOfFrames), seg.Rows, seg.Columns) == (1, 80, 64)
    source_uid = seg.PerFrameFunctionalGroupsSequence[0].DerivationImageSequence[0].SourceImageSequence[0]
    assert source_uid.ReferencedSOPInstanceUID == sources[0].SOPInstanceUID
    capture = results["sc"][0]
    assert (capture.Rows, capture.Columns, capture.SamplesPerPixel) == (80, 64, 3)
    assert capture.SOPClassUID == pydicom.uid.SecondaryCaptureImageStorage
    assert list(capture.PatientOrientation) == ["L", "F"]
    assert capture.SourceImageSequence[0].ReferencedSOPInstanceUID == sources[0].SOPInstanceUID
    assert capture.PatientID == "PHANTOM-1" and capture.StudyInstanceUID == sources[0].StudyInstanceUID
    assert "PatientBirthDate" in capture and not capture.PatientBirthDate  # present, empty
    assert "StudyID" in results["sr"][0] and not results["sr"][0].StudyID
    assert capture.pixel_array.std() > 0


def test_pdf_report_is_encapsulated_in_the_study(dx) -> None:
    pytest.importorskip("reportlab", reason="the PDF report builder needs reportlab")
    _, _, _, sources, results, notes = dx
    document = results["pdf"][0]
    assert document.SOPClassUID == pydicom.uid.EncapsulatedPDFStorage and document.Modality == "DOC"
    assert document.EncapsulatedDocument.startswith(b"%PDF")
    assert document.StudyInstanceUID == sources[0].StudyInstanceUID and document.PatientID == "PHANTOM-1"
    assert not any("PDF" in note for note in notes)
    with pytest.raises(ValueError, match="not a PDF"):
        build_pdf(b"<html>", ResultContext(tuple(sources), "conv_ae", 1))


def test_result_uids_are_deterministic_per_source_and_model_version(ct, pacs_model_dir) -> None:
    model, study, result, sources, results, _ = ct
    again, _ = build_results(model, score_study(model, study), sources, pdf=False)
    uids = {kind: ds.SOPInstanceUID for kind, ds in again}
    assert uids["sr"] == results["sr"][0].SOPInstanceUID and uids["seg"] == results["seg"][0].SOPInstanceUID
    newer = replace(result, model={**result.model, "version": 2})
    assert ResultContext.from_result(newer, sources).instance_uid("sr") != uids["sr"]


def test_finding_box_is_mapped_from_model_grid_to_source_pixels() -> None:
    geometry = Geometry(original_shape=(80, 64), resized_shape=(32, 26), offset=(0, 3), resolution=32)
    finding = Finding(0, (8, 3, 16, 16), (12.0, 9.5), 40, None, 0.5, 0.9)
    result = type("R", (), {"geometry": geometry})()
    row0, col0, row1, col1 = to_source_box(result, finding)  # type: ignore[arg-type]
    assert (row0, row1) == pytest.approx((20.0, 40.0))
    assert (col0, col1) == pytest.approx((0.0, 13 * 64 / 26))


def test_patient_orientation_follows_image_orientation() -> None:
    axial = Dataset()
    axial.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    sagittal = Dataset()
    sagittal.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
    assert patient_orientation(axial) == ("L", "P")
    assert patient_orientation(sagittal) == ("P", "F")
    assert patient_orientation(Dataset()) == ("L", "F")

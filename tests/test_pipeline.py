"""The scoring path on volumes: DICOM series and NIfTI through read -> preprocess -> score -> 3D map -> findings."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from medanomaly.data.datasets import Sample
from medanomaly.data.synthetic import make_phantom, make_phantom_volume
from medanomaly.evaluation.evaluate import evaluate_model
from medanomaly.fitting import calibrate_model
from medanomaly.io import read_study
from medanomaly.model import Model, Postprocessing
from medanomaly.pipeline import score_path, score_paths
from medanomaly.transforms import Preprocessing


@pytest.fixture(scope="module")
def model(fitted_conv_ae, tmp_path_factory) -> Model:
    normals = tmp_path_factory.mktemp("cal")
    rng = np.random.default_rng(5)
    samples = []
    for i in range(20):
        path = normals / f"n{i}.nii.gz"
        nib.save(nib.Nifti1Image(make_phantom(rng, 32)[0][..., None], np.eye(4)), path)
        samples.append(Sample(path, "NORMAL"))
    preprocessing = Preprocessing(resolution=32, normalize="none")
    model = Model(fitted_conv_ae, preprocessing, Postprocessing(median_size=3, score_from="map_topk"))
    return calibrate_model(model, [read_study(sample.path) for sample in samples])


def _volume(lesion: bool, seed: int) -> tuple[np.ndarray, np.ndarray]:
    return make_phantom_volume(np.random.default_rng(seed), n_slices=9, size=32, lesion=lesion)


def _write_series(folder: Path, volume: np.ndarray) -> Path:
    """CT series in HU (slope 1, intercept -1000) written in shuffled order; values in [0, 1] -> [-1000, 0]."""
    folder.mkdir(parents=True)
    study, series = generate_uid(), generate_uid()
    order = np.random.default_rng(0).permutation(len(volume))
    for index in order:
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = pydicom.uid.CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(folder / f"{index}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.StudyInstanceUID, ds.SeriesInstanceUID = "CT", study, series
        ds.PatientID, ds.InstanceNumber = "P1", int(len(volume) - index)  # reversed: position must win
        ds.ImagePositionPatient = [0.0, 0.0, float(index) * 2.5]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing, ds.SliceThickness = [0.7, 0.7], 2.5
        ds.Rows, ds.Columns = volume.shape[1:]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1000
        ds.PixelData = np.round(volume[index] * 1000).astype(np.uint16).tobytes()
        ds.save_as(folder / f"{index}.dcm", enforce_file_format=True)
    return folder


def test_evaluate_without_a_threshold_is_an_error(model, tmp_path) -> None:
    uncalibrated = Model(model.detector, model.preprocessing, model.postprocessing)
    with pytest.raises(ValueError, match="no calibrated threshold"):
        evaluate_model(uncalibrated, tmp_path, progress=False)


def test_dicom_series_scores_as_one_volume(model, tmp_path) -> None:
    volume, mask = _volume(lesion=True, seed=1)
    folder = _write_series(tmp_path / "series", volume)
    ct_model = Model(
        model.detector,
        Preprocessing(resolution=32, window="-500,1000"),
        model.postprocessing,
        model.threshold,
        model.info,
    )
    result = score_path(ct_model, folder)
    assert len(result.slice_scores) == 9
    lesion_slices = set(np.flatnonzero(mask.reshape(9, -1).any(1)))
    assert int(result.slice_scores.argmax()) in lesion_slices
    assert result.meta["modality"] == "CT"
    assert result.anomaly_maps.shape == (9, 32, 32)
    assert result.findings and result.findings[0].slice_index in lesion_slices
    assert result.findings[0].area_mm2 == pytest.approx(result.findings[0].area_px * 0.49, rel=1e-6)


def test_volume_score_aggregates_slices_and_beats_normal_volume(model, tmp_path) -> None:
    paths = []
    for name, lesion, seed in (("normal", False, 2), ("lesion", True, 3)):
        volume, _ = _volume(lesion, seed)
        paths.append(tmp_path / f"{name}.nii.gz")
        nib.save(nib.Nifti1Image(volume.transpose(1, 2, 0), np.diag([0.8, 0.8, 3.0, 1.0])), paths[-1])
    results, failures = score_paths(model, paths, progress=False)
    assert failures == []
    normal, lesion = results
    assert lesion.score > normal.score
    top = np.sort(lesion.slice_scores)[::-1][:1].mean()  # top 10 % of 9 slices = 1 slice
    assert lesion.score == pytest.approx(top)
    assert lesion.abnormal


def test_3d_filter_differs_from_per_slice_filter(model) -> None:
    volume, _ = _volume(lesion=True, seed=4)
    images = volume[:, None].astype(np.float32)
    import torch

    as_volume = model.score_images(torch.from_numpy(images), np.zeros(9, dtype=np.int64))[0]
    as_slices = model.score_images(torch.from_numpy(images))
    assert len(as_slices) == 9
    per_slice_maps = np.stack([s.anomaly_maps[0] for s in as_slices])
    assert not np.allclose(as_volume.anomaly_maps, per_slice_maps)


def test_scoring_a_volume_reports_progress_per_batch_and_the_same_result(model, tmp_path) -> None:
    from medanomaly.io import read_study
    from medanomaly.pipeline import score_study

    volume, _ = _volume(True, 4)
    path = tmp_path / "lesion.nii.gz"
    nib.save(nib.Nifti1Image(volume.transpose(1, 2, 0), np.diag([0.8, 0.8, 3.0, 1.0])), path)
    study = read_study(path)
    calls: list[tuple[int, int]] = []
    reported = score_study(model, study, progress=lambda done, total: calls.append((done, total)), batch_size=4)
    assert calls == [(4, 9), (8, 9), (9, 9)]
    np.testing.assert_allclose(reported.slice_scores, score_study(model, study).slice_scores, rtol=1e-5)

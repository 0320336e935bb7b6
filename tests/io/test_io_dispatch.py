from __future__ import annotations

import json
import logging

import nibabel as nib
import numpy as np
import pytest
from PIL import Image
from pydicom.uid import generate_uid

from medanomaly.errors import InputError
from medanomaly.io import find_studies, inspect_study, is_readable, read_study


def _png(path, value: int = 5) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((4, 4), value, np.uint8)).save(path)


def test_missing_path_error(tmp_path):
    with pytest.raises(InputError, match="no such file or folder") as info:
        read_study(tmp_path / "nope.png")
    assert str(info.value).startswith(str(tmp_path / "nope.png") + ": ")


def test_unknown_file_type_lists_supported(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match=r"unsupported file type \(\.txt\)") as info:
        read_study(tmp_path / "notes.txt")
    for name in ("PNG", "JPEG", "DICOM", "NIfTI"):
        assert name in info.value.hint


def test_folder_of_pngs_is_not_a_series(tmp_path):
    _png(tmp_path / "pngs" / "a.png")
    with pytest.raises(InputError, match="no readable DICOM images") as info:
        read_study(tmp_path / "pngs")
    assert "find_studies" in info.value.hint


def test_is_readable(tmp_path, ct_series, write_dicom):
    _png(tmp_path / "a.png")
    nib.save(nib.Nifti1Image(np.zeros((2, 2, 2), np.float32), np.eye(4)), str(tmp_path / "v.nii.gz"))
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "empty").mkdir()
    assert is_readable(tmp_path / "a.png")
    assert is_readable(tmp_path / "v.nii.gz")
    assert is_readable(ct_series.folder)
    assert is_readable(next(ct_series.folder.iterdir()))  # DICOM without extension
    assert not is_readable(tmp_path / "notes.txt")
    assert not is_readable(tmp_path / "empty")
    assert not is_readable(tmp_path / "missing.png")


def test_find_studies(tmp_path, make_series, write_dicom, caplog):
    root = tmp_path / "dataset"
    _png(root / "xray" / "b.png")
    _png(root / "xray" / "a.png")
    (root / "xray" / "labels.csv").write_text("a,0\n")
    _png(root / ".hidden" / "c.png")
    nib.save(nib.Nifti1Image(np.zeros((2, 2, 2), np.float32), np.eye(4)), str(root / "vol.nii.gz"))
    series = make_series(root / "patient1" / "ct")
    (series.folder / "DICOMDIR.txt").write_text("not dicom")
    single = write_dicom(root / "patient2" / "cr.dcm", np.zeros((4, 4), np.uint16), Modality="CR")
    mixed = root / "mixed"
    write_dicom(mixed / "1.dcm", np.zeros((4, 4), np.int16), SeriesInstanceUID=generate_uid())
    write_dicom(mixed / "2.dcm", np.zeros((4, 4), np.int16), SeriesInstanceUID=generate_uid())
    shared_uid = generate_uid()
    write_dicom(mixed / "3.dcm", np.zeros((4, 4), np.int16), SeriesInstanceUID=shared_uid)
    write_dicom(mixed / "4.dcm", np.zeros((4, 4), np.int16), SeriesInstanceUID=shared_uid)
    with caplog.at_level(logging.WARNING, logger="medanomaly.io"):
        studies = find_studies(root)
    assert studies == [mixed / "1.dcm", mixed / "2.dcm", series.folder, single, root / "vol.nii.gz",
                       root / "xray" / "a.png", root / "xray" / "b.png"]
    assert "2 DICOM files of series" in caplog.text
    assert find_studies(root) == studies  # deterministic
    assert all(read_study(path).n_slices >= 1 for path in studies)


def test_find_studies_root_series_is_one_study(ct_series):
    assert find_studies(ct_series.folder) == [ct_series.folder]


def test_find_studies_bad_folder(tmp_path):
    _png(tmp_path / "a.png")
    with pytest.raises(InputError, match="not a folder"):
        find_studies(tmp_path / "a.png")
    with pytest.raises(InputError, match="no such folder"):
        find_studies(tmp_path / "missing")


def test_inspect_study_series_is_json(ct_series):
    summary = inspect_study(ct_series.folder)
    assert json.loads(json.dumps(summary)) == summary
    assert summary["kind"] == "dicom_series"
    assert summary["shape"] == [5, 16, 16]
    assert summary["dtype"] == "int16"  # whole HU values are kept in 2 bytes
    assert summary["value_range"] == [float(ct_series.hu.min()), float(ct_series.hu.max())]
    assert summary["spacing"] == pytest.approx([0.5, 0.5, 2.5])
    assert summary["slice_order"] == "position"
    assert summary["modality"] == "CT"
    assert summary["window"] == [40.0, 400.0]
    assert summary["n_files"] == 5
    assert summary["series_uid"] is not None


def test_inspect_study_png(tmp_path):
    rgb = np.zeros((3, 5, 3), np.uint8)
    rgb[..., 1] = 77
    Image.fromarray(rgb).save(tmp_path / "c.png")
    summary = inspect_study(tmp_path / "c.png")
    assert json.loads(json.dumps(summary)) == summary
    assert summary["shape"] == [1, 3, 5, 3]
    assert summary["value_range"] == [0.0, 77.0]
    assert summary["photometric"] == "RGB"
    assert summary["patient_id"] is None

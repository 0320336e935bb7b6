from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from medanomaly.errors import InputError
from medanomaly.io import read_study


def _affine() -> np.ndarray:
    affine = np.diag([0.8, 0.9, 2.5, 1.0])
    affine[:3, 3] = [-10.0, 20.0, 5.0]
    return affine


def _save(path, data: np.ndarray, affine: np.ndarray | None = None) -> None:
    img = nib.Nifti1Image(data, _affine() if affine is None else affine)
    nib.save(img, str(path))


def test_nii_gz_round_trip(tmp_path):
    data = np.arange(6 * 5 * 4, dtype=np.int16).reshape(6, 5, 4) - 50
    _save(tmp_path / "vol.nii.gz", data)
    study = read_study(tmp_path / "vol.nii.gz")
    assert study.pixels.shape == (4, 6, 5)  # slices along the last voxel axis
    assert study.pixels.dtype == np.float32
    for k in range(4):
        np.testing.assert_array_equal(study.pixels[k], data[:, :, k])
    assert study.meta["kind"] == "nifti"
    assert study.meta["spacing"] == pytest.approx((0.8, 0.9, 2.5))
    np.testing.assert_allclose(study.meta["affine"], _affine())
    assert study.meta["axcodes"] == ("R", "A", "S")


def test_scaled_nifti_applies_slope(tmp_path):
    img = nib.Nifti1Image(np.full((3, 3, 2), 10, dtype=np.int16), _affine())
    img.header.set_slope_inter(2.0, -5.0)
    nib.save(img, str(tmp_path / "s.nii"))
    assert np.all(read_study(tmp_path / "s.nii").pixels == 15.0)


def test_2d_nifti_is_one_slice(tmp_path):
    _save(tmp_path / "flat.nii", np.ones((7, 9), np.float32))
    study = read_study(tmp_path / "flat.nii")
    assert study.pixels.shape == (1, 7, 9)
    assert len(study.meta["spacing"]) == 2


def test_4d_with_single_volume_reads(tmp_path):
    _save(tmp_path / "one.nii.gz", np.ones((4, 4, 3, 1), np.float32))
    assert read_study(tmp_path / "one.nii.gz").pixels.shape == (3, 4, 4)


def test_4d_time_series_error(tmp_path):
    _save(tmp_path / "fmri.nii.gz", np.ones((4, 4, 3, 5), np.float32))
    with pytest.raises(InputError, match="4D NIfTI") as info:
        read_study(tmp_path / "fmri.nii.gz")
    assert "extract one volume" in info.value.hint


@pytest.mark.parametrize("name", ["cut.nii", "cut.nii.gz"])
def test_truncated_nifti_error(tmp_path, name):
    _save(tmp_path / f"full{name[3:]}", np.random.default_rng(0).random((16, 16, 8)).astype(np.float32))
    data = (tmp_path / f"full{name[3:]}").read_bytes()
    (tmp_path / name).write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="not a readable NIfTI file") as info:
        read_study(tmp_path / name)
    assert "\n" not in str(info.value)


def test_nifti_pixel_limit(tmp_path, monkeypatch):
    _save(tmp_path / "v.nii", np.zeros((10, 10, 2), np.float32))
    monkeypatch.setenv("MEDANOMALY_MAX_PIXELS", "99")
    with pytest.raises(InputError, match="above the limit of 99"):
        read_study(tmp_path / "v.nii")

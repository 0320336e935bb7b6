from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.encaps import encapsulate
from pydicom.uid import JPEG2000Lossless, JPEGBaseline8Bit, RLELossless, generate_uid

from medanomaly.errors import InputError
from medanomaly.io import read_study

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "ct_dicom_dcm_qa_ct" / "dicom"


def _ramp(size: int = 16, dtype: type = np.int16) -> np.ndarray:
    return np.arange(size * size).reshape(size, size).astype(dtype)


# --- series -----------------------------------------------------------------------------------------------------


def test_series_sorted_by_position_in_hu(ct_series):
    study = read_study(ct_series.folder)
    assert study.pixels.shape == (5, 16, 16)
    assert study.pixels.dtype == np.int16  # whole HU values are kept in 2 bytes
    np.testing.assert_array_equal(study.pixels, ct_series.hu)
    meta = study.meta
    assert meta["kind"] == "dicom_series"
    assert meta["slice_order"] == "position"
    assert meta["slice_positions"] == pytest.approx(ct_series.positions)
    assert meta["sop_uids"] == ct_series.sop_uids
    assert [p[2] for p in meta["image_positions"]] == pytest.approx(ct_series.positions)
    assert meta["spacing"] == pytest.approx((0.5, 0.5, 2.5))
    assert meta["rescale"] == (2.0, -1024.0)
    assert meta["window"] == (40.0, 400.0)
    assert meta["orientation"] == [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    assert meta["modality"] == "CT"
    assert meta["n_files"] == 5
    assert meta["patient_id"] == "PAT-1"
    assert meta["frame_of_reference_uid"] is not None
    assert meta["series_uid"] is not None
    assert meta["study_uid"] is not None


def test_series_falls_back_to_instance_number(tmp_path, make_series):
    series = make_series(tmp_path / "noipp", with_positions=False)
    study = read_study(series.folder)
    assert study.meta["slice_order"] == "instance_number"
    np.testing.assert_array_equal(study.pixels, series.hu)
    assert study.meta["slice_positions"] is None
    assert study.meta["spacing"] == pytest.approx((0.5, 0.5, 2.5))  # from SliceThickness


def test_series_with_gantry_tilt_orders_along_normal(tmp_path, write_dicom):
    tilt = np.deg2rad(20.0)
    orientation = [1.0, 0.0, 0.0, 0.0, float(np.cos(tilt)), float(-np.sin(tilt))]
    normal = np.cross(orientation[:3], orientation[3:])
    steps = [0.0, 3.0, 6.0, 7.5]  # uneven on purpose
    for i, k in enumerate([2, 0, 3, 1]):
        position = (np.array([-5.0, 1.0, 2.0]) + steps[k] * normal).tolist()
        write_dicom(tmp_path / "tilt" / f"{i}.dcm", _ramp(8) + 10 * k, ImagePositionPatient=position,
                    ImageOrientationPatient=orientation, InstanceNumber=i + 1)
    study = read_study(tmp_path / "tilt")
    assert study.pixels[:, 0, 0].tolist() == [0.0, 10.0, 20.0, 30.0]
    assert np.diff(study.meta["slice_positions"]) == pytest.approx([3.0, 3.0, 1.5])
    assert study.meta["spacing"][2] == pytest.approx(3.0)


def test_series_skips_non_dicom_files_with_warning(ct_series, caplog):
    (ct_series.folder / "README.txt").write_text("scanner export notes\n")
    with caplog.at_level(logging.WARNING, logger="medanomaly.io"):
        study = read_study(ct_series.folder)
    assert study.n_slices == 5
    assert "README.txt" in caplog.text


def test_mixed_series_error(ct_series, write_dicom):
    write_dicom(ct_series.folder / "other.dcm", _ramp(), SeriesInstanceUID=generate_uid(),
                ImagePositionPatient=[0, 0, 99], ImageOrientationPatient=[1, 0, 0, 0, 1, 0])
    with pytest.raises(InputError, match="mixes 2 series") as info:
        read_study(ct_series.folder)
    assert info.value.path == str(ct_series.folder)
    assert "one series" in info.value.hint


def test_mixed_slice_size_error_names_file(ct_series, write_dicom):
    odd = write_dicom(ct_series.folder / "odd.dcm", _ramp(8), ImagePositionPatient=[0, 0, 99],
                      ImageOrientationPatient=[1, 0, 0, 0, 1, 0])
    with pytest.raises(InputError, match="8x8 differs from 16x16") as info:
        read_study(ct_series.folder)
    assert info.value.path == str(odd)


def test_empty_folder_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="empty"):
        read_study(tmp_path / "empty")


def test_folder_of_folders_error(tmp_path, make_series):
    make_series(tmp_path / "patient" / "series1")
    with pytest.raises(InputError, match="only 1 subfolder") as info:
        read_study(tmp_path / "patient")
    assert "find_studies" in info.value.hint


def test_folder_without_images_error(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "README").write_text("nothing here")
    with pytest.raises(InputError, match="no readable DICOM images"):
        read_study(tmp_path / "docs")


# --- single files ------------------------------------------------------------------------------------------------


def test_single_file_without_extension(tmp_path, write_dicom):
    path = write_dicom(tmp_path / "IMAGE0001", _ramp(), RescaleSlope=1, RescaleIntercept=-1024,
                       WindowCenter=[40, 300], WindowWidth=[400, 1500])
    study = read_study(path)
    assert study.pixels.shape == (1, 16, 16)
    np.testing.assert_array_equal(study.pixels[0], _ramp().astype(np.float32) - 1024)
    assert study.meta["kind"] == "dicom"
    assert study.meta["window"] == (40.0, 400.0)  # first of a multi-valued window
    assert study.meta["spacing"] == pytest.approx((0.5, 0.5))


def test_raw_dataset_without_preamble_is_force_read(tmp_path, write_dicom):
    ds = pydicom.dcmread(write_dicom(tmp_path / "a.dcm", _ramp()))
    del ds.file_meta
    ds.preamble = None
    ds.save_as(tmp_path / "raw", implicit_vr=True, little_endian=True)
    assert (tmp_path / "raw").read_bytes()[128:132] != b"DICM"
    np.testing.assert_array_equal(read_study(tmp_path / "raw").pixels[0], _ramp())


def test_monochrome1_is_inverted(tmp_path, write_dicom):
    stored = _ramp(dtype=np.uint16) + 10  # 10..265
    path = write_dicom(tmp_path / "cr.dcm", stored, PhotometricInterpretation="MONOCHROME1", Modality="CR",
                       WindowCenter=100, WindowWidth=50)
    study = read_study(path)
    np.testing.assert_array_equal(study.pixels[0], (265 + 10 - stored).astype(np.float32))
    assert study.meta["photometric"] == "MONOCHROME1"
    assert study.meta["inverted"] is True
    assert study.meta["window"] == (175.0, 50.0)  # mirrored with the values


def test_multi_frame_gives_one_slice_per_frame(tmp_path, write_dicom):
    frames = np.stack([_ramp(8) + 100 * k for k in range(3)])
    path = write_dicom(tmp_path / "mf.dcm", frames, frames=True, RescaleSlope=1, RescaleIntercept=0)
    study = read_study(path)
    assert study.pixels.shape == (3, 8, 8)
    np.testing.assert_array_equal(study.pixels, frames.astype(np.float32))
    assert study.meta["slice_order"] == "frame"


def test_rgb_dicom_grey_or_colour(tmp_path, write_dicom):
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[..., 1] = 200
    path = write_dicom(tmp_path / "rgb.dcm", rgb, Modality="XC")
    assert read_study(path, color=True).pixels.shape == (1, 4, 4, 3)
    grey = read_study(path).pixels
    assert grey.shape == (1, 4, 4)
    assert grey[0, 0, 0] == pytest.approx(0.587 * 200, abs=0.01)


def test_rle_lossless_decodes(tmp_path, write_dicom):
    ds = pydicom.dcmread(write_dicom(tmp_path / "plain.dcm", _ramp() - 100))
    ds.compress(RLELossless)
    ds.save_as(tmp_path / "rle.dcm", enforce_file_format=True)
    assert pydicom.dcmread(tmp_path / "rle.dcm").file_meta.TransferSyntaxUID == RLELossless
    np.testing.assert_array_equal(read_study(tmp_path / "rle.dcm").pixels[0], _ramp() - 100)


def test_jpeg_baseline_decodes(tmp_path, write_dicom):
    grey = (np.arange(32 * 32).reshape(32, 32) % 256).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(grey).save(buffer, format="JPEG", quality=95)
    ds = pydicom.dcmread(write_dicom(tmp_path / "plain.dcm", grey))
    ds.PixelData = encapsulate([buffer.getvalue()])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.save_as(tmp_path / "jpeg.dcm", enforce_file_format=True)
    pixels = read_study(tmp_path / "jpeg.dcm").pixels[0]
    assert np.abs(pixels - grey).max() <= 3


def _j2k_file(tmp_path: Path, write_dicom) -> Path:
    stored = (np.arange(64 * 64).reshape(64, 64) % 1000).astype(np.uint16)
    ds = pydicom.dcmread(write_dicom(tmp_path / "plain.dcm", stored, BitsStored=12, HighBit=11))
    ds.compress(JPEG2000Lossless)
    ds.save_as(tmp_path / "j2k.dcm", enforce_file_format=True)
    return tmp_path / "j2k.dcm"


def test_jpeg2000_decodes(tmp_path, write_dicom):
    pixels = read_study(_j2k_file(tmp_path, write_dicom)).pixels[0]
    np.testing.assert_array_equal(pixels, np.arange(64 * 64).reshape(64, 64) % 1000)


def test_missing_decoder_names_package(tmp_path, write_dicom, monkeypatch):
    path = _j2k_file(tmp_path, write_dicom)
    from pydicom.pixels import get_decoder

    decoder = get_decoder(JPEG2000Lossless)  # pretend pylibjpeg-openjpeg is not installed
    monkeypatch.setattr(decoder, "_available", {})
    monkeypatch.setattr(decoder, "_unavailable", {"pylibjpeg": ("pylibjpeg>=2.0", "pylibjpeg-openjpeg>=2.0")})
    with pytest.raises(InputError, match="no decoder") as info:
        read_study(path)
    assert "pylibjpeg-openjpeg" in info.value.hint
    assert "\n" not in str(info.value)


def test_truncated_pixel_data_error(tmp_path, write_dicom):
    path = write_dicom(tmp_path / "cut.dcm", _ramp())
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(InputError, match="pixel data") as info:
        read_study(path)
    assert "truncated" in info.value.hint


def test_truncated_header_error(tmp_path, write_dicom):
    path = write_dicom(tmp_path / "cut.dcm", _ramp())
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(InputError, match="no pixel data"):
        read_study(path)


@pytest.mark.filterwarnings("ignore:End of file reached:UserWarning")
def test_garbage_dcm_error(tmp_path):
    path = tmp_path / "junk.dcm"
    path.write_bytes(b"\x00" * 128 + b"DICM" + b"\xff" * 40)
    with pytest.raises(InputError, match="DICOM"):
        read_study(path)


def test_no_pixel_data_error(tmp_path, write_dicom):
    ds = pydicom.dcmread(write_dicom(tmp_path / "img.dcm", _ramp()))
    del ds.PixelData, ds.Rows, ds.Columns
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
    ds.Modality = "SR"
    ds.save_as(tmp_path / "report.dcm", enforce_file_format=True)
    with pytest.raises(InputError, match="has no image") as info:
        read_study(tmp_path / "report.dcm")
    assert "Basic Text SR" in info.value.problem


def test_unsupported_photometric_error(tmp_path, write_dicom):
    path = write_dicom(tmp_path / "pal.dcm", _ramp(dtype=np.uint8), PhotometricInterpretation="PALETTE COLOR")
    with pytest.raises(InputError, match="unsupported photometric interpretation PALETTE COLOR"):
        read_study(path)


def test_dicom_above_pixel_limit(tmp_path, write_dicom, monkeypatch):
    monkeypatch.setenv("MEDANOMALY_MAX_PIXELS", "100")
    path = write_dicom(tmp_path / "big.dcm", _ramp())
    with pytest.raises(InputError, match="above the limit") as info:
        read_study(path)
    assert "MEDANOMALY_MAX_PIXELS" in info.value.hint


# --- real data ---------------------------------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.skipif(not DATA.is_dir(), reason="needs data outside the repository: ../shared/data/ct_dicom_dcm_qa_ct")
def test_real_ct_series():
    philips = read_study(DATA / "Philips_Ingenuity_phantom_5mm_notilt")
    assert philips.pixels.shape == (28, 512, 512)
    assert philips.meta["modality"] == "CT"
    assert philips.pixels.min() == pytest.approx(-1024, abs=1)
    assert philips.meta["spacing"][2] == pytest.approx(5.0, abs=0.01)
    assert philips.meta["rescale"] == (1.0, -1024.0)
    ge = read_study(DATA / "GE_HiSpeedDual_head_tilt_varspacing")
    assert ge.pixels.shape == (28, 512, 512)
    assert ge.meta["modality"] == "CT"
    assert ge.meta["slice_order"] == "position"
    gaps = np.diff(ge.meta["slice_positions"])
    assert np.all(gaps > 0)
    assert np.any(np.isclose(gaps, 1.08, atol=0.01))
    assert np.sum(np.isclose(gaps, 4.0, atol=0.01)) == 13
    assert np.sum(np.isclose(gaps, 7.0, atol=0.01)) == 13
    assert (ge.pixels.min(), ge.pixels.max()) == (-1500.0, 2121.0)

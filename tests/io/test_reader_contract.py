"""Regression fixtures for the reader crash signatures of issue 13: each gives a clear InputError naming the file."""

from __future__ import annotations

import gzip
import io
import struct
import tracemalloc
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import DeflatedExplicitVRLittleEndian, RLELossless

from medanomaly.errors import InputError
from medanomaly.io import inspect_study, read_study, scan_studies


def _refused(path, match: str) -> InputError:
    with pytest.raises(InputError, match=match) as info:
        read_study(path)
    assert str(path) in str(info.value)
    return info.value


def _nifti(tmp_path, name="v.nii", data=None, **header):
    data = np.arange(4 * 4 * 3, dtype=np.float32).reshape(4, 4, 3) if data is None else data
    img = nib.Nifti1Image(data, np.eye(4))
    path = tmp_path / name
    nib.save(img, path)
    raw = bytearray(path.read_bytes())
    for offset, fmt, value in header.values():
        raw[offset : offset + struct.calcsize(fmt)] = struct.pack(fmt, value)
    path.write_bytes(bytes(raw))
    return path


@pytest.mark.parametrize(
    ("field", "match"),
    [
        ((108, "<f", 1e20), "NIfTI"),  # vox_offset far beyond the file: nibabel HeaderDataError/OverflowError
        ((108, "<f", float("nan")), "NIfTI"),
        ((116, "<f", float("nan")), "NaN|NIfTI"),  # scl_inter NaN
        ((42, "<h", 30000), "NIfTI|limit"),  # dim[1] far beyond the data: memmap length
    ],
)
def test_nifti_header_edits_are_input_errors(tmp_path, field, match):
    _refused(_nifti(tmp_path, field=field), match)


def test_nifti_nan_affine_is_refused(tmp_path):
    path = _nifti(tmp_path, srow=(280, "<f", float("nan")))
    raw = bytearray(path.read_bytes())
    raw[254:256] = struct.pack("<h", 1)  # sform_code = scanner, so the NaN sform is used
    path.write_bytes(bytes(raw))
    _refused(path, "geometry|NaN")


def test_nifti_singular_affine_is_refused(tmp_path):
    path = _nifti(tmp_path, srow_z=(320, "<f", 0.0), sform=(254, "<h", 1))  # srow_z = 0: a flat voxel
    _refused(path, "singular")


def test_nifti_nan_inside_is_refused_and_nan_background_repaired(tmp_path):
    data = np.ones((8, 8, 2), np.float32)
    data[3:5, 3:5, :] = np.nan
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "hole.nii")
    error = _refused(tmp_path / "hole.nii", "NaN")
    assert "slice, row, col" in error.problem
    data = np.full((8, 8, 2), np.nan, np.float32)
    data[2:6, 2:6, :] = 5.0
    data[3, 3, 0] = 1.0
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "masked.nii")
    study = read_study(tmp_path / "masked.nii")
    assert np.isfinite(study.pixels).all() and study.pixels.min() == 1.0
    assert "NaN voxels outside the body" in study.meta["repaired"]


def test_empty_nifti_is_refused(tmp_path):
    nib.save(nib.Nifti1Image(np.zeros((4, 0, 2), np.float32), np.eye(4)), tmp_path / "e.nii")
    _refused(tmp_path / "e.nii", "no image|NIfTI")


def test_huge_nifti_dims_refused_before_allocation(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDANOMALY_MAX_VOXELS", "1000")
    _refused(_nifti(tmp_path, name="big.nii.gz", data=np.zeros((20, 20, 5), np.float32)), "above the limit of 1,000")


def _ct(write_dicom, path, pixels=None, **attrs):
    pixels = np.arange(64, dtype=np.int16).reshape(8, 8) if pixels is None else pixels
    return write_dicom(path, pixels, **attrs)


def test_deflated_dicom_with_corrupt_stream(tmp_path, write_dicom):
    ds = pydicom.dcmread(_ct(write_dicom, tmp_path / "plain.dcm"))
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds.save_as(tmp_path / "d.dcm", enforce_file_format=True)
    raw = bytearray((tmp_path / "d.dcm").read_bytes())
    raw[-40:-30] = b"\xff" * 10  # zlib.error inside pydicom
    (tmp_path / "d.dcm").write_bytes(bytes(raw))
    with pytest.raises(InputError, match="d.dcm"):
        read_study(tmp_path / "d.dcm")


@pytest.mark.parametrize(
    ("descriptor", "data"),
    [([16, 0], list(range(16))), ([16, 0, 16], [1, 2]), ([0, 0, 16], list(range(16))), ([16, 0, 99], list(range(16)))],
)
def test_malformed_modality_lut(tmp_path, write_dicom, descriptor, data):
    ds = pydicom.dcmread(_ct(write_dicom, tmp_path / "plain.dcm", np.arange(64, dtype=np.uint16).reshape(8, 8) % 16))
    item = Dataset()
    item.LUTDescriptor = descriptor
    item.ModalityLUTType = "HU"
    item.add_new(0x00283006, "US", data)
    ds.ModalityLUTSequence = Sequence([item])
    ds.save_as(tmp_path / "lut.dcm", enforce_file_format=True)
    try:
        study = read_study(tmp_path / "lut.dcm")
    except InputError as error:
        study, message = None, str(error)
    assert study is None and "lut.dcm" in message or np.isfinite(study.pixels).all()


def test_rle_with_fewer_fragments_than_frames(tmp_path, write_dicom):
    frames = np.stack([np.arange(64, dtype=np.int16).reshape(8, 8) + k for k in range(2)])
    ds = pydicom.dcmread(write_dicom(tmp_path / "plain.dcm", frames, frames=True))
    ds.compress(RLELossless)
    ds.NumberOfFrames = 5  # StopIteration in pydicom's fragment generator
    ds.save_as(tmp_path / "rle.dcm", enforce_file_format=True)
    _refused(tmp_path / "rle.dcm", "rle.dcm|frames|decoded|pixel")


def test_unbounded_number_of_frames_refused_before_decoding(tmp_path, write_dicom):
    ds = pydicom.dcmread(_ct(write_dicom, tmp_path / "plain.dcm"))
    ds.compress(RLELossless)
    ds.NumberOfFrames = 2**31 - 1
    ds.save_as(tmp_path / "many.dcm", enforce_file_format=True)
    _refused(tmp_path / "many.dcm", "above the limit")


@pytest.mark.parametrize(("keyword", "value"), [("Rows", [8, 8]), ("Columns", [8, 2]), ("NumberOfFrames", "1\\2")])
def test_multi_valued_counts(tmp_path, write_dicom, keyword, value):
    path = _ct(write_dicom, tmp_path / "mv.dcm")
    ds = pydicom.dcmread(path)
    setattr(ds, keyword, value)
    ds.save_as(path, enforce_file_format=True)
    _refused(path, f"{keyword}|malformed")


def _patch_bytes(path, old: bytes, new: bytes) -> None:
    raw = path.read_bytes()
    assert old in raw
    path.write_bytes(raw.replace(old, new, 1))


def test_unknown_vr_and_bad_value_length(tmp_path, write_dicom):
    path = _ct(write_dicom, tmp_path / "vr.dcm", WindowCenter=40, WindowWidth=400)
    _patch_bytes(path, b"\x28\x00\x10\x00US\x02\x00", b"\x28\x00\x10\x00ZZ\x02\x00")  # Rows with an unknown VR
    _refused(path, "vr.dcm")
    path = _ct(write_dicom, tmp_path / "len.dcm")
    _patch_bytes(path, b"\x28\x00\x10\x00US\x02\x00\x08\x00", b"\x28\x00\x10\x00US\x03\x00\x08\x00\x00")  # 3-byte US
    _refused(path, "len.dcm")


def test_corrupt_element_length_does_not_allocate(tmp_path, write_dicom):
    path = _ct(write_dicom, tmp_path / "long.dcm")
    raw = path.read_bytes()
    pos = raw.index(b"\xe0\x7f\x10\x00OW\x00\x00") + 8
    path.write_bytes(raw[:pos] + b"\xf0\xff\xff\xff" + raw[pos + 4 :])  # 4 GB announced: read to the end
    try:
        shape, message = read_study(path).pixels.shape, ""
    except InputError as error:
        shape, message = None, str(error)
    assert shape == (1, 8, 8) or "long.dcm" in message


def test_nan_rescale_slope_refused(tmp_path, write_dicom):
    _refused(_ct(write_dicom, tmp_path / "nan.dcm", RescaleSlope="nan"), "RescaleSlope")


def test_float_tiff_with_inf_refused(tmp_path):
    data = np.ones((4, 4), np.float32)
    data[1, 1] = np.inf
    Image.fromarray(data).save(tmp_path / "inf.tif")
    _refused(tmp_path / "inf.tif", "Inf")


def test_tiff_missing_dimensions(tmp_path):
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(buffer, format="TIFF")
    raw = bytearray(buffer.getvalue())
    ifd = struct.unpack("<I", raw[4:8])[0]
    n_tags = struct.unpack("<H", raw[ifd : ifd + 2])[0]
    for k in range(n_tags):
        entry = ifd + 2 + 12 * k
        if struct.unpack("<H", raw[entry : entry + 2])[0] == 256:  # ImageWidth -> an unknown tag
            raw[entry : entry + 2] = struct.pack("<H", 65000)
    (tmp_path / "t.tif").write_bytes(bytes(raw))
    _refused(tmp_path / "t.tif", "t.tif")


def test_series_slice_without_series_uid_is_refused_with_reason(make_series, tmp_path):
    series = make_series(tmp_path / "ct")
    victim = sorted(series.folder.iterdir())[2]
    ds = pydicom.dcmread(victim)
    del ds.SeriesInstanceUID
    ds.save_as(victim, enforce_file_format=True)
    error = _refused(series.folder, "1 of 5 slices lack a SeriesInstanceUID")
    assert victim.name in error.problem
    studies, failures = scan_studies(tmp_path)
    assert studies == [series.folder] and failures == []  # the folder is kept whole: reading it says why
    with pytest.raises(InputError, match="SeriesInstanceUID"):
        inspect_study(series.folder)


def test_scan_lists_unreadable_dicom_and_mixed_series(tmp_path, write_dicom, make_series):
    make_series(tmp_path / "ok")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.dcm").write_bytes(b"\x08\x00" + b"\xff" * 6)
    mixed = tmp_path / "mixed"
    for k in range(2):
        _ct(write_dicom, mixed / f"a{k}.dcm", SeriesInstanceUID="1.2.3")
        _ct(write_dicom, mixed / f"b{k}.dcm", SeriesInstanceUID="1.2.4")
    studies, failures = scan_studies(tmp_path)
    assert studies == [tmp_path / "ok"]
    problems = sorted(str(failure) for failure in failures)
    assert len(problems) == 3
    assert any("x.dcm" in p for p in problems)
    assert sum("mixed" in p and "series" in p for p in problems) == 2


def test_gz_bomb_nifti_bounded(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDANOMALY_MAX_VOXELS", "100000")
    header = nib.Nifti1Header()
    header.set_data_shape((1000, 1000, 100))
    header.set_data_dtype(np.uint8)
    body = header.binaryblock + b"\0" * 4
    (tmp_path / "bomb.nii.gz").write_bytes(gzip.compress(body))
    _refused(tmp_path / "bomb.nii.gz", "above the limit")


FUZZ_CRASHES = sorted((Path(__file__).parent / "fuzz_crashes").iterdir())


@pytest.mark.parametrize("path", FUZZ_CRASHES, ids=lambda p: p.name)
def test_fuzz_found_inputs_keep_the_contract_in_little_memory(path):
    """Inputs the fuzzer once found over 2 GB or crashing: now a study or an InputError, under 200 MB."""
    tracemalloc.start()
    message = path.name
    try:
        read_study(path)
    except InputError as error:
        message = str(error)
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert path.name in message
    assert peak < 200 << 20

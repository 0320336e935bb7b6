"""Fixtures writing tiny synthetic DICOM, PNG and NIfTI files into ``tmp_path``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

STUDY_UID = "1.2.826.0.1.3680043.8.498.1"
SERIES_UID = "1.2.826.0.1.3680043.8.498.2"
FRAME_UID = "1.2.826.0.1.3680043.8.498.3"


def build_dataset(pixels: np.ndarray, *, frames: bool = False, **attrs: Any) -> Dataset:
    """A CT image dataset holding ``pixels`` ((H, W), (H, W, 3), or (F, H, W[, 3]) with ``frames``).

    ``attrs`` set or (with value None) delete header attributes.
    """
    sop_uid = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality, ds.PatientID = CTImageStorage, sop_uid, "CT", "PAT-1"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = STUDY_UID, SERIES_UID, FRAME_UID
    colour = pixels.ndim == (4 if frames else 3)
    if frames:
        ds.NumberOfFrames = pixels.shape[0]
    ds.Rows, ds.Columns = pixels.shape[-3:-1] if colour else pixels.shape[-2:]
    ds.SamplesPerPixel = 3 if colour else 1
    ds.PhotometricInterpretation = "RGB" if colour else "MONOCHROME2"
    if colour:
        ds.PlanarConfiguration = 0
    bits = pixels.dtype.itemsize * 8
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, bits, bits - 1
    ds.PixelRepresentation = int(np.issubdtype(pixels.dtype, np.signedinteger))
    ds.PixelSpacing = [0.5, 0.5]
    ds.PixelData = np.ascontiguousarray(pixels).astype(pixels.dtype.newbyteorder("<")).tobytes()
    for keyword, value in attrs.items():
        if value is None:
            if keyword in ds:
                delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    return ds


@pytest.fixture
def write_dicom() -> Callable[..., Path]:
    """Factory: ``write_dicom(path, pixels, frames=False, **attrs)`` writes a DICOM file and returns its path."""

    def write(path: Path, pixels: np.ndarray, *, frames: bool = False, **attrs: Any) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        build_dataset(pixels, frames=frames, **attrs).save_as(path, enforce_file_format=True)
        return path

    return write


@dataclass
class CTSeries:
    """A synthetic CT series on disk and what reading it must give."""

    folder: Path
    hu: np.ndarray  # (S, H, W) float32, in slice order
    positions: list[float]  # slice positions along the normal, ascending
    sop_uids: list[str]  # in slice order


def write_ct_series(folder: Path, *, with_positions: bool = True, n_slices: int = 5, size: int = 16) -> CTSeries:
    """Write ``n_slices`` int16 slices (slope 2, intercept -1024), files named in a shuffled order.

    InstanceNumber runs opposite to the z order when positions are written, so only sorting by position is right.
    """
    folder.mkdir(parents=True, exist_ok=True)
    base = np.arange(size * size, dtype=np.int16).reshape(size, size)
    file_order = np.random.default_rng(7).permutation(n_slices)
    z_values = [-10.0 + 2.5 * k for k in range(n_slices)]
    sop_uids = [generate_uid() for _ in range(n_slices)]
    for file_index, k in enumerate(file_order):
        attrs: dict[str, Any] = {"RescaleSlope": 2, "RescaleIntercept": -1024, "WindowCenter": 40, "WindowWidth": 400,
                                 "SOPInstanceUID": sop_uids[k], "SliceThickness": 2.5}
        if with_positions:
            attrs.update(ImagePositionPatient=[0.0, 0.0, z_values[k]], ImageOrientationPatient=[1, 0, 0, 0, 1, 0],
                         InstanceNumber=n_slices - k)
        else:
            attrs.update(InstanceNumber=k + 1)
        ds = build_dataset(base + 100 * int(k), **attrs)
        ds.file_meta.MediaStorageSOPInstanceUID = sop_uids[k]
        ds.save_as(folder / f"IM{file_index:03d}", enforce_file_format=True)
    hu = np.stack([2.0 * (base + 100 * k) - 1024 for k in range(n_slices)]).astype(np.float32)
    return CTSeries(folder=folder, hu=hu, positions=z_values, sop_uids=sop_uids)


@pytest.fixture
def ct_series(tmp_path: Path) -> CTSeries:
    """A 5-slice 16x16 CT series ordered by ImagePositionPatient, files shuffled."""
    return write_ct_series(tmp_path / "ct")


@pytest.fixture
def make_series() -> Callable[..., CTSeries]:
    """Factory around :func:`write_ct_series`."""
    return write_ct_series

"""Seed corpus of the reader fuzzer: small valid DICOM, PNG/JPEG/BMP/TIFF and NIfTI files.

The files are built the way the test suite's fixtures are (tests/io/conftest.py: a CT dataset with rescale, window and
geometry, MONOCHROME1, RGB, multi-frame, RLE/JPEG/JPEG-LS/JPEG 2000/deflated transfer syntaxes, a raw dataset without
preamble, a 3-slice series folder; 8/16-bit, colour, palette and float images; 2D/3D/4D NIfTI with scaling), so the
fuzzer mutates exactly what the readers are tested on. Every seed must read cleanly (checked by the fuzzer's test).
"""

from __future__ import annotations

import importlib.util
import io
import sys
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    RLELossless,
)

SERIES_UID = "1.2.826.0.1.3680043.8.498.77"


def _conftest_builder() -> Callable[..., Dataset]:
    """``build_dataset`` of tests/io/conftest.py: the seeds are the test suite's own DICOM fixtures."""
    path = Path(__file__).resolve().parents[1] / "tests" / "io" / "conftest.py"
    spec = importlib.util.spec_from_file_location("_io_fixtures", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[spec.name] = module  # type: ignore[union-attr] (its dataclass looks itself up there)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module.build_dataset


_BUILD = _conftest_builder()


def ct_dataset(pixels: np.ndarray, *, frames: bool = False, **attrs: object) -> Dataset:
    """A CT dataset holding ``pixels`` ((H, W), (H, W, 3) or (F, H, W)) with plane geometry, as the tests build it."""
    geometry = {"ImageOrientationPatient": [1, 0, 0, 0, 1, 0], "ImagePositionPatient": [0.0, 0.0, 0.0],
                "SeriesInstanceUID": SERIES_UID}
    return _BUILD(pixels, frames=frames, **{**geometry, **attrs})


def _ramp(size: int = 16, dtype: type = np.int16) -> np.ndarray:
    return (np.arange(size * size).reshape(size, size) % 997).astype(dtype)


def _save(ds: Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


def _compressed(path: Path, syntax: str, pixels: np.ndarray, **attrs: object) -> Path:
    ds = ct_dataset(pixels, **attrs)
    ds.compress(syntax)
    return _save(ds, path)


def _jpeg(path: Path) -> Path:
    grey = (np.arange(32 * 32).reshape(32, 32) % 256).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(grey).save(buffer, format="JPEG", quality=90)
    ds = ct_dataset(grey)
    ds.PixelData = encapsulate([buffer.getvalue()])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    return _save(ds, path)


def _modality_lut(path: Path) -> Path:
    ds = ct_dataset(_ramp(8, np.uint16) % 16, PixelRepresentation=0)
    item = Dataset()
    item.LUTDescriptor = [16, 0, 16]
    item.ModalityLUTType = "HU"
    item.add_new(0x00283006, "US", [int(v) * 10 + 5 for v in range(16)])  # LUTData
    ds.ModalityLUTSequence = Sequence([item])
    return _save(ds, path)


def _raw(path: Path) -> Path:
    ds = ct_dataset(_ramp(8))
    del ds.file_meta
    ds.save_as(path, implicit_vr=True, little_endian=True)
    return path


def _series(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(3):
        ds = ct_dataset(_ramp(8) + 100 * k, RescaleSlope=2, RescaleIntercept=-1024, InstanceNumber=k + 1,
                        ImagePositionPatient=[0.0, 0.0, 2.5 * k], SeriesInstanceUID=SERIES_UID)
        _save(ds, folder / f"IM{k}")
    return folder


def _dicom_seeds(root: Path) -> list[Path]:
    mono1 = ct_dataset(_ramp(16, np.uint16), PhotometricInterpretation="MONOCHROME1", Modality="CR")
    rgb = ct_dataset(np.stack([_ramp(8, np.uint8)] * 3, axis=-1), Modality="XC")
    frames = ct_dataset(np.stack([_ramp(8) + k for k in range(3)]), frames=True)
    implicit = ct_dataset(_ramp(8), RescaleSlope=1.5, RescaleIntercept=-10, WindowCenter=40, WindowWidth=400)
    implicit.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    deflated = ct_dataset(_ramp(8))
    deflated.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    return [
        _save(ct_dataset(_ramp(16), RescaleSlope=2, RescaleIntercept=-1024, WindowCenter=40, WindowWidth=400),
              root / "ct.dcm"),
        _save(mono1, root / "cr_mono1.dcm"), _save(rgb, root / "rgb.dcm"), _save(frames, root / "frames.dcm"),
        _save(implicit, root / "implicit.dcm"), _save(deflated, root / "deflated.dcm"),
        _compressed(root / "rle.dcm", RLELossless, _ramp(16)),
        _compressed(root / "rle_frames.dcm", RLELossless, np.stack([_ramp(8) + k for k in range(3)]), frames=True),
        _compressed(root / "jpegls.dcm", JPEGLSLossless, _ramp(16)),
        _compressed(root / "j2k.dcm", JPEG2000Lossless, _ramp(64, np.uint16), BitsStored=12, HighBit=11,
                    PixelRepresentation=0),
        _jpeg(root / "jpeg.dcm"), _modality_lut(root / "modality_lut.dcm"), _raw(root / "raw_no_preamble"),
        _series(root / "series"),
    ]


def _image_seeds(root: Path) -> list[Path]:
    grey = (np.arange(16 * 16).reshape(16, 16) % 256).astype(np.uint8)
    rgb = np.stack([grey, grey[::-1], grey.T], axis=-1)
    images: dict[str, Callable[[Path], None]] = {
        "grey.png": lambda p: Image.fromarray(grey).save(p),
        "grey16.png": lambda p: Image.fromarray(grey.astype(np.uint16) * 200).save(p),
        "rgb.png": lambda p: Image.fromarray(rgb).save(p),
        "rgba.png": lambda p: Image.fromarray(np.dstack([rgb, grey])).save(p),
        "palette.png": lambda p: Image.fromarray(rgb).convert("P").save(p),
        "photo.jpg": lambda p: Image.fromarray(rgb).save(p, quality=90),
        "grey.bmp": lambda p: Image.fromarray(grey).save(p),
        "grey.tif": lambda p: Image.fromarray(grey).save(p),
        "grey16.tif": lambda p: Image.fromarray(grey.astype(np.uint16) * 200).save(p),
        "float.tif": lambda p: Image.fromarray(grey.astype(np.float32) / 7).save(p),
        "deflate.tif": lambda p: Image.fromarray(rgb).save(p, compression="tiff_adobe_deflate"),
        "pages.tif": lambda p: Image.fromarray(grey).save(p, save_all=True, append_images=[Image.fromarray(grey)]),
    }
    for name, write in images.items():
        write(root / name)
    return [root / name for name in images]


def _nifti_seeds(root: Path) -> list[Path]:
    volume = (np.arange(8 * 8 * 4).reshape(8, 8, 4) % 300).astype(np.int16)
    scaled = nib.Nifti1Image(volume, np.diag([0.8, 0.8, 2.0, 1.0]))
    scaled.header.set_slope_inter(0.5, -100)
    seeds = {
        "scaled.nii": scaled,
        "float.nii.gz": nib.Nifti1Image(volume.astype(np.float32) / 3, np.eye(4)),
        "slice2d.nii": nib.Nifti1Image(volume[..., 0], np.eye(4)),
        "single4d.nii.gz": nib.Nifti1Image(volume[..., None], np.eye(4)),
        "nifti2.nii": nib.Nifti2Image(volume, np.eye(4)),
    }
    for name, img in seeds.items():
        nib.save(img, root / name)
    return [root / name for name in seeds]


def write_seeds(root: Path) -> list[Path]:
    """Write the seed corpus under ``root``; return the seed paths (files, and one series folder)."""
    root.mkdir(parents=True, exist_ok=True)
    return _dicom_seeds(root) + _image_seeds(root) + _nifti_seeds(root)

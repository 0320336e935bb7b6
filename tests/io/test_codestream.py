"""Compressed frames are checked against the DICOM header before a native decoder sees them (issue 13)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless

from medanomaly.errors import InputError
from medanomaly.io import codestream, isolated, read_study

CRASH = Path(__file__).parent / "fuzz_crashes" / "jpegls_sof55_declares_0_lines.dcm"


def _ramp(size: int = 16, dtype: type = np.uint16) -> np.ndarray:
    return (np.arange(size * size).reshape(size, size) * 7 % 4001).astype(dtype)


@pytest.fixture
def compressed(tmp_path, write_dicom):
    """Factory: ``compressed(syntax, pixels)`` writes a compressed DICOM file and returns its path."""

    def write(syntax: str, pixels: np.ndarray) -> Path:
        ds = pydicom.dcmread(write_dicom(tmp_path / "raw.dcm", pixels))
        ds.compress(syntax)
        ds.save_as(tmp_path / "c.dcm", enforce_file_format=True)
        return tmp_path / "c.dcm"

    return write


def _first_frame(path: Path) -> bytes:
    return next(generate_frames(pydicom.dcmread(path).PixelData, number_of_frames=1))


def _with_frame(tmp_path: Path, source: Path, frame: bytes) -> Path:
    ds = pydicom.dcmread(source)
    ds.PixelData = encapsulate([frame])
    path = tmp_path / "edited.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def test_jpegls_zero_lines_that_aborted_charls_is_an_input_error():
    """Fuzz input 240,062 of seed 1: SOF55 declares 16x0, CharLS aborted the process; now refused up front."""
    started = time.perf_counter()
    with pytest.raises(InputError, match=r"declares 16x0 pixels, the DICOM header 16x16") as info:
        read_study(CRASH)
    assert CRASH.name in str(info.value) and "export it again" in str(info.value)
    assert time.perf_counter() - started < 2.0


def test_a_native_decoder_crash_in_the_separate_process_becomes_an_input_error(monkeypatch):
    """The same file forced through the isolated decoder: CharLS dies in the child, we get a clear error."""
    monkeypatch.setattr(isolated, "MEMORY_MARGIN", 64 << 20)  # the child's allocation fails sooner
    ds = pydicom.dcmread(CRASH)
    with pytest.raises(InputError, match=r"decoder (crashed on this file|refused|failed)") as info:
        isolated.decode(CRASH, ds)
    assert CRASH.name in str(info.value) and "gdcmconv" in str(info.value)


def test_isolated_decoding_gives_the_in_process_pixels(compressed):
    path = compressed(JPEGLSLossless, _ramp())
    ds = pydicom.dcmread(path)
    np.testing.assert_array_equal(isolated.decode(path, ds), ds.pixel_array)


@pytest.mark.parametrize(
    ("syntax", "pixels"),
    [
        (JPEGLSLossless, _ramp()),
        (JPEGLSLossless, np.stack([_ramp(8, np.uint8)] * 3, axis=-1)),
        (JPEG2000Lossless, _ramp(32)),
    ],
)
def test_valid_frames_are_vouched_for_and_read_exactly(compressed, syntax, pixels):
    path = compressed(syntax, pixels)
    samples = 3 if pixels.ndim == 3 else 1
    frame = codestream.Frame(pixels.shape[0], pixels.shape[1], samples, pixels.dtype.itemsize * 8)
    assert codestream.check_frame(_first_frame(path), frame, syntax == JPEGLSLossless) == codestream.Verdict()
    study = read_study(path, color=samples == 3)
    np.testing.assert_array_equal(study.pixels[0], pixels.astype(np.float32))


@pytest.mark.parametrize(
    ("offset", "value", "match"),
    [
        (6, 17, "17-bit samples"),  # SOF55 precision above BitsAllocated
        (10, 0, "declares 0x16 pixels"),  # X = 0
        (11, 3, "segment is malformed"),  # Nf = 3 with the length of one component
        (24, 0xFF, "preset parameters out of range"),  # LSE T1 = 0xFF.. above T2
        (38, 3, "scan header out of range"),  # SOS ILV
    ],
)
def test_jpegls_header_fields_that_contradict_the_dicom_header_are_refused(tmp_path, compressed, offset, value, match):
    path = compressed(JPEGLSLossless, _ramp())
    frame = bytearray(_first_frame(path))
    assert frame[2:4] == b"\xff\xf7" and frame[15:17] == b"\xff\xf8" and frame[30:32] == b"\xff\xda"
    frame[offset] = value
    edited = _with_frame(tmp_path, path, bytes(frame))
    with pytest.raises(InputError, match=match):
        read_study(edited)


def test_truncated_jpegls_frame_is_refused_without_calling_the_decoder(tmp_path, compressed):
    """CharLS loops for minutes on a stream cut short: the missing end-of-image marker is refused first."""
    path = compressed(JPEGLSLossless, _ramp())
    frame = _first_frame(path)
    edited = _with_frame(tmp_path, path, frame[: len(frame) - 40])
    started = time.perf_counter()
    with pytest.raises(InputError, match="end-of-image marker"):
        read_study(edited)
    assert time.perf_counter() - started < 2.0


def test_pillow_messages_lose_their_object_addresses(tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    messages = set()
    for name in ("a.png", "b.png"):
        shutil.copy(broken, tmp_path / name)
        with pytest.raises(InputError) as info:
            read_study(tmp_path / name)
        assert " at 0x" not in str(info.value)
        messages.add(str(info.value).replace(name, "X"))
    assert len(messages) == 1
    Image.new("L", (4, 4)).save(tmp_path / "ok.png")
    assert read_study(tmp_path / "ok.png").pixels.shape == (1, 4, 4)

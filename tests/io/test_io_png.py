from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from medanomaly.errors import InputError
from medanomaly.io import read_study


def test_8bit_grey_png(tmp_path):
    grey = (np.arange(12 * 10).reshape(12, 10) * 2).astype(np.uint8)
    Image.fromarray(grey).save(tmp_path / "a.png")
    study = read_study(tmp_path / "a.png")
    assert study.pixels.shape == (1, 12, 10)
    assert study.pixels.dtype == np.uint8
    np.testing.assert_array_equal(study.pixels[0], grey)
    assert study.meta["kind"] == "png"
    assert study.meta["bit_depth"] == 8
    assert study.meta["photometric"] == "MONOCHROME2"


def test_16bit_png_round_trip_keeps_values(tmp_path):
    values = (np.arange(32 * 20).reshape(20, 32) * 97).astype(np.uint16)  # up to 62,000
    Image.fromarray(values).save(tmp_path / "deep.png")
    study = read_study(tmp_path / "deep.png")
    assert study.pixels.dtype == np.uint16
    assert study.meta["bit_depth"] == 16
    assert int(study.pixels.max()) > 255
    np.testing.assert_array_equal(study.pixels[0], values)


def test_16bit_tiff_reads(tmp_path):
    values = (np.arange(64).reshape(8, 8) * 1000).astype(np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.tif")
    study = read_study(tmp_path / "deep.tif")
    assert study.meta["kind"] == "tiff"
    np.testing.assert_array_equal(study.pixels[0], values)


def _rgb() -> np.ndarray:
    rgb = np.zeros((6, 8, 3), np.uint8)
    rgb[..., 0] = 200  # pure red
    rgb[:3, :, 2] = 100
    return rgb


def test_rgb_png_grey_by_default_colour_on_request(tmp_path):
    Image.fromarray(_rgb()).save(tmp_path / "rgb.png")
    grey = read_study(tmp_path / "rgb.png")
    assert grey.pixels.shape == (1, 6, 8)
    assert grey.pixels.dtype == np.uint8
    assert grey.pixels[0, 5, 0] == pytest.approx(0.299 * 200, abs=1)  # luminance, not the mean
    assert grey.pixels[0, 0, 0] == pytest.approx(0.299 * 200 + 0.114 * 100, abs=1)
    colour = read_study(tmp_path / "rgb.png", color=True)
    assert colour.pixels.shape == (1, 6, 8, 3)
    assert colour.meta["photometric"] == "RGB"
    np.testing.assert_array_equal(colour.pixels[0], _rgb())


def test_grey_png_stays_grey_with_color_true(tmp_path):
    Image.fromarray(np.full((4, 4), 9, np.uint8)).save(tmp_path / "g.png")
    assert read_study(tmp_path / "g.png", color=True).pixels.shape == (1, 4, 4)


def test_rgba_composited_over_black(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., :3] = 255
    rgba[:2, :, 3] = 255  # top half opaque white, bottom half fully transparent
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "alpha.png")
    pixels = read_study(tmp_path / "alpha.png").pixels[0]
    assert pixels[:2].tolist() == [[255] * 4] * 2
    assert pixels[2:].tolist() == [[0] * 4] * 2


def test_palette_png_expanded(tmp_path):
    Image.fromarray(_rgb()).convert("P", palette=Image.Palette.ADAPTIVE).save(tmp_path / "pal.png")
    study = read_study(tmp_path / "pal.png", color=True)
    assert study.pixels.shape == (1, 6, 8, 3)
    assert study.meta["mode"] == "P"
    np.testing.assert_array_equal(study.pixels[0], _rgb())


def test_jpeg_and_extensionless_image(tmp_path):
    grey = np.tile(np.arange(0, 256, 16, dtype=np.uint8), (16, 1))
    Image.fromarray(grey).save(tmp_path / "x.jpg", quality=95)
    (tmp_path / "noext").write_bytes((tmp_path / "x.jpg").read_bytes())
    for path in (tmp_path / "x.jpg", tmp_path / "noext"):
        study = read_study(path)
        assert study.meta["kind"] == "jpeg"
        assert np.abs(study.pixels[0].astype(int) - grey).max() <= 4


def test_truncated_png_error(tmp_path):
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(tmp_path / "a.png")
    data = (tmp_path / "a.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="not a readable image") as info:
        read_study(tmp_path / "cut.png")
    assert info.value.path == str(tmp_path / "cut.png")
    assert "\n" not in str(info.value)


def test_garbage_png_error(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"this is not an image at all")
    with pytest.raises(InputError, match="not a readable image"):
        read_study(tmp_path / "bad.png")


def test_pixel_limit_from_env(tmp_path, monkeypatch):
    Image.fromarray(np.zeros((20, 30), np.uint8)).save(tmp_path / "a.png")
    monkeypatch.setenv("MEDANOMALY_MAX_PIXELS", "500")
    with pytest.raises(InputError, match="30x20 = 600 pixels, above the limit of 500") as info:
        read_study(tmp_path / "a.png")
    assert "MEDANOMALY_MAX_PIXELS" in info.value.hint
    monkeypatch.setenv("MEDANOMALY_MAX_PIXELS", "600")
    assert read_study(tmp_path / "a.png").pixels.shape == (1, 20, 30)


def test_bad_pixel_limit_value(tmp_path, monkeypatch):
    Image.fromarray(np.zeros((2, 2), np.uint8)).save(tmp_path / "a.png")
    monkeypatch.setenv("MEDANOMALY_MAX_PIXELS", "lots")
    with pytest.raises(ValueError, match="MEDANOMALY_MAX_PIXELS"):
        read_study(tmp_path / "a.png")

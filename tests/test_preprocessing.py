import numpy as np
import pytest

from medanomaly.transforms import Preprocessing, apply_window, equalize, parse_window, percentile_normalize, resize_pad
from medanomaly.types import Study


def test_window_presets_and_custom() -> None:
    assert parse_window("lung") == (-600.0, 1500.0)
    assert parse_window("40,80") == (40.0, 80.0)
    assert parse_window("dicom", (30.0, 300.0)) == (30.0, 300.0)
    with pytest.raises(ValueError, match="no WindowCenter"):
        parse_window("dicom", None)
    with pytest.raises(ValueError, match="unknown window"):
        parse_window("liver-ish")


def test_apply_window_maps_edges_to_0_and_1() -> None:
    hu = np.array([-2000.0, -1350.0, -600.0, 150.0, 3000.0])
    np.testing.assert_allclose(apply_window(hu, -600, 1500), [0, 0, 0.5, 1, 1])


def test_percentile_normalize_is_robust_to_outliers() -> None:
    values = np.linspace(0, 100, 1001)
    values[0] = -1e6
    out = percentile_normalize(values, 1, 99)
    assert out.min() == 0 and out.max() == 1
    assert 0.45 < out[500] < 0.55
    assert not percentile_normalize(np.full((4, 4), 7.0)).any()


def test_equalize_variants() -> None:
    image = np.linspace(0, 0.2, 64 * 64).reshape(64, 64).astype(np.float32)
    assert equalize(image, "hist").max() > 0.9
    assert equalize(image, "clahe").shape == image.shape
    with pytest.raises(ValueError, match="unknown equalisation"):
        equalize(image, "gamma")


def test_resize_pad_keeps_aspect_and_inverts() -> None:
    image = np.ones((50, 100), np.float32)
    out, geometry = resize_pad(image, 64)
    assert out.shape == (64, 64)
    assert geometry.resized_shape == (32, 64)
    assert geometry.offset == (16, 0)
    assert out[:16].sum() == 0 and out[48:].sum() == 0 and out[16:48].min() > 0.99
    back = geometry.to_original(out)
    assert back.shape == (50, 100)
    assert back.min() > 0.99


def test_ct_in_hounsfield_is_windowed_by_default() -> None:
    hu = np.full((2, 16, 16), -600.0, np.float32)
    hu[:, :8] = 1000.0
    study = Study(hu, {"modality": "CT", "kind": "dicom_series"})
    batch, _ = Preprocessing(resolution=16).apply(study)
    assert batch.shape == (2, 1, 16, 16)
    assert np.isclose(batch[0, 0, 12, 12], 0.5)  # lung window centre
    assert batch[0, 0, 2, 2] == 1.0
    mediastinum, _ = Preprocessing(resolution=16, window="mediastinum").apply(study)
    assert mediastinum[0, 0, 12, 12] == 0.0


def test_png_uses_percentile_and_colour_modes() -> None:
    rgb = np.zeros((1, 8, 8, 3), np.uint8)
    rgb[..., 0] = np.arange(8)[None, :, None] * 30
    grey, _ = Preprocessing(resolution=8).apply(Study(rgb, {"kind": "png"}))
    colour, _ = Preprocessing(resolution=8, channels=3).apply(Study(rgb, {"kind": "png"}))
    assert grey.shape == (1, 1, 8, 8) and colour.shape == (1, 3, 8, 8)
    assert colour[0, 1:].max() == 0  # green and blue stay empty


def test_minmax_respects_16_bit_depth() -> None:
    pixels = np.full((1, 8, 8), 65535 // 2, np.uint16)
    batch, _ = Preprocessing(resolution=8, normalize="minmax").apply(Study(pixels, {"bit_depth": 16}))
    assert np.allclose(batch, 0.5, atol=1e-4)


def test_round_trip_and_validation() -> None:
    config = Preprocessing(resolution=64, window="lung", percentiles=(1.0, 99.0), equalize="clahe")
    assert Preprocessing.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown preprocessing keys"):
        Preprocessing.from_dict({"resolution": 64, "colour": True})
    with pytest.raises(ValueError, match="normalize"):
        Preprocessing(normalize="zscore")

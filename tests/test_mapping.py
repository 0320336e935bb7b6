import json

import numpy as np
import pytest

from medanomaly.mapping import (
    Finding,
    aggregate_slices,
    filter_map,
    find_regions,
    overlay,
    resize_map,
    topk_mean,
)


def _salt_and_blob() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    image = np.zeros((40, 40), dtype=np.float32)
    salt = rng.random((40, 40)) < 0.03
    image[salt] = 1.0
    blob = np.zeros_like(salt)
    blob[10:15, 20:25] = True
    image[blob] = 1.0
    return image, blob


def test_median_filter_removes_salt_keeps_blob():
    image, blob = _salt_and_blob()
    filtered = filter_map(image, size=5)
    assert filtered.dtype == np.float32
    assert filtered.shape == image.shape
    assert filtered[12, 22] == 1.0  # blob centre survives
    far_from_blob = np.ones_like(blob)
    far_from_blob[6:19, 16:29] = False
    assert filtered[far_from_blob].max() == 0.0  # isolated salt is gone
    assert image[far_from_blob].max() == 1.0


def test_size_one_returns_copy():
    image, _ = _salt_and_blob()
    out = filter_map(image, size=1)
    np.testing.assert_array_equal(out, image)
    out[0, 0] = 42.0
    assert image[0, 0] != 42.0


def test_3d_filter_uses_neighbouring_slices():
    volume = np.zeros((5, 20, 20), dtype=np.float32)
    volume[2, 6:13, 6:13] = 1.0  # a 7x7 spike present in one slice only
    in_3d = filter_map(volume, size=5)  # default: volume=True for S > 1
    per_slice = filter_map(volume, size=5, volume=False)
    assert in_3d[2].max() == 0.0
    assert per_slice[2, 9, 9] == 1.0
    assert per_slice[[0, 1, 3, 4]].max() == 0.0


def test_3d_filter_keeps_structure_spanning_slices():
    volume = np.zeros((5, 20, 20), dtype=np.float32)
    volume[1:4, 6:13, 6:13] = 1.0
    assert filter_map(volume, size=5)[2, 9, 9] == 1.0


def test_single_slice_stack_is_filtered_in_2d():
    image, _ = _salt_and_blob()
    np.testing.assert_array_equal(filter_map(image[None], size=5)[0], filter_map(image, size=5))


def test_filter_rejects_bad_rank():
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        filter_map(np.zeros(10))


def test_topk_mean():
    values = np.arange(100, dtype=float)
    assert topk_mean(values, 0.05) == pytest.approx(97.0)
    assert topk_mean(values, 0.001) == 99.0  # at least one value
    assert topk_mean(values, 1.0) == pytest.approx(49.5)
    with pytest.raises(ValueError, match="empty"):
        topk_mean(np.array([]))
    with pytest.raises(ValueError, match="fraction"):
        topk_mean(values, 0.0)


def test_aggregate_slices_variants():
    scores = np.array([0.1, 0.5, 0.2, 0.9, 0.3, 0.0, 0.4, 0.6, 0.7, 0.8])
    assert aggregate_slices(scores, "max") == 0.9
    assert aggregate_slices(scores, "mean") == pytest.approx(0.45)
    assert aggregate_slices(scores, "topk", k=2) == pytest.approx(0.85)
    assert aggregate_slices(scores, "topk", k=0.3) == pytest.approx(0.8)
    assert aggregate_slices(scores, "topk", k=0.01) == 0.9  # at least one slice
    assert aggregate_slices(scores, "topk", k=50) == pytest.approx(0.45)  # count clipped to S
    assert aggregate_slices(scores) == 0.9  # default top 10 % of 10 slices = 1 slice


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"how": "median"}, "unknown slice aggregation"), ({"k": 0}, "at least 1"), ({"k": 1.5}, "fraction")],
)
def test_aggregate_slices_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        aggregate_slices(np.array([0.1, 0.2]), **kwargs)
    with pytest.raises(ValueError, match="non-empty"):
        aggregate_slices(np.array([]))


def test_find_regions_two_blobs_and_drops_tiny():
    heat = np.zeros((32, 32), dtype=np.float32)
    heat[2:6, 3:9] = 0.8  # 4 x 6 = 24 px
    heat[20:25, 10:13] = 0.5  # 5 x 3 = 15 px
    heat[21, 11] = 0.95  # peak of the second blob
    heat[30, 30] = 1.0  # single pixel: dropped by min_area
    findings = find_regions(heat, 0.3, min_area=4, spacing=(0.5, 0.25))
    assert len(findings) == 2
    first, second = findings  # sorted by max_score
    assert first.bbox == (20, 10, 25, 13)
    assert first.area_px == 15
    assert first.max_score == pytest.approx(0.95)
    assert first.area_mm2 == pytest.approx(15 * 0.125)
    assert first.centroid == pytest.approx((22.0, 11.0))
    assert second.bbox == (2, 3, 6, 9)
    assert second.area_px == 24
    assert second.mean_score == pytest.approx(0.8)
    assert all(f.slice_index == 0 for f in findings)


def test_find_regions_volume_and_limits():
    volume = np.zeros((3, 16, 16), dtype=np.float32)
    volume[0, 1:4, 1:4] = 0.6
    volume[2, 8:12, 8:12] = 0.9
    volume[2, 1:3, 12:14] = 0.7
    findings = find_regions(volume, 0.5, min_area=4)
    assert [(f.slice_index, f.bbox) for f in findings] == [(2, (8, 8, 12, 12)), (2, (1, 12, 3, 14)), (0, (1, 1, 4, 4))]
    assert findings[0].area_mm2 is None
    assert len(find_regions(volume, 0.5, max_findings=1)) == 1
    assert find_regions(volume, 0.95) == []
    assert len(find_regions(volume, 0.5, min_area=10)) == 1


def test_diagonal_pixels_form_one_region():
    heat = np.eye(6, dtype=np.float32)
    assert len(find_regions(heat, 0.5, min_area=1)) == 1


def test_finding_to_dict_is_json():
    finding = find_regions(np.pad(np.ones((3, 3)), 2), 0.5)[0]
    as_dict = finding.to_dict()
    assert json.loads(json.dumps(as_dict)) == as_dict
    assert as_dict["bbox"] == [2, 2, 5, 5]
    assert isinstance(finding, Finding)


def test_overlay_shape_dtype_and_untinted_pixels():
    image = np.linspace(0, 1, 16 * 16).reshape(16, 16)
    heat = np.zeros((16, 16))
    heat[4:8, 4:8] = 1.0
    out = overlay(image, heat, mask_below=0.5)
    assert out.shape == (16, 16, 3)
    assert out.dtype == np.uint8
    grey = np.round(image * 255).astype(np.uint8)
    untinted = heat < 0.5
    for channel in range(3):
        np.testing.assert_array_equal(out[..., channel][untinted], grey[untinted])
    tinted = out[4:8, 4:8].astype(int)
    assert np.abs(tinted[..., 0] - tinted[..., 2]).min() > 20  # coloured, not grey


def test_overlay_without_mask_tints_everything_and_accepts_rgb():
    image = np.full((8, 8, 3), 0.5)
    out = overlay(image, np.zeros((8, 8)), alpha=1.0)
    assert (out != 128).any(axis=2).all()
    with pytest.raises(ValueError, match="resize_map"):
        overlay(image, np.zeros((4, 4)))


def test_resize_map():
    heat = np.arange(16, dtype=np.float32).reshape(4, 4)
    up = resize_map(heat, (8, 8))
    assert up.shape == (8, 8)
    assert up.dtype == np.float32
    assert up.min() >= 0.0
    assert up.max() <= 15.0
    assert up.max() > 10.0  # range preserved, not rescaled to [0, 1]
    stack = resize_map(np.stack([heat, heat * 2]), (2, 6))
    assert stack.shape == (2, 2, 6)
    np.testing.assert_allclose(stack[1], 2 * stack[0], rtol=1e-6)

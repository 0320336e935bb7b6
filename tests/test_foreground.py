"""Label-free foreground masks: the head/body outline leaves out background, padding and burnt-in text."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medanomaly.detectors.residual_score import masked_scores, resolve_foreground
from medanomaly.transforms.foreground import available_masks, has_dark_frame, masks


def _head(size: int = 64) -> np.ndarray:
    """A bright disc (head) with a dark hole (ventricle), a tiny bright label in a corner, zero background."""
    rows, cols = np.mgrid[:size, :size]
    image = np.zeros((size, size), np.float32)
    image[(rows - 32) ** 2 + (cols - 30) ** 2 < 20**2] = 0.7
    image[(rows - 30) ** 2 + (cols - 30) ** 2 < 5**2] = 0.05
    image[2:5, 56:62] = 1.0  # burnt-in text
    return image


def test_outline_covers_the_head_and_its_dark_inside_but_not_text_or_background() -> None:
    image = _head()
    mask = masks(image[None, None], "auto")[0]
    assert mask[30, 30] and mask[32, 45]  # ventricle and tissue
    assert not mask[3, 58] and not mask[0, 0] and not mask[32, 62]
    assert 0.25 < mask.mean() < 0.32  # the disc (0.31 of the image) minus an eroded rim


def test_outline_includes_dark_lungs_that_touch_the_cut_edge() -> None:
    image = np.zeros((64, 64), np.float32)
    image[16:48, 0:64] = 0.8  # body cropped at both sides
    image[20:44, 4:28] = image[20:44, 36:60] = 0.05  # lungs, nearly open to the sides
    mask = masks(image[None, None], "outline")[0]
    assert mask[32, 16] and mask[32, 48] and not mask[4, 32] and not mask[60, 32]


def test_auto_keeps_the_whole_field_of_a_radiograph() -> None:
    rng = np.random.default_rng(0)
    image = rng.uniform(0.3, 0.9, (64, 64)).astype(np.float32)
    assert not has_dark_frame(image) and has_dark_frame(_head())
    assert masks(image[None, None], "auto").all()


def test_empty_images_fall_back_to_the_whole_image_and_names_are_checked() -> None:
    assert masks(np.zeros((2, 1, 16, 16), np.float32), "outline").all()
    assert {"auto", "outline", "body", "lung", "none"} <= set(available_masks())
    with pytest.raises(ValueError, match="available"):
        masks(np.zeros((1, 1, 16, 16), np.float32), "kidney")


def test_auto_is_resolved_once_per_training_set() -> None:
    heads = torch.from_numpy(np.stack([_head()] * 5)[:, None])
    radiographs = torch.rand(5, 1, 64, 64) * 0.6 + 0.3
    assert resolve_foreground("auto", heads) == "outline"
    assert resolve_foreground("auto", radiographs) == "none"
    assert resolve_foreground("lung", heads) == "lung"


def test_scores_count_only_the_foreground() -> None:
    images = torch.from_numpy(_head()[None, None])
    residual = torch.full((1, 64, 64), 0.1)
    residual[0, :6] = 5.0  # a bright error band in the background (text, border)
    residual[0, 28:34, 20:26] = 1.0  # a lesion inside
    scores, maps, mask = masked_scores(residual, images, "outline", "mean", 0.1)
    inside = mask[0].bool()
    assert (maps[0][~inside] == 0).all() and maps[0][inside].max() == 1.0
    torch.testing.assert_close(scores, residual[0][inside].mean().reshape(1))
    top, _, _ = masked_scores(residual, images, "outline", "topk", 36 / inside.sum().item())
    assert 0.5 < top.item() <= 1.0  # the lesion (median-filtered), not the background band
    whole, _, _ = masked_scores(residual, images, "none", "mean", 0.1)
    torch.testing.assert_close(whole, residual.mean().reshape(1))

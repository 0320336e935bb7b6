"""Shared feature-map helpers: upsampling + Gaussian smoothing as matrix products, locally aware concatenation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter

from medanomaly.features.maps import concat_layers, smooth_maps


@pytest.mark.parametrize("sigma", [0.0, 1.5, 4.0])
def test_smooth_maps_equals_bilinear_upsampling_then_a_mirrored_gaussian(sigma: float) -> None:
    maps = torch.rand(3, 7, 5, generator=torch.Generator().manual_seed(0))
    size = (56, 40)
    upsampled = F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0].numpy()
    expected = np.stack([gaussian_filter(m, sigma, mode="mirror", truncate=4.0) if sigma else m for m in upsampled])
    np.testing.assert_allclose(smooth_maps(maps, size, sigma).numpy(), expected, rtol=1e-5, atol=1e-5)


def test_smooth_maps_keeps_a_constant_map_constant_and_the_size() -> None:
    out = smooth_maps(torch.full((2, 4, 4), 3.0), (9, 9), sigma=4.0)  # kernel longer than the map: truncated
    assert out.shape == (2, 9, 9)
    torch.testing.assert_close(out, torch.full((2, 9, 9), 3.0))


def test_concat_layers_upsamples_deeper_maps_to_the_first_grid() -> None:
    shallow, deep = torch.rand(2, 4, 8, 8), torch.rand(2, 6, 4, 4)
    out = concat_layers([shallow, deep], mode="nearest", pool=1)
    assert out.shape == (2, 10, 8, 8)
    torch.testing.assert_close(out[:, :4], shallow)
    torch.testing.assert_close(out[:, 4:, ::2, ::2], deep)

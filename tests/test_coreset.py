"""Greedy k-center coreset: same picks as the plain algorithm, and a covering radius that really covers."""

from __future__ import annotations

import numpy as np
import pytest

from medanomaly.detectors.patchcore import k_center_greedy, random_projection


def brute_force_k_center(points: np.ndarray, n_centers: int, start: int) -> tuple[list[int], list[float], float]:
    """The textbook greedy loop in float64: picks, their distances when picked, final covering radius."""
    points = points.astype(np.float64)
    distances = np.full(len(points), np.inf)
    picks, pick_distances, current, value = [], [], start, np.inf
    for _ in range(n_centers):
        picks.append(current)
        pick_distances.append(value)
        distances = np.minimum(distances, np.linalg.norm(points - points[current], axis=1))
        current = int(np.argmax(distances))
        value = float(distances[current])
    return picks, pick_distances, float(distances.max())


def _clustered(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    centers = rng.normal(scale=4.0, size=(12, dim))
    return (centers[rng.integers(0, 12, n)] + rng.normal(size=(n, dim))).astype(np.float32)


@pytest.mark.parametrize(
    ("n", "dim", "n_centers", "n_groups", "kind"),
    [
        (400, 8, 50, None, "gauss"),
        (1500, 32, 200, 6, "clustered"),
        (2000, 3, 300, 40, "clustered"),
        (300, 2, 299, 3, "gauss"),
    ],
)
def test_picks_equal_brute_force(n, dim, n_centers, n_groups, kind) -> None:
    rng = np.random.default_rng(n + dim)
    points = _clustered(rng, n, dim) if kind == "clustered" else rng.normal(size=(n, dim)).astype(np.float32)
    result = k_center_greedy(points, n_centers, start=7, n_groups=n_groups)
    picks, pick_distances, radius = brute_force_k_center(points, n_centers, start=7)
    assert result.indices.tolist() == picks
    np.testing.assert_allclose(result.pick_distances[1:], pick_distances[1:], rtol=1e-4, atol=1e-4)
    assert np.isinf(result.pick_distances[0])
    assert result.radius == pytest.approx(radius, rel=1e-4, abs=1e-4)


def test_every_point_lies_within_the_reported_radius() -> None:
    rng = np.random.default_rng(3)
    points = _clustered(rng, 3000, 16)
    result = k_center_greedy(points, 150, start=0)
    chosen = points[result.indices].astype(np.float64)
    to_coreset = np.sqrt(((points[:, None, :] - chosen[None, :, :]) ** 2).sum(-1)).min(axis=1)
    assert to_coreset.max() <= result.radius * (1 + 1e-5) + 1e-5
    assert to_coreset.max() == pytest.approx(result.radius, rel=1e-4)  # and the radius is tight
    assert len(set(result.indices.tolist())) == 150
    assert np.all(np.diff(result.pick_distances[1:]) <= 1e-5)  # greedy distances never increase


def test_asking_for_everything_returns_every_point() -> None:
    points = np.random.default_rng(0).normal(size=(40, 4)).astype(np.float32)
    result = k_center_greedy(points, 100)
    assert sorted(result.indices.tolist()) == list(range(40))
    assert result.radius == pytest.approx(0.0, abs=1e-3)


def test_rejects_bad_points() -> None:
    with pytest.raises(ValueError, match=r"\(N, d\)"):
        k_center_greedy(np.zeros((0, 3), dtype=np.float32), 2)
    with pytest.raises(ValueError, match=r"\(N, d\)"):
        k_center_greedy(np.zeros(5, dtype=np.float32), 2)


def test_random_projection_roughly_preserves_distances() -> None:
    rng = np.random.default_rng(1)
    points = rng.normal(size=(200, 152)).astype(np.float32)
    matrix = random_projection(152, 32, seed=5)
    assert matrix.shape == (152, 32) and matrix.dtype == np.float32
    np.testing.assert_array_equal(matrix, random_projection(152, 32, seed=5))
    before = np.linalg.norm(points[:100] - points[100:], axis=1)
    after = np.linalg.norm((points[:100] - points[100:]) @ matrix, axis=1)
    ratio = after / before
    assert 0.85 < ratio.mean() < 1.15 and ratio.std() < 0.25

"""Greedy k-center coreset selection, exact and fast on a CPU.

PatchCore (Roth et al., CVPR 2022, https://arxiv.org/abs/2106.08265, Algorithm 1) reduces its memory bank with the
greedy k-center rule of Sener & Savarese (ICLR 2018, https://arxiv.org/abs/1708.00489): repeatedly add the point
farthest from the points chosen so far. Done naively, every pick updates the distance of every point (N x d work
per pick, an hour for 1 M patches at ratio 0.1 on 2 cores).

Here the picks are the same, but the work is lazy and blocked. The points are split into compact groups (a few
Lloyd iterations of k-means), each with a centroid and a radius. A group keeps the exact distances of its points to
the centers applied to it so far and their maximum, an upper bound of the group's true maximum (more centers only
lower distances). The next pick is found by repeatedly taking the group with the largest bound and applying the
centers it has not seen in one matrix product, skipping those that cannot reach it (by the triangle inequality a
center farther than ``radius + current group maximum`` from the centroid cannot lower any distance there). Once the
top group is up to date its maximum is exact and no other group can beat it, so its farthest point is the true
greedy pick. Groups whose bound falls below the covering radius are never touched again.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits

logger = logging.getLogger(__name__)
_SLACK = 1e-4  # relative tolerance on the pruning test, for float32 rounding
_CHUNKS = 4  # most matrix products per group update
_BLOCK = 8192  # rows per block of the set-up passes (bounded temporaries)


@dataclass
class CoresetResult:
    """The outcome of :func:`k_center_greedy`.

    Attributes:
        indices: (K,) indices of the chosen points, in the order they were picked.
        pick_distances: (K,) distance of each pick to the earlier picks when it was chosen (inf for the first);
            ``pick_distances[k]`` is the covering radius of the first ``k`` picks.
        radius: Covering radius of all K picks: every point lies within it of a chosen point.
    """

    indices: np.ndarray
    pick_distances: np.ndarray
    radius: float


def random_projection(n_features: int, n_components: int, seed: int) -> np.ndarray:
    """(n_features, n_components) Gaussian Johnson-Lindenstrauss matrix scaled to preserve distances on average."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n_features, n_components)) / math.sqrt(n_components)).astype(np.float32)


def _group_sums(points: np.ndarray, labels: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """(n_groups, d) float64 sums of the points of each group, and (n_groups,) counts."""
    sums = np.stack([np.bincount(labels, weights=column, minlength=n_groups) for column in points.T], axis=1)
    return sums, np.bincount(labels, minlength=n_groups)


def _nearest_centroid(points: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """(N,) index of the nearest centroid, in blocks (bounded memory)."""
    labels = np.empty(len(points), dtype=np.int64)
    centroid_norms = np.einsum("ij,ij->i", centroids, centroids)
    for start in range(0, len(points), _BLOCK):
        block = points[start : start + _BLOCK]
        labels[start : start + _BLOCK] = (centroid_norms[None, :] - 2.0 * block @ centroids.T).argmin(axis=1)
    return labels


def _partition(points: np.ndarray, n_groups: int, rng: np.random.Generator) -> np.ndarray:
    """(N,) group label of each point from a few Lloyd iterations of k-means on a subsample."""
    sample = points[rng.choice(len(points), size=min(len(points), 32 * n_groups), replace=False)]
    centroids = sample[rng.choice(len(sample), size=n_groups, replace=False)].copy()
    for _ in range(4):
        sums, counts = _group_sums(sample, _nearest_centroid(sample, centroids), n_groups)
        filled = counts > 0
        centroids[filled] = sums[filled] / counts[filled, None]
    return _nearest_centroid(points, centroids)


def _augment(points: np.ndarray, center: bool) -> np.ndarray:
    """Rows ``[x, |x|^2, 1]`` (points) or ``[-2c, 1, |c|^2]`` (centers), float32: their dot product is |x - c|^2."""
    norms = np.einsum("ij,ij->i", points, points)[:, None]
    ones = np.ones_like(norms)
    parts = [-2.0 * points, ones, norms] if center else [points, norms, ones]
    return np.concatenate(parts, axis=1).astype(np.float32, copy=False)


class _Groups:
    """Points sorted by group, with per-group bounds and lazily applied centers (see the module docstring).

    Args:
        points: (N, d) float32 points.
        labels: (N,) group of each point.
        capacity: Most centers that will be added.
    """

    def __init__(self, points: np.ndarray, labels: np.ndarray, capacity: int) -> None:
        sums, counts = _group_sums(points, labels, int(labels.max()) + 1)
        filled = counts > 0
        centroids, counts = sums[filled] / counts[filled, None], counts[filled]
        labels = np.cumsum(filled)[labels] - 1  # renumber without empty groups
        shift = points.mean(axis=0, dtype=np.float64)  # centred coordinates: small norms, exact expansion
        self.centroids = centroids - shift
        spread = np.concatenate([
            np.linalg.norm(points[i : i + _BLOCK] - centroids[labels[i : i + _BLOCK]], axis=1)
            for i in range(0, len(points), _BLOCK)
        ])  # fmt: skip
        self.order = np.lexsort((-spread, labels))  # by group, then farthest from the centroid first
        self.spread = spread[self.order]
        self.bounds = np.concatenate([[0], np.cumsum(counts)])
        self.radii = self.spread[self.bounds[:-1]].copy()
        # [x, |x|^2, 1] . [-2c, 1, |c|^2] = |x - c|^2: one matrix product per update, nothing element-wise
        self.rows = np.empty((len(points), points.shape[1] + 2), dtype=np.float32)
        for i in range(0, len(points), _BLOCK):
            block = (points[self.order[i : i + _BLOCK]] - shift).astype(np.float32)
            self.rows[i : i + _BLOCK] = _augment(block, center=False)
        self.centroid_rows = _augment(self.centroids.astype(np.float32), center=False)
        self.centers = np.zeros((capacity, points.shape[1] + 2), dtype=np.float32)
        self.n_centers = 0
        self.applied = np.zeros(len(counts), dtype=np.int64)  # centers [0, applied[g]) are in distances
        self.distances = np.full(len(points), np.inf, dtype=np.float32)
        self.keys = np.full(len(counts), np.inf)
        self.work = 0  # point-center distances computed

    def add_center(self, position: int) -> None:
        """Record the point at sorted ``position`` as the next center (applied lazily)."""
        self.centers[self.n_centers] = _augment(self.rows[position : position + 1, :-2], center=True)[0]
        self.n_centers += 1

    def _apply(self, group: int) -> None:
        first, key = self.applied[group], self.keys[group] * (1 + _SLACK) + _SLACK
        self.applied[group] = self.n_centers
        reach = np.sqrt(np.maximum(self.centers[first : self.n_centers] @ self.centroid_rows[group], 0.0))
        useful = np.flatnonzero(reach < key + self.radii[group])
        if len(useful) == 0:
            return
        start, stop = self.bounds[group], self.bounds[group + 1]
        # a center at distance D from the centroid only reaches points with spread > D - key: a prefix of the group;
        # centers sorted by prefix length are applied in a few chunks, each to the longest prefix it needs
        prefixes = np.searchsorted(-self.spread[start:stop], key - reach[useful], side="left")
        by_prefix = np.argsort(-prefixes, kind="stable")
        for chunk in np.array_split(by_prefix, min(_CHUNKS, max(1, len(by_prefix) // 32))):
            rows = start + int(prefixes[chunk[0]])
            self.work += (rows - start) * len(chunk)
            squared = self.centers[first + useful[chunk]] @ self.rows[start:rows].T
            nearest = np.sqrt(np.maximum(squared.min(axis=0), 0.0))
            np.minimum(self.distances[start:rows], nearest, out=self.distances[start:rows])
        self.keys[group] = float(self.distances[start:stop].max())

    def farthest(self) -> tuple[int, float]:
        """Sorted position and distance of the point farthest from all centers so far."""
        while True:
            group = int(np.argmax(self.keys))
            if self.applied[group] == self.n_centers:
                break
            self._apply(group)
        start, stop = self.bounds[group], self.bounds[group + 1]
        offset = int(np.argmax(self.distances[start:stop]))
        return int(start + offset), float(self.keys[group])


def k_center_greedy(
    points: np.ndarray, n_centers: int, start: int = 0, n_groups: int | None = None, seed: int = 0
) -> CoresetResult:
    """Pick ``n_centers`` points by the greedy k-center rule (each pick the point farthest from earlier picks).

    Args:
        points: (N, d) float32 points (e.g. randomly projected patch features).
        n_centers: Number of points to pick (clipped to N).
        start: Index of the first pick.
        n_groups: Number of groups for the lazy updates; None = about N / 512.
        seed: Seed of the grouping (does not change the picks, only the speed).

    Returns:
        The picked indices in pick order, their pick distances and the final covering radius.
    """
    points = np.asarray(points, dtype=np.float32)
    n_points = len(points)
    if points.ndim != 2 or n_points == 0:
        msg = f"k_center_greedy: points must be a non-empty (N, d) array, got shape {points.shape}"
        raise ValueError(msg)
    n_centers = max(1, min(int(n_centers), n_points))
    n_groups = n_groups or int(np.clip(n_points // 512, 1, 4096))
    labels = _partition(points, min(n_groups, n_points), np.random.default_rng(seed))
    groups = _Groups(points, labels, n_centers)
    position = int(np.flatnonzero(groups.order == start)[0])
    picks, pick_distances, distance = [], [], math.inf
    with threadpool_limits(limits=1, user_api="blas"):  # small products: threads only add sync cost (10x on 2 cores)
        for _ in range(n_centers):
            picks.append(position)
            pick_distances.append(distance)
            groups.add_center(position)
            position, distance = groups.farthest()
    radius = max(distance, 0.0)
    logger.info(
        "k-center: %d of %d points, covering radius %.4g, %.1f%% of the brute-force distance work",
        n_centers, n_points, radius, 100 * groups.work / (n_points * n_centers),
    )  # fmt: skip
    return CoresetResult(groups.order[np.asarray(picks)], np.asarray(pick_distances), radius)

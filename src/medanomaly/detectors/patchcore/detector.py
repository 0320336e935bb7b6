"""PatchCore: nearest-neighbour distance to a coreset of pretrained patch features of normal images.

Roth et al., "Towards Total Recall in Industrial Anomaly Detection", CVPR 2022, https://arxiv.org/abs/2106.08265.
Fit: locally aware patch features (3x3 average pooling of two intermediate backbone stages, the deeper upsampled
to the shallower's grid, concatenated; optionally randomly projected) of every normal patch, reduced by greedy
k-center coreset subsampling (selection in a random ~32-dimensional projection, see ``coreset.py``). Score: each
patch's distance to its nearest bank entry (bounded search: IVF cells through faiss when it is installed, else
coarse-level bounds, see ``memory_bank.py``; the image maximum is exact either way) forms the map, upsampled to the
input and Gaussian-smoothed (sigma 4); the image score is the largest patch distance re-weighted by the paper's
Eq. 7 with the ``num_neighbors`` bank neighbours of that patch's nearest entry.

Only the bank (and the optional projection) is saved; the backbone is rebuilt from its name and weights path.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any, ClassVar, Self

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from medanomaly.detectors.base import BaseDetector
from medanomaly.detectors.patchcore.cells import cell_count, faiss_available, train_centroids
from medanomaly.detectors.patchcore.coreset import k_center_greedy, random_projection
from medanomaly.detectors.patchcore.memory_bank import MemoryBank
from medanomaly.features import FeatureExtractor
from medanomaly.features.maps import concat_layers, smooth_maps
from medanomaly.registry import register
from medanomaly.training.context import RunConfig
from medanomaly.types import Prediction

logger = logging.getLogger(__name__)
_SEARCHES = ("auto", "cells", "bounded", "exact")


class _Projection(nn.Module):
    """Optional fixed random projection of the patch features (a buffer, saved with the bank)."""

    def __init__(self, in_dim: int, out_dim: int | None) -> None:
        super().__init__()
        self.register_buffer("matrix", torch.zeros(in_dim, out_dim) if out_dim else torch.zeros(0))

    def forward(self, x: Tensor) -> Tensor:
        """(..., in_dim) -> (..., out_dim), or ``x`` unchanged without a projection."""
        return x @ self.matrix if self.matrix.ndim == 2 else x


@register("patchcore")
class PatchCore(BaseDetector):
    """PatchCore with a coreset memory bank of pretrained patch features.

    Args:
        backbone: Feature backbone (:func:`medanomaly.features.available_backbones`).
        layers: Two (or more) intermediate layers; None = the backbone's default pair.
        weights: Backbone state-dict path; None = bundled weights (EfficientNet-Lite0).
        coreset_ratio: Fraction of all training patches kept in the bank (paper default 0.1; 1 keeps all).
        coreset_dim: Dimension of the random projection used only to *select* the coreset; None = full features.
        embedding_dim: Optional random projection of the stored/scored features (None = keep all channels).
        num_neighbors: Bank neighbours used by the score re-weighting (paper's b; 1 disables re-weighting).
        sigma: Gaussian smoothing of the map, in input pixels (paper: 4).
        search: How patch distances are found. ``cells``: IVF upper bounds (faiss), ``bounded``: coarse-level upper
            bounds (torch only); both make each image's maximum, hence the score, exact and leave upper bounds
            elsewhere in the map. ``exact``: every patch exact (brute force; the fastest on a GPU). ``auto``:
            ``exact`` on a GPU, else ``cells`` when the model has cells and faiss is installed, else ``bounded``,
            chosen at fit time and kept by the saved model (so its maps do not change with the machine).
        n_cells: IVF cells trained at fit time when faiss is installed (fewer for a small bank; 0 = none).
        n_probe: Cells searched per patch by ``cells`` (more: tighter map, slower).
        coarse_size: Coarse-level size of ``bounded``.
        runtime: Feature extractor runtime (``auto``, ``torch``, ``onnx``); what ``auto`` chose at fit time is saved
            with the model and used when it scores.
        random_state: Seed of the projections and of the first coreset pick.
    """

    tiny_params: ClassVar[dict[str, Any]] = {"backbone": "tiny", "coreset_ratio": 0.25, "runtime": "torch"}
    tiny_train: ClassVar[dict[str, Any]] = {"batch_size": 64}

    def __init__(
        self,
        backbone: str = "efficientnet_lite0",
        layers: list[str] | None = None,
        weights: str | None = None,
        coreset_ratio: float = 0.1,
        coreset_dim: int | None = 32,
        embedding_dim: int | None = None,
        num_neighbors: int = 9,
        sigma: float = 4.0,
        search: str = "auto",
        n_cells: int = 1024,
        n_probe: int = 3,
        coarse_size: int = 2048,
        runtime: str = "auto",
        random_state: int | None = 0,
    ) -> None:
        self.backbone = backbone
        self.layers = layers
        self.weights = weights
        self.coreset_ratio = coreset_ratio
        self.coreset_dim = coreset_dim
        self.embedding_dim = embedding_dim
        self.num_neighbors = num_neighbors
        self.sigma = sigma
        self.search = search
        self.n_cells = n_cells
        self.n_probe = n_probe
        self.coarse_size = coarse_size
        self.runtime = runtime
        self.random_state = random_state

    # --- fitting ------------------------------------------------------------------------------------------------
    def _fit(self, normal: Tensor, *, mixed: Tensor | None, abnormal: Tensor | None, run: RunConfig) -> Self:
        """Extract the patch features of ``normal`` (N, C, H, W) in [0, 1] and keep a coreset of them.

        Args:
            normal: Healthy images.
            mixed: Unused.
            abnormal: Unused.
            run: Batch size, device and progress bars.
        """
        self._validate(normal)
        batch_size, device, progress = run.batch_size, run.torch_device, run.progress
        seed = int(self.random_state or 0)
        extractor = self._make_extractor().to(device)
        in_dim = sum(extractor.out_channels)
        self.projection_ = _Projection(in_dim, self.embedding_dim)
        if self.embedding_dim:
            self.projection_.matrix.copy_(torch.from_numpy(random_projection(in_dim, self.embedding_dim, seed + 1)))
        self.projection_.to(device)
        started = time.perf_counter()
        features = self._embed_all(normal, extractor, batch_size, progress)
        n_select = max(1, min(len(features), math.ceil(self.coreset_ratio * len(features))))
        extracted = time.perf_counter()
        rows, radius = self._select(features, n_select, seed)
        selected = time.perf_counter()
        n_cells = cell_count(len(rows), self.n_cells)
        bank = MemoryBank(len(rows), features.shape[1], n_cells)
        bank.bank.copy_(features[torch.from_numpy(rows)])
        del features
        if n_cells:
            bank.centroids.copy_(train_centroids(bank.bank, n_cells, seed))
        timings = (extracted - started, selected - extracted, time.perf_counter() - selected)
        self.fit_timings_ = dict(zip(("features", "coreset", "cells"), timings, strict=True))
        self.extractor_, self.memory_ = extractor, bank.to(device)
        self.search_mode_ = self._resolve_search(device)
        self.input_shape_ = tuple(int(size) for size in normal.shape[1:])
        self.coreset_radius_ = radius
        logger.info(
            "patchcore: kept %d of %d patches (dim %d); features %.1f s, coreset %.1f s, IVF cells %.1f s",
            len(rows), len(normal) * math.prod(self.feature_shape_), bank.bank.shape[1], *self.fit_timings_.values(),
        )  # fmt: skip
        return self

    def _validate(self, normal: Tensor) -> None:
        if normal is None or normal.ndim != 4 or len(normal) == 0:
            msg = "patchcore needs normal training images of shape (N, C, H, W)"
            raise ValueError(msg)
        if not 0 < self.coreset_ratio <= 1:
            msg = f"coreset_ratio must be in (0, 1], got {self.coreset_ratio}"
            raise ValueError(msg)
        if self.search not in _SEARCHES:
            msg = f"search must be one of {_SEARCHES}, got {self.search!r}"
            raise ValueError(msg)
        if self.search == "cells" and not faiss_available():
            msg = "search='cells' needs faiss: pip install faiss-cpu (or medanomaly[fast]), or use search='auto'"
            raise ValueError(msg)
        if min(self.num_neighbors, self.coarse_size, self.n_probe) < 1 or self.sigma < 0 or self.n_cells < 0:
            msg = "num_neighbors, coarse_size and n_probe must be >= 1, n_cells and sigma >= 0"
            raise ValueError(msg)

    def _make_extractor(self, fitted_runtime: str | None = None) -> FeatureExtractor:
        runtime = fitted_runtime if self.runtime == "auto" and fitted_runtime else self.runtime
        return FeatureExtractor(self.backbone, self.layers, self.weights, runtime=runtime)

    def _embed_all(self, images: Tensor, extractor: FeatureExtractor, batch_size: int, progress: bool) -> Tensor:
        """(N * P, D) patch features of all images, written into one preallocated tensor; sets ``feature_shape_``."""
        out = None
        starts = range(0, len(images), batch_size)
        for start in tqdm(starts, desc="patchcore features", disable=not progress, unit="batch"):
            patches, self.feature_shape_ = self._embed(images[start : start + batch_size], extractor)
            n_patches = patches.shape[1]
            if out is None:
                out = torch.empty(len(images) * n_patches, patches.shape[2])
            out[start * n_patches : (start + len(patches)) * n_patches] = patches.reshape(-1, out.shape[1]).cpu()
        return out

    @torch.no_grad()
    def _embed(self, images: Tensor, extractor: FeatureExtractor | None = None) -> tuple[Tensor, tuple[int, int]]:
        """(B, P, D) locally aware patch features of (B, C, H, W) images, and their grid (h, w), P = h * w."""
        extractor = extractor or self.extractor_
        embedded = concat_layers(extractor(images.to(extractor.mean.device)), mode="bilinear", pool=3)
        grid = (int(embedded.shape[-2]), int(embedded.shape[-1]))
        return self.projection_(embedded.flatten(2).transpose(1, 2)), grid

    def _select(self, features: Tensor, n_select: int, seed: int) -> tuple[np.ndarray, float]:
        """Coreset rows (pick order) and covering radius in the selection space."""
        if n_select >= len(features):
            return np.arange(len(features)), 0.0
        dim = features.shape[1]
        if self.coreset_dim and self.coreset_dim < dim:
            matrix = torch.from_numpy(random_projection(dim, self.coreset_dim, seed))
            points = np.empty((len(features), self.coreset_dim), dtype=np.float32)
            for start in range(0, len(features), 65536):
                points[start : start + 65536] = (features[start : start + 65536] @ matrix).numpy()
        else:
            points = features.numpy()
        start = int(np.random.default_rng(seed).integers(len(features)))
        result = k_center_greedy(points, n_select, start=start, seed=seed)
        return result.indices, result.radius

    # --- scoring -------------------------------------------------------------------------------------------------
    def _score_batch(self, images: Tensor) -> Prediction:
        patches, grid = self._embed(images)
        search = self._search_mode(patches.device)
        if search == "exact":
            found = self.memory_.search_exact(patches)
        elif search == "cells":
            found = self.memory_.search_cells(patches, self.n_probe)
        else:
            found = self.memory_.search_bounded(patches, self.coarse_size)
        rows = torch.arange(len(patches), device=patches.device)
        top = found.max_patch()
        scores = found.distances[rows, top]
        if self.num_neighbors > 1 and len(self.memory_.bank) > 1:
            support = self.memory_.support_distances(patches[rows, top], found.indices[rows, top], self.num_neighbors)
            scores = scores * (1.0 - torch.softmax(support, dim=1)[:, 0])
        maps = smooth_maps(found.distances.view(len(patches), *grid), tuple(images.shape[-2:]), self.sigma)
        return Prediction(scores=scores.cpu(), anomaly_maps=maps.cpu())

    def _search_mode(self, device: torch.device) -> str:
        """The search the model was fitted with (``auto`` does not change with the machine), else resolved here."""
        recorded = getattr(self, "search_mode_", None)
        if self.search != "auto" or recorded is None:  # an explicit choice, or a model saved before this was recorded
            return self._resolve_search(device)
        if recorded == "cells" and not faiss_available():
            msg = (
                "this model was fitted to search IVF cells with faiss: pip install faiss-cpu (medanomaly[fast]), or "
                "score with search='bounded' (the same image scores, looser maps)"
            )
            raise ValueError(msg)
        return recorded

    def _resolve_search(self, device: torch.device) -> str:
        """The concrete search of ``self.search`` for this model and device (see the class doc)."""
        has_cells = self.memory_.n_cells > 0 and faiss_available()
        if self.search == "auto" and device.type != "cpu":
            return "exact"
        if self.search in ("auto", "cells"):
            return "cells" if has_cells else "bounded"  # a bank too small for cells is searched by its coarse level
        return self.search

    # --- persistence -------------------------------------------------------------------------------------------
    def modules(self) -> dict[str, nn.Module]:
        """The memory bank, the optional projection and the extractor (whose backbone weights are not saved)."""
        if not hasattr(self, "memory_"):
            return {}
        return {"memory": self.memory_, "projection": self.projection_, "extractor": self.extractor_}

    def fitted_config(self) -> dict[str, Any]:
        """Input shape, bank shape, feature grid, coreset radius and the backbone weights' fingerprint."""
        return {
            **super().fitted_config(),
            "bank_shape": list(self.memory_.bank.shape),
            "n_cells": self.memory_.n_cells,
            "projection_shape": list(self.projection_.matrix.shape),
            "feature_shape": list(self.feature_shape_),
            "coreset_radius": self.coreset_radius_,
            "backbone_weights": self.extractor_.weights_id,
            "search_mode": self.search_mode_,
            "runtime": self.extractor_.cpu_runtime,
        }

    def _build(self, input_shape: tuple[int, ...], fitted: dict[str, Any]) -> None:
        self.extractor_ = self._make_extractor(fitted.get("runtime"))
        self.search_mode_ = fitted.get("search_mode")
        _check_weights(self.extractor_, fitted)
        self.memory_ = MemoryBank(*fitted["bank_shape"], n_cells=int(fitted.get("n_cells", 0)))
        shape = fitted["projection_shape"]
        self.projection_ = _Projection(shape[0], shape[1] if len(shape) == 2 else None)
        self.feature_shape_ = tuple(fitted["feature_shape"])
        self.coreset_radius_ = fitted.get("coreset_radius")


def _check_weights(extractor: FeatureExtractor, fitted: dict[str, Any]) -> None:
    """ValueError if the backbone weights differ from those the model was fitted with."""
    expected = fitted.get("backbone_weights")
    if expected is not None and expected != extractor.weights_id:
        msg = (
            f"backbone weights differ from those the model was fitted with ({extractor.weights_id} != {expected}); "
            "pass the same weights file or refit"
        )
        raise ValueError(msg)



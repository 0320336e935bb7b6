"""Hyper-parameter selection for the perceptual autoencoder with a few labelled anomalies.

The source (Shvetsova et al., https://arxiv.org/abs/2006.13265) chooses latent size, perceptual layer and loss
weights on a small labelled validation set (normals plus 10-20 anomalies). :func:`tune_perceptual_ae` trains one
model per grid point on the same normals and keeps the one with the best AUROC on that set; the labelled images
never enter training. A wall-clock budget (``TrainConfig.max_minutes``) is shared evenly by the grid points, so
``medanomaly train --max-minutes`` still bounds the whole search.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score
from torch import Tensor

from medanomaly.detectors.perceptual_ae.detector import PerceptualAutoencoder
from medanomaly.features.backbones import build_backbone
from medanomaly.training import TrainConfig, Trainer

logger = logging.getLogger(__name__)
#: Values searched by default; a key the caller fixes in ``params`` is not searched. ``perceptual_layer`` None
#: stands for the backbone's two default layers.
DEFAULT_GRID: dict[str, list[Any]] = {"latent_dim": [16, 64], "perceptual_layer": [None], "pixel_weight": [0.0, 1.0]}


@dataclass
class TuningResult:
    """Outcome of a search.

    Attributes:
        detector: The fitted detector of the chosen grid point.
        best_params: Its hyper-parameters (the grid part).
        trials: One ``{"params": {...}, "auroc": float}`` per grid point, in search order.
        n_normal: Labelled normal images used for the AUROC.
        n_abnormal: Labelled abnormal images used for the AUROC.
    """

    detector: PerceptualAutoencoder
    best_params: dict[str, Any]
    trials: list[dict[str, Any]] = field(default_factory=list)
    n_normal: int = 0
    n_abnormal: int = 0

    def summary(self) -> dict[str, Any]:
        """JSON-able record for the model info."""
        return {
            "metric": "auroc",
            "chosen": self.best_params,
            "trials": self.trials,
            "n_normal": self.n_normal,
            "n_abnormal": self.n_abnormal,
        }


def expand_grid(grid: dict[str, list[Any]], backbone: str) -> list[dict[str, Any]]:
    """Cartesian product of ``grid``; ``perceptual_layer: [None]`` becomes the backbone's default layers."""
    grid = dict(grid)
    if grid.get("perceptual_layer") == [None]:
        grid["perceptual_layer"] = list(build_backbone(backbone).default_layers)
    keys = sorted(grid)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*(grid[key] for key in keys))]


def tune_perceptual_ae(
    normal: Tensor,
    images: Tensor,
    labels: np.ndarray,
    *,
    params: dict[str, Any] | None = None,
    grid: dict[str, list[Any]] | None = None,
    train: TrainConfig | None = None,
) -> TuningResult:
    """Fit one perceptual autoencoder per grid point and keep the best by AUROC on a labelled set.

    Args:
        normal: (N, C, R, R) training normals in [0, 1].
        images: (M, C, R, R) labelled tuning images in [0, 1] (normals and a few anomalies).
        labels: (M,) 0 normal / 1 abnormal.
        params: Fixed hyper-parameters; their keys are removed from the grid.
        grid: Values to search per hyper-parameter (default :data:`DEFAULT_GRID`).
        train: Training settings of every fit; ``max_minutes`` is divided among the grid points.

    Returns:
        The chosen fitted detector, its parameters and every trial's AUROC (ties keep the earlier point).

    Raises:
        ValueError: When the labelled set lacks one of the classes.
    """
    labels = np.asarray(labels)
    if len(np.unique(labels)) != 2 or len(labels) != len(images):
        msg = "tuning needs labelled normal and abnormal images (one label per image), e.g. 20 normals + 10 anomalies"
        raise ValueError(msg)
    params = dict(params or {})
    backbone = params.get("backbone", "efficientnet_lite0")
    points = expand_grid({k: v for k, v in (grid or DEFAULT_GRID).items() if k not in params}, backbone)
    train = train or TrainConfig()
    if train.max_minutes:
        train = replace(train, max_minutes=train.max_minutes / len(points))
    best: tuple[float, PerceptualAutoencoder | None, dict[str, Any]] = (-np.inf, None, {})
    trials = []
    for point in points:
        detector = PerceptualAutoencoder(**{**params, **point}).fit(normal, trainer=Trainer(train))
        auroc = float(roc_auc_score(labels, detector.score(images).scores.numpy()))
        trials.append({"params": point, "auroc": round(auroc, 6)})
        logger.info("perceptual_ae tuning: %s -> AUROC %.4f", point, auroc)
        if auroc > best[0]:
            best = (auroc, detector, point)
    return TuningResult(best[1], best[2], trials, int((labels == 0).sum()), int((labels == 1).sum()))

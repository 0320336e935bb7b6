"""Texture features and a Firefly-tuned SVM (the CT poster's "Firefly-SVM" row).

Supervised: hand-crafted features (grey-level co-occurrence texture, intensity statistics, HOG; see
:mod:`.features`) of labelled normal and abnormal images are standardised; the Firefly algorithm picks the feature
subset and the RBF-SVM's C and gamma by stratified cross-validation (:mod:`.firefly`); a final
RBF ``SVC`` is fitted on all training images with Platt scaling (a sigmoid of its decision value fitted on
cross-validated decision values: scikit-learn's ``CalibratedClassifierCV(method="sigmoid", ensemble=False)``, the
replacement of the deprecated ``SVC(probability=True)``); the score is that probability P(abnormal).
After the family of "LADS"-style pipelines (texture features + metaheuristic-tuned SVM), e.g. Yang, "Firefly
algorithms for multimodal optimization", https://arxiv.org/abs/1003.1466, for the optimiser.

The fitted SVM is stored without pickles: support vectors, dual coefficients, intercept, gamma, Platt's a and b,
the scaler's mean and scale and the feature mask are buffers of :class:`SvmNet`, which rebuilds the decision
function and the probability in torch. The features are global, so there is no anomaly map (``anomaly_maps=None``).
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import numpy as np
import torch
from sklearn.calibration import CalibratedClassifierCV
from sklearn.model_selection import StratifiedKFold, train_test_split
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from torch import Tensor, nn

from medanomaly.detectors.base import BaseDetector
from medanomaly.detectors.firefly_svm.features import TextureFeatures
from medanomaly.detectors.firefly_svm.firefly import SearchResult, firefly_search
from medanomaly.registry import register
from medanomaly.training.context import RunConfig
from medanomaly.types import Prediction

logger = logging.getLogger(__name__)
_PLATT_FOLDS = 5


class SvmNet(nn.Module):
    """A fitted binary RBF ``SVC`` with Platt scaling, as buffers.

    Args:
        n_features: Length of the raw feature vector.
        n_selected: Features the SVM uses.
        n_support: Support vectors.
    """

    def __init__(self, n_features: int, n_selected: int, n_support: int) -> None:
        super().__init__()
        f64 = torch.float64
        self.register_buffer("scaler_mean", torch.zeros(n_features, dtype=f64))
        self.register_buffer("scaler_scale", torch.ones(n_features, dtype=f64))
        self.register_buffer("selected", torch.zeros(n_features, dtype=torch.bool))
        self.register_buffer("support_vectors", torch.zeros(n_support, n_selected, dtype=f64))
        self.register_buffer("dual_coef", torch.zeros(n_support, dtype=f64))
        self.register_buffer("intercept", torch.zeros((), dtype=f64))
        self.register_buffer("gamma", torch.ones((), dtype=f64))
        self.register_buffer("platt_a", torch.zeros((), dtype=f64))
        self.register_buffer("platt_b", torch.zeros((), dtype=f64))

    @torch.no_grad()
    def load_svc(self, scaler: StandardScaler, selected: np.ndarray, calibrated: CalibratedClassifierCV) -> None:
        """Copy a fitted scaler, feature mask and sigmoid-calibrated RBF ``SVC`` (``ensemble=False``) to buffers."""
        (member,) = calibrated.calibrated_classifiers_
        svc, (sigmoid,) = member.estimator, member.calibrators
        self.scaler_mean.copy_(torch.from_numpy(scaler.mean_))
        self.scaler_scale.copy_(torch.from_numpy(scaler.scale_))
        self.selected.copy_(torch.from_numpy(selected))
        self.support_vectors.copy_(torch.from_numpy(svc.support_vectors_))
        self.dual_coef.copy_(torch.from_numpy(svc.dual_coef_[0]))
        self.intercept.fill_(float(svc.intercept_[0]))
        self.gamma.fill_(float(svc._gamma))  # the resolved value ("scale" -> a number)
        self.platt_a.fill_(float(sigmoid.a_))
        self.platt_b.fill_(float(sigmoid.b_))

    def decision_function(self, features: Tensor) -> Tensor:
        """(N,) signed distance to the boundary (> 0: abnormal side) of (N, F) raw features; sklearn's value."""
        z = (features.to(torch.float64) - self.scaler_mean) / self.scaler_scale
        z = z[:, self.selected]
        squared = (z**2).sum(1, keepdim=True) + (self.support_vectors**2).sum(1) - 2 * z @ self.support_vectors.T
        kernel = torch.exp(-self.gamma * squared.clamp_min(0.0))
        return kernel @ self.dual_coef + self.intercept

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """Decision values (N,) and P(abnormal) = 1 / (1 + exp(a f + b)) (N,) in [0, 1], Platt's sigmoid.

        Equals ``CalibratedClassifierCV.predict_proba(x)[:, 1]`` of the calibrated SVM it was loaded from.
        """
        decision = self.decision_function(features)
        return decision, torch.sigmoid(-(self.platt_a * decision + self.platt_b))


@register("firefly_svm")
class FireflySvm(BaseDetector):
    """Co-occurrence/intensity/HOG features, Firefly-selected subset and SVM hyper-parameters; score = P(abnormal).

    Args:
        image_size: Side the grey image is resized to before feature extraction.
        glcm_levels: Grey levels of the co-occurrence matrices.
        glcm_distances: Co-occurrence pixel offsets (properties averaged over 0, 45, 90, 135 degrees).
        hog_cells: HOG cells per side.
        orientations: HOG orientation bins.
        search: Run the Firefly search; False = all features, C = 1, gamma = 1 / n_features.
        population_size: Fireflies.
        n_iterations: Firefly generations.
        max_evaluations: Cap on candidate solutions scored (None = no cap).
        n_folds: Stratified cross-validation folds of the search.
        scoring: scikit-learn scorer of the search (``roc_auc``, ``balanced_accuracy``, ``accuracy``).
        feature_penalty: Score penalty per unit fraction of features kept (favours small subsets).
        search_samples: At most this many training images (stratified draw) take part in the search; the final
            SVM uses all of them.
        class_weight: SVC ``class_weight``: ``balanced`` (default, the classes are often unequal) or None.
        random_state: Seed of the search, its folds and of Platt scaling's internal cross-validation.
    """

    needs: ClassVar[frozenset[str]] = frozenset({"normal", "abnormal"})
    kind: ClassVar[str] = "classification"
    tiny_params: ClassVar[dict[str, Any]] = {"image_size": 32, "hog_cells": 2, "population_size": 4, "n_iterations": 2,
                                             "max_evaluations": 16}  # fmt: skip
    tiny_train: ClassVar[dict[str, Any]] = {"max_epochs": 1}

    def __init__(
        self,
        image_size: int = 128,
        glcm_levels: int = 32,
        glcm_distances: tuple[int, ...] = (1, 2, 4),
        hog_cells: int = 4,
        orientations: int = 9,
        search: bool = True,
        population_size: int = 8,
        n_iterations: int = 10,
        max_evaluations: int | None = 120,
        n_folds: int = 3,
        scoring: str = "roc_auc",
        feature_penalty: float = 0.02,
        search_samples: int = 2000,
        class_weight: str | None = "balanced",
        random_state: int | None = 0,
    ) -> None:
        self.image_size = image_size
        self.glcm_levels = glcm_levels
        self.glcm_distances = glcm_distances
        self.hog_cells = hog_cells
        self.orientations = orientations
        self.search = search
        self.population_size = population_size
        self.n_iterations = n_iterations
        self.max_evaluations = max_evaluations
        self.n_folds = n_folds
        self.scoring = scoring
        self.feature_penalty = feature_penalty
        self.search_samples = search_samples
        self.class_weight = class_weight
        self.random_state = random_state

    # --- features ---------------------------------------------------------------------------------------------
    @property
    def feature_extractor(self) -> TextureFeatures:
        """The feature settings of this detector."""
        return TextureFeatures(image_size=int(self.image_size), levels=int(self.glcm_levels),
                               distances=tuple(int(d) for d in self.glcm_distances), hog_cells=int(self.hog_cells),
                               orientations=int(self.orientations))  # fmt: skip

    # --- fitting ----------------------------------------------------------------------------------------------
    def _fit(self, normal: Tensor, *, mixed: Tensor | None, abnormal: Tensor | None, run: RunConfig) -> FireflySvm:
        """Extract features, search the subset and C/gamma, fit the final SVM.

        Args:
            normal: (N, C, H, W) float in [0, 1], label 0.
            mixed: Ignored.
            abnormal: (K, C, H, W) float in [0, 1], label 1.
            run: Its ``max_minutes`` bounds the search's wall-clock time.
        """
        self._validate(normal, abnormal)
        extractor = self.feature_extractor
        features = np.concatenate([extractor(normal), extractor(abnormal)])
        labels = np.concatenate([np.zeros(len(normal), np.int64), np.ones(len(abnormal), np.int64)])
        scaler = StandardScaler().fit(features)
        scaled = scaler.transform(features)
        result = self._search(scaled, labels, run.max_minutes)
        svm = self._fit_svm(scaled[:, result.selected], labels, result)
        svc = svm.calibrated_classifiers_[0].estimator
        self.input_shape_ = tuple(int(size) for size in normal.shape[1:])
        self.search_ = {"C": result.C, "gamma": result.gamma, "cv_score": result.cv_score,
                        "n_evaluations": result.n_evaluations,
                        "selected": [name for name, keep in zip(extractor.names, result.selected, strict=True) if keep]}
        self._build(self.input_shape_, {"n_features": features.shape[1], "n_selected": int(result.selected.sum()),
                                        "n_support": len(svc.support_vectors_)})  # fmt: skip
        self.network_.load_svc(scaler, result.selected, svm)
        logger.info("firefly_svm: %d support vectors, %d features", len(svc.support_vectors_), result.selected.sum())
        return self

    def _fit_svm(self, features: np.ndarray, labels: np.ndarray, result: SearchResult) -> CalibratedClassifierCV:
        """The final SVM on all training images, Platt-scaled on seeded stratified out-of-fold decision values."""
        n_folds = max(2, min(_PLATT_FOLDS, int(np.bincount(labels, minlength=2).min())))
        folds = StratifiedKFold(n_folds, shuffle=True, random_state=int(self.random_state or 0))
        svc = SVC(C=result.C, gamma=result.gamma, class_weight=self.class_weight)
        return CalibratedClassifierCV(svc, method="sigmoid", cv=folds, ensemble=False).fit(features, labels)

    def _validate(self, normal: Tensor, abnormal: Tensor | None) -> None:
        for name, data in (("normal", normal), ("abnormal", abnormal)):
            if data is None or len(data) < 2:
                count = 0 if data is None else len(data)
                msg = f"firefly_svm needs at least 2 labelled {name} training images, got {count}"
                raise ValueError(msg)
            if data.ndim != 4:
                msg = f"firefly_svm: {name} images must be (N, C, H, W), got {tuple(data.shape)}"
                raise ValueError(msg)
        if self.class_weight not in ("balanced", None):
            msg = f"class_weight must be 'balanced' or None, got {self.class_weight!r}"
            raise ValueError(msg)

    def _search(self, features: np.ndarray, labels: np.ndarray, minutes: float | None) -> SearchResult:
        n_features = features.shape[1]
        if not self.search:
            return SearchResult(np.ones(n_features, dtype=bool), 1.0, 1.0 / n_features, float("nan"), 0)
        seed = int(self.random_state or 0)
        if len(labels) > self.search_samples:
            keep, _ = train_test_split(np.arange(len(labels)), train_size=int(self.search_samples), stratify=labels,
                                       random_state=seed)  # fmt: skip
            features, labels = features[np.sort(keep)], labels[np.sort(keep)]
        return firefly_search(
            features, labels, population_size=self.population_size, n_iterations=self.n_iterations,
            max_evaluations=self.max_evaluations, n_folds=self.n_folds, scoring=self.scoring,
            feature_penalty=self.feature_penalty, class_weight=self.class_weight,
            max_seconds=None if minutes is None else 60.0 * float(minutes), random_state=seed,
        )  # fmt: skip

    # --- persistence and scoring ------------------------------------------------------------------------------
    def _build(self, input_shape: tuple[int, ...], fitted: dict[str, Any]) -> None:
        self.network_ = SvmNet(int(fitted["n_features"]), int(fitted["n_selected"]), int(fitted["n_support"]))

    def modules(self) -> dict[str, nn.Module]:
        """The SVM buffers."""
        return {"svm": self.network_} if hasattr(self, "network_") else {}

    def fitted_config(self) -> dict[str, Any]:
        """Input shape, the buffer sizes and what the search chose."""
        net = self.network_
        sizes = {"n_features": len(net.selected), "n_selected": net.support_vectors.shape[1],
                 "n_support": len(net.support_vectors)}  # fmt: skip
        return {**super().fitted_config(), **sizes, "search": getattr(self, "search_", None)}

    def restore(self, fitted: dict[str, Any], state: dict[str, Tensor]) -> FireflySvm:
        """Rebuild from the saved sizes and buffers."""
        super().restore(fitted, state)
        self.search_ = fitted.get("search")
        return self

    def _score_batch(self, images: Tensor) -> Prediction:
        features = torch.from_numpy(self.feature_extractor(images)).to(self.device)
        decision, probability = self.network_(features)
        probabilities = torch.stack([1.0 - probability, probability], dim=1).float()
        extras = {"probabilities": probabilities, "decision": decision.float()}
        return Prediction(scores=probability.float(), anomaly_maps=None, extras=extras)

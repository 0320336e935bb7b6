"""Firefly-algorithm search of a feature subset and the RBF-SVM's C and gamma, by cross-validated score.

Each firefly is a point in [0, 1]^F x [log C range] x [log gamma range]: feature ``i`` is selected when its
coordinate is above 0.5. The brightness (to maximise) is the stratified k-fold score of ``SVC(C, gamma)`` on the
selected, standardised features, minus a small penalty per selected feature. The algorithm itself is niapy's
``FireflyAlgorithm`` (Yang, "Firefly algorithms for multimodal optimization", SAGA 2009,
https://arxiv.org/abs/1003.1466), seeded so the same data and seed give the same selection.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.svm import SVC

# niapy calls logging.basicConfig() when imported; a root handler for the duration makes that a no-op.
_IMPORT_GUARD = logging.NullHandler()
logging.getLogger().addHandler(_IMPORT_GUARD)
try:
    from niapy.algorithms.basic import FireflyAlgorithm
    from niapy.problems import Problem
    from niapy.task import Task
finally:
    logging.getLogger().removeHandler(_IMPORT_GUARD)

logger = logging.getLogger(__name__)
LOG_C_RANGE = (-2.0, 3.0)
#: gamma = 10 ** g / n_selected, so g = 0 is sklearn's "scale" for standardised features.
LOG_GAMMA_RANGE = (-3.0, 1.0)


@dataclass(frozen=True)
class SearchResult:
    """Outcome of :func:`firefly_search`.

    Attributes:
        selected: (F,) bool mask of the chosen features (at least one is True).
        C: SVM regularisation.
        gamma: RBF kernel coefficient (for the selected, standardised features).
        cv_score: Cross-validated score of that choice (before the feature penalty).
        n_evaluations: Candidate solutions scored.
    """

    selected: np.ndarray
    C: float
    gamma: float
    cv_score: float
    n_evaluations: int


def decode(solution: np.ndarray, n_features: int) -> tuple[np.ndarray, float, float]:
    """(selected mask, C, gamma) of a firefly position of length ``n_features + 2``."""
    selected = solution[:n_features] > 0.5
    if not selected.any():
        selected = np.zeros(n_features, dtype=bool)
        selected[int(np.argmax(solution[:n_features]))] = True
    c_unit, gamma_unit = (float(np.clip(value, 0, 1)) for value in solution[n_features : n_features + 2])
    log_c = LOG_C_RANGE[0] + c_unit * (LOG_C_RANGE[1] - LOG_C_RANGE[0])
    log_g = LOG_GAMMA_RANGE[0] + gamma_unit * (LOG_GAMMA_RANGE[1] - LOG_GAMMA_RANGE[0])
    return selected, 10.0**log_c, 10.0**log_g / int(selected.sum())


class _SvmSelection(Problem):
    """niapy problem: minimise ``1 - cv score + penalty * fraction of features selected``."""

    def __init__(self, features: np.ndarray, labels: np.ndarray, config: dict, deadline: float) -> None:
        super().__init__(dimension=features.shape[1] + 2, lower=0.0, upper=1.0)
        self.features, self.labels, self.config, self.deadline = features, labels, config, deadline
        self.cache: dict[bytes, tuple[float, float]] = {}

    def _evaluate(self, x: np.ndarray) -> float:
        n_features = self.features.shape[1]
        selected, c, gamma = decode(x, n_features)
        key = _key(selected, c, gamma)
        if key not in self.cache:
            if time.monotonic() > self.deadline:  # out of time: every further candidate loses
                return 2.0
            self.cache[key] = (self._cv_score(selected, c, gamma), float(selected.mean()))
        score, fraction = self.cache[key]
        return 1.0 - score + self.config["feature_penalty"] * fraction

    def _cv_score(self, selected: np.ndarray, c: float, gamma: float) -> float:
        folds = StratifiedKFold(self.config["n_folds"], shuffle=True, random_state=self.config["random_state"])
        model = SVC(C=c, gamma=gamma, class_weight=self.config["class_weight"])
        scores = cross_val_score(model, self.features[:, selected], self.labels, cv=folds,
                                 scoring=self.config["scoring"])  # fmt: skip
        return float(np.mean(scores))


def firefly_search(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    population_size: int = 8,
    n_iterations: int = 10,
    max_evaluations: int | None = 120,
    n_folds: int = 3,
    scoring: str = "roc_auc",
    feature_penalty: float = 0.02,
    class_weight: str | None = "balanced",
    max_seconds: float | None = None,
    random_state: int = 0,
) -> SearchResult:
    """Search features, C and gamma with the Firefly algorithm.

    Args:
        features: (N, F) standardised features.
        labels: (N,) {0, 1}.
        population_size: Fireflies.
        n_iterations: Generations (each compares every pair of fireflies, up to ``population_size ** 2`` scores).
        max_evaluations: Cap on scored candidates (None = only the generations bound it).
        n_folds: Stratified cross-validation folds (capped by the smaller class).
        scoring: scikit-learn scorer name, e.g. ``roc_auc``, ``balanced_accuracy``, ``accuracy``.
        feature_penalty: Subtracted from the score per unit fraction of features selected (favours small subsets).
        class_weight: SVC ``class_weight`` (``balanced`` or None).
        max_seconds: Wall-clock budget; candidates met after it are not scored (None = no limit).
        random_state: Seed of the algorithm and of the folds.

    Returns:
        The best :class:`SearchResult`.
    """
    n_folds = max(2, min(int(n_folds), int(np.bincount(labels, minlength=2).min())))
    config = {"n_folds": n_folds, "scoring": scoring, "feature_penalty": feature_penalty,
              "class_weight": class_weight, "random_state": random_state}  # fmt: skip
    deadline = time.monotonic() + max_seconds if max_seconds else math.inf
    problem = _SvmSelection(features, labels, config, deadline)
    task = Task(problem=problem, max_iters=int(n_iterations),
                max_evals=int(max_evaluations) if max_evaluations else np.inf)  # fmt: skip
    algorithm = FireflyAlgorithm(population_size=int(population_size), seed=int(random_state))
    best, _fitness = algorithm.run(task)
    selected, c, gamma = decode(np.asarray(best), features.shape[1])
    score = problem.cache.get(_key(selected, c, gamma), (math.nan, 0.0))[0]
    logger.info("firefly: %d of %d features, C=%.4g, gamma=%.4g, cv %s=%.4f (%d candidates scored)",
                int(selected.sum()), len(selected), c, gamma, scoring, score, len(problem.cache))  # fmt: skip
    return SearchResult(selected, c, gamma, score, len(problem.cache))


def _key(selected: np.ndarray, c: float, gamma: float) -> bytes:
    return selected.tobytes() + np.round([math.log10(c), math.log10(gamma)], 3).tobytes()

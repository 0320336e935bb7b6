import json

import numpy as np
import pytest
from scipy.stats import rankdata
from sklearn.metrics import average_precision_score, roc_auc_score

from medanomaly.evaluation import bootstrap_auroc_ci, classification_metrics, dice, pixel_metrics


def _data(n_normal: int, n_abnormal: int, shift: float = 1.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.r_[np.zeros(n_normal, dtype=int), np.ones(n_abnormal, dtype=int)]
    scores = np.r_[rng.normal(0, 1, n_normal), rng.normal(shift, 1, n_abnormal)]
    return labels, scores


def test_auroc_and_auprc_match_sklearn():
    labels, scores = _data(80, 40)
    metrics = classification_metrics(labels, scores, threshold=0.5, n_bootstrap=200)
    assert metrics["auroc"] == pytest.approx(roc_auc_score(labels, scores))
    assert metrics["auprc"] == pytest.approx(average_precision_score(labels, scores))
    assert json.loads(json.dumps(metrics)) == metrics  # plain JSON types
    assert all(type(metrics[k]) is float for k in ("auroc", "accuracy", "f1", "sensitivity", "threshold"))


def test_confusion_counts_on_hand_made_example():
    labels = [0, 0, 0, 0, 1, 1, 1]
    scores = [0.1, 0.2, 0.6, 0.5, 0.7, 0.4, 0.9]  # threshold 0.5: 0.5 itself is normal (score > threshold)
    metrics = classification_metrics(labels, scores, threshold=0.5, n_bootstrap=0)
    assert metrics["confusion_matrix"] == [[3, 1], [1, 2]]
    assert metrics["n_normal"] == 4
    assert metrics["n_abnormal"] == 3
    assert metrics["sensitivity"] == pytest.approx(2 / 3)
    assert metrics["specificity"] == pytest.approx(3 / 4)
    assert metrics["precision"] == pytest.approx(2 / 3)
    assert metrics["accuracy"] == pytest.approx(5 / 7)
    assert metrics["balanced_accuracy"] == pytest.approx((2 / 3 + 3 / 4) / 2)
    assert metrics["f1"] == pytest.approx(2 / 3)
    assert metrics["per_class_accuracy"] == {"normal": pytest.approx(0.75), "abnormal": pytest.approx(2 / 3)}
    assert metrics["auroc_ci95"] is None  # n_bootstrap=0 skips it


def test_perfect_and_inverse_scores():
    labels = np.array([0, 0, 0, 1, 1, 1])
    scores = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    perfect = classification_metrics(labels, scores, threshold=0.5, n_bootstrap=100)
    assert perfect["auroc"] == 1.0
    assert perfect["auroc_ci95"] == [1.0, 1.0]
    assert perfect["accuracy"] == 1.0
    assert perfect["f1"] == 1.0
    inverse = classification_metrics(labels, -scores, threshold=-0.5, n_bootstrap=100)
    assert inverse["auroc"] == 0.0
    assert inverse["accuracy"] == 0.0
    assert inverse["confusion_matrix"] == [[0, 3], [3, 0]]


def test_ci_contains_estimate_and_narrows_with_more_data():
    small_labels, small_scores = _data(30, 15)
    big_labels, big_scores = _data(600, 300, seed=1)
    lo_s, hi_s = bootstrap_auroc_ci(small_labels, small_scores, n_bootstrap=500)
    lo_b, hi_b = bootstrap_auroc_ci(big_labels, big_scores, n_bootstrap=500)
    assert lo_s <= roc_auc_score(small_labels, small_scores) <= hi_s
    assert lo_b <= roc_auc_score(big_labels, big_scores) <= hi_b
    assert hi_b - lo_b < (hi_s - lo_s) / 2


def test_ci_is_seeded_and_agrees_with_naive_bootstrap():
    labels, scores = _data(60, 30)
    assert bootstrap_auroc_ci(labels, scores, random_state=3) == bootstrap_auroc_ci(labels, scores, random_state=3)
    rng = np.random.default_rng(7)
    normal, abnormal = np.flatnonzero(labels == 0), np.flatnonzero(labels == 1)
    naive = []
    for _ in range(1000):
        idx = np.r_[rng.choice(normal, normal.size), rng.choice(abnormal, abnormal.size)]
        ranks = rankdata(scores[idx])  # Mann-Whitney U, the AUROC with ties counting one half
        naive.append(
            (ranks[normal.size :].sum() - abnormal.size * (abnormal.size + 1) / 2) / (normal.size * abnormal.size)
        )
    lo, hi = bootstrap_auroc_ci(labels, scores)
    assert lo == pytest.approx(np.percentile(naive, 2.5), abs=0.02)
    assert hi == pytest.approx(np.percentile(naive, 97.5), abs=0.02)


def test_ci_with_ties_matches_sklearn_convention():
    labels = np.array([0, 0, 1, 1])
    scores = np.array([0.5, 0.5, 0.5, 0.5])
    assert bootstrap_auroc_ci(labels, scores, n_bootstrap=50) == (0.5, 0.5)


def test_single_class_does_not_crash():
    metrics = classification_metrics([0, 0, 0], [0.1, 0.9, 0.3], threshold=0.5)
    assert metrics["auroc"] is None
    assert metrics["auroc_ci95"] is None
    assert "warning" in metrics
    assert metrics["specificity"] == pytest.approx(2 / 3)
    assert metrics["sensitivity"] is None
    assert metrics["confusion_matrix"] == [[2, 1], [0, 0]]
    json.dumps(metrics)
    only_abnormal = classification_metrics([1, 1], [0.1, 0.9], threshold=0.5)
    assert only_abnormal["auroc"] is None
    assert only_abnormal["sensitivity"] == 0.5
    with pytest.raises(ValueError, match="both"):
        bootstrap_auroc_ci([1, 1], [0.1, 0.9])


@pytest.mark.parametrize(
    ("labels", "scores", "message"),
    [
        ([0, 1], [0.1], "equal length"),
        ([], [], "non-empty"),
        ([0, 2], [0.1, 0.2], "0 \\(normal\\)"),
        ([0, 1], [0.1, np.nan], "NaN"),
    ],
)
def test_invalid_inputs(labels, scores, message):
    with pytest.raises(ValueError, match=message):
        classification_metrics(labels, scores, threshold=0.5)


def test_dice():
    a = np.zeros((4, 4), dtype=int)
    b = np.zeros((4, 4), dtype=int)
    assert dice(a, b) == 1.0
    a[0, :2] = 1
    b[0, 1:3] = 1
    assert dice(a, b) == pytest.approx(0.5)
    assert dice(a, a) == 1.0
    with pytest.raises(ValueError, match="same shape"):
        dice(a, np.zeros((2, 2)))


def test_pixel_metrics():
    rng = np.random.default_rng(0)
    masks = np.zeros((3, 16, 16), dtype=int)
    masks[:, 4:8, 4:8] = 1
    maps = rng.random(masks.shape) * 0.5 + masks * 0.6  # anomalies score above every normal pixel
    result = pixel_metrics(masks, maps)
    assert result["pixel_auroc"] == 1.0
    assert result["best_dice"] == pytest.approx(1.0)
    assert dice(masks, maps > result["best_dice_threshold"]) == pytest.approx(1.0)
    assert result["n_pixels"] == masks.size
    noisy = pixel_metrics(masks, rng.random(masks.shape))
    assert noisy["pixel_auroc"] < 0.7
    assert noisy["best_dice"] < 0.6
    assert dice(masks, np.zeros_like(masks)) == 0.0
    empty = pixel_metrics(np.zeros((4, 4)), rng.random((4, 4)))
    assert empty["pixel_auroc"] is None
    assert "warning" in empty
    with pytest.raises(ValueError, match="same shape"):
        pixel_metrics(masks, maps[0])

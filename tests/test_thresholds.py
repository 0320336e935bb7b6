import json

import numpy as np
import pytest

from medanomaly.thresholds import Threshold, calibrate, parse_calibration


@pytest.fixture
def scores() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.normal(0.0, 1.0, 400), rng.normal(1.5, 1.0, 120)


def _rates(threshold: Threshold, normal: np.ndarray, abnormal: np.ndarray) -> tuple[float, float]:
    sensitivity = float(np.mean(threshold.decide(abnormal)))
    specificity = float(np.mean(1 - threshold.decide(normal)))
    return sensitivity, specificity


def test_percentile_puts_share_of_normals_below(scores):
    normal, _ = scores
    threshold = calibrate(normal, percentile=95.0)
    assert threshold.method == "percentile"
    assert threshold.params == {"percentile": 95.0}
    assert threshold.n_normal == normal.size
    share_below = np.mean(normal <= threshold.value)
    assert 0.945 <= share_below <= 0.955
    assert np.mean(threshold.decide(normal)) == pytest.approx(1 - share_below)


def test_percentile_is_monotone(scores):
    normal, _ = scores
    values = [calibrate(normal, percentile=p).value for p in (50, 80, 90, 95, 99)]
    assert values == sorted(values)


def test_youden_finds_perfect_separator():
    normal = np.array([0.1, 0.2, 0.25, 0.3, 0.4])
    abnormal = np.array([0.6, 0.7, 0.9])
    threshold = calibrate(normal, abnormal, method="youden")
    assert 0.4 < threshold.value < 0.6
    assert _rates(threshold, normal, abnormal) == (1.0, 1.0)
    assert threshold.params["youden_j"] == pytest.approx(1.0)
    assert threshold.n_abnormal == 3


def test_f1_on_separable_data_is_perfect():
    normal = np.array([1.0, 2.0, 3.0])
    abnormal = np.array([5.0, 6.0])
    threshold = calibrate(normal, abnormal, method="f1")
    assert threshold.params["f1"] == pytest.approx(1.0)
    assert _rates(threshold, normal, abnormal) == (1.0, 1.0)


@pytest.mark.parametrize("method", ["youden", "f1", "sensitivity", "specificity"])
def test_reported_operating_point_is_reproduced(scores, method):
    normal, abnormal = scores
    threshold = calibrate(
        normal, abnormal, method=method, target=0.8 if method in ("sensitivity", "specificity") else None
    )
    sensitivity, specificity = _rates(threshold, normal, abnormal)
    assert sensitivity == pytest.approx(threshold.params["sensitivity"])
    assert specificity == pytest.approx(threshold.params["specificity"])


@pytest.mark.parametrize("target", [0.5, 0.8, 0.9, 0.95, 1.0])
def test_sensitivity_target_met_at_highest_threshold(scores, target):
    normal, abnormal = scores
    threshold = calibrate(normal, abnormal, method="sensitivity", target=target)
    sensitivity, _ = _rates(threshold, normal, abnormal)
    assert sensitivity >= target
    # the next abnormal score above the threshold would drop below the target: the cut is the highest possible
    next_up = np.min(abnormal[abnormal > threshold.value])
    assert np.mean(abnormal > next_up) < target


@pytest.mark.parametrize("target", [0.5, 0.8, 0.9, 0.95, 1.0])
def test_specificity_target_met_at_lowest_threshold(scores, target):
    normal, abnormal = scores
    threshold = calibrate(normal, abnormal, method="specificity", target=target)
    _, specificity = _rates(threshold, normal, abnormal)
    assert specificity >= target
    below = normal[normal <= threshold.value]
    assert np.mean(normal < below.max()) < target  # one normal fewer below the cut would miss the target


def test_specificity_needs_only_normal_scores(scores):
    normal, _ = scores
    threshold = calibrate(normal, method="specificity", target=0.9)
    assert np.mean(1 - threshold.decide(normal)) >= 0.9
    assert threshold.n_abnormal == 0


def test_fixed_threshold():
    threshold = calibrate([], method="fixed", target=0.03)
    assert threshold.value == 0.03
    assert threshold.decide(0.04) is True
    assert threshold.decide(0.03) is False


def test_decide():
    threshold = Threshold(value=2.0, method="fixed", params={"target": 2.0})
    assert threshold.decide(np.array([1.0, 2.0, 3.0])).tolist() == [0, 0, 1]
    assert threshold.decide(np.float64(2.5)) is True
    with pytest.raises(ValueError, match="NaN"):
        threshold.decide(np.array([1.0, np.nan]))


def test_round_trip_through_json(scores):
    normal, abnormal = scores
    threshold = calibrate(normal, abnormal, method="youden")
    restored = Threshold.from_dict(json.loads(json.dumps(threshold.to_dict())))
    assert restored == threshold
    assert all(type(v) in (float, int) for v in restored.params.values())


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"method": "youden"}, "lacks value"),
        ({"value": 1.0, "method": "magic"}, "unknown threshold method"),
        ({"value": "nan", "method": "fixed"}, "finite"),
    ],
)
def test_from_dict_rejects_bad_input(bad, message):
    with pytest.raises(ValueError, match=message):
        Threshold.from_dict(bad)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("percentile:95", {"method": "percentile", "percentile": 95.0}),
        ("percentile", {"method": "percentile", "percentile": 95.0}),
        (" Percentile:99.5 ", {"method": "percentile", "percentile": 99.5}),
        ("youden", {"method": "youden"}),
        ("f1", {"method": "f1"}),
        ("sensitivity:0.9", {"method": "sensitivity", "target": 0.9}),
        ("specificity:0.95", {"method": "specificity", "target": 0.95}),
        ("fixed:0.03", {"method": "fixed", "target": 0.03}),
        ("fixed:-1", {"method": "fixed", "target": -1.0}),
    ],
)
def test_parse_calibration_good(spec, expected):
    assert parse_calibration(spec) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("magic", "unknown calibration"),
        ("youden:0.5", "takes no value"),
        ("sensitivity", "needs a value"),
        ("fixed", "needs a value"),
        ("specificity:abc", "not a number"),
        ("sensitivity:90", "fraction"),
        ("specificity:0", r"\(0, 1\]"),
        ("percentile:101", r"\[0, 100\]"),
        ("fixed:nan", "finite"),
        ("", "unknown calibration"),
    ],
)
def test_parse_calibration_bad(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_calibration(spec)


def test_parsed_spec_calibrates(scores):
    normal, abnormal = scores
    threshold = calibrate(normal, abnormal, **parse_calibration("sensitivity:0.9"))
    assert threshold.method == "sensitivity"
    assert threshold.params["target"] == 0.9


@pytest.mark.parametrize("method", ["youden", "f1", "sensitivity"])
def test_methods_needing_abnormal_scores(scores, method):
    normal, _ = scores
    with pytest.raises(ValueError, match="needs abnormal scores"):
        calibrate(normal, method=method, target=0.9)
    with pytest.raises(ValueError, match="needs abnormal scores"):
        calibrate(normal, [], method=method, target=0.9)


def test_invalid_scores_are_rejected():
    with pytest.raises(ValueError, match="empty"):
        calibrate([])
    with pytest.raises(ValueError, match="NaN"):
        calibrate([0.1, np.nan, 0.3])
    with pytest.raises(ValueError, match="NaN"):
        calibrate([0.1, 0.2], [np.nan, 1.0], method="youden")
    with pytest.raises(ValueError, match="unknown calibration method"):
        calibrate([0.1, 0.2], method="median")
    with pytest.raises(ValueError, match="percentile"):
        calibrate([0.1, 0.2], percentile=120)



"""Thresholds: a detector scores, a :class:`Threshold` decides.

A threshold is calibrated on validation scores, either from normal cases only (a percentile of the normal scores
or a target specificity) or from a few labelled cases as well (Youden's J, best F1, a target sensitivity), and is
saved with the model as JSON. The decision rule is the same everywhere: ``score > value`` is abnormal.

Youden's J: W. J. Youden, "Index for rating diagnostic tests", Cancer 3(1), 1950.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

METHODS = ("percentile", "youden", "sensitivity", "specificity", "f1", "fixed")
_NEEDS_ABNORMAL = ("youden", "f1", "sensitivity")
_NEEDS_TARGET = ("sensitivity", "specificity", "fixed")


@dataclass(frozen=True)
class Threshold:
    """A calibrated decision threshold on anomaly scores.

    Attributes:
        value: Scores strictly above this value are abnormal.
        method: How the value was chosen: one of ``METHODS``.
        params: The calibration parameters (``{"percentile": 95.0}``, ``{"target": 0.9}``) plus, when known, the
            operating point reached on the calibration data (``sensitivity``, ``specificity``, ``f1``, ``youden_j``).
        n_normal: Number of normal scores used for calibration.
        n_abnormal: Number of abnormal scores used for calibration.
    """

    value: float
    method: str
    params: dict[str, Any] = field(default_factory=dict)
    n_normal: int = 0
    n_abnormal: int = 0

    def decide(self, scores: np.ndarray | float) -> np.ndarray | bool:
        """Label scores as normal or abnormal.

        Args:
            scores: One score, or an array of scores of any shape.

        Returns:
            ``True`` for an abnormal scalar score, ``False`` otherwise; for an array, an int64 array of the same
            shape with 1 (abnormal, ``score > value``) or 0 (normal).

        Raises:
            ValueError: If a score is NaN.
        """
        array = np.asarray(scores, dtype=np.float64)
        if np.isnan(array).any():
            msg = "cannot decide on a NaN score"
            raise ValueError(msg)
        if array.ndim == 0 and not isinstance(scores, np.ndarray):
            return bool(array > self.value)
        return (array > self.value).astype(np.int64)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able representation, read back by :meth:`from_dict`."""
        return {
            "value": float(self.value),
            "method": self.method,
            "params": {key: _plain(val) for key, val in self.params.items()},
            "n_normal": int(self.n_normal),
            "n_abnormal": int(self.n_abnormal),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Threshold:
        """Rebuild a threshold written by :meth:`to_dict`.

        Raises:
            ValueError: If ``value`` or ``method`` is missing, or the method or value is invalid.
        """
        missing = [key for key in ("value", "method") if key not in d]
        if missing:
            msg = f"threshold dict lacks {', '.join(missing)} (keys found: {sorted(d)})"
            raise ValueError(msg)
        if d["method"] not in METHODS:
            msg = f"unknown threshold method {d['method']!r}; expected one of {', '.join(METHODS)}"
            raise ValueError(msg)
        value = float(d["value"])
        if not math.isfinite(value):
            msg = f"threshold value must be finite, got {value}"
            raise ValueError(msg)
        return cls(
            value=value,
            method=str(d["method"]),
            params=dict(d.get("params") or {}),
            n_normal=int(d.get("n_normal", 0)),
            n_abnormal=int(d.get("n_abnormal", 0)),
        )


def _plain(value: Any) -> Any:
    """Numpy scalars to plain Python, so that params stay JSON-able."""
    return value.item() if isinstance(value, np.generic) else value


def _as_scores(scores: Any, name: str, *, allow_empty: bool = False) -> np.ndarray:
    """Validate a score array: (N,) float64, finite (no NaN), non-empty unless allowed."""
    array = np.asarray(scores, dtype=np.float64).ravel()
    if array.size == 0 and not allow_empty:
        msg = f"{name} is empty: at least one score is needed to calibrate a threshold"
        raise ValueError(msg)
    if np.isnan(array).any():
        msg = f"{name} contains {int(np.isnan(array).sum())} NaN score(s)"
        raise ValueError(msg)
    return array


def _cut_values(pooled: np.ndarray) -> np.ndarray:
    """Candidate threshold values for sorted unique scores ``pooled`` (U,), returned as (U + 1,).

    Entry 0 lies below every score (all abnormal); entry ``i >= 1`` behaves as ``score > pooled[i - 1]`` on the
    calibration scores and sits midway to the next score (the maximum itself for the last one).
    """
    if pooled.size > 1:
        mids = pooled[:-1] + np.diff(pooled) / 2.0
        mids = np.where(mids >= pooled[1:], pooled[:-1], mids)  # rounding between adjacent floats
        step = float(np.min(np.diff(pooled))) / 2.0
    else:
        mids = np.empty(0)
        step = max(abs(float(pooled[0])), 1.0) / 2.0
    below = pooled[0] - step
    if below >= pooled[0]:
        below = np.nextafter(pooled[0], -np.inf)
    return np.concatenate([[below], mids, pooled[-1:]])


def _operating_points(normal: np.ndarray, abnormal: np.ndarray) -> dict[str, np.ndarray]:
    """Sensitivity, specificity and F1 at every distinct cut (``score > cut`` is abnormal).

    Returns:
        Dict of (K,) arrays ``cut`` (ascending), ``specificity``, ``sensitivity`` and ``f1`` (the last two NaN
        when there are no abnormal scores).
    """
    cuts = _cut_values(np.unique(np.concatenate([normal, abnormal])))
    normal_ok = np.searchsorted(np.sort(normal), cuts, side="right")  # normals at or below the cut
    specificity = normal_ok / normal.size
    if abnormal.size == 0:
        nan = np.full(cuts.shape, np.nan)
        return {"cut": cuts, "specificity": specificity, "sensitivity": nan, "f1": nan}
    tp = abnormal.size - np.searchsorted(np.sort(abnormal), cuts, side="right")
    fp = normal.size - normal_ok
    f1 = 2.0 * tp / (2.0 * tp + fp + (abnormal.size - tp))
    return {"cut": cuts, "specificity": specificity, "sensitivity": tp / abnormal.size, "f1": f1}


def _pick_index(points: dict[str, np.ndarray], method: str, target: float | None) -> int:
    """Index of the operating point a method chooses (ties: the lowest cut for J and F1)."""
    if method == "youden":
        return int(np.argmax(points["sensitivity"] + points["specificity"] - 1.0))
    if method == "f1":
        return int(np.argmax(points["f1"]))
    goal = (1.0 if target is None else target) - 1e-12  # _check_options made sure these two methods have one
    if method == "sensitivity":  # highest cut still reaching the target; sensitivity falls as the cut rises
        return int(np.flatnonzero(points["sensitivity"] >= goal)[-1])
    # specificity: lowest cut reaching the target; specificity rises with the cut and is 1 at the top cut
    return int(np.flatnonzero(points["specificity"] >= goal)[0])


def _check_options(method: str, percentile: float, target: float | None, has_abnormal: bool) -> None:
    """Validate the calibration options before any scores are touched."""
    if method not in METHODS:
        msg = f"unknown calibration method {method!r}; expected one of {', '.join(METHODS)}"
        raise ValueError(msg)
    if method in _NEEDS_ABNORMAL and not has_abnormal:
        msg = f"calibration method {method!r} needs abnormal scores as well as normal ones"
        raise ValueError(msg)
    if method == "percentile" and not 0.0 <= percentile <= 100.0:
        msg = f"percentile must lie in [0, 100], got {percentile}"
        raise ValueError(msg)
    if method in _NEEDS_TARGET and target is None:
        msg = f"calibration method {method!r} needs a target (e.g. '{method}:{0.03 if method == 'fixed' else 0.9}')"
        raise ValueError(msg)
    if method == "fixed" and not math.isfinite(target):  # type: ignore[arg-type]
        msg = f"a fixed threshold must be finite, got {target}"
        raise ValueError(msg)
    if method in ("sensitivity", "specificity") and not 0.0 < target <= 1.0:  # type: ignore[operator]
        msg = f"target {method} must lie in (0, 1], got {target} (use a fraction: 0.9, not 90)"
        raise ValueError(msg)


def calibrate(
    normal_scores: np.ndarray,
    abnormal_scores: np.ndarray | None = None,
    *,
    method: str = "percentile",
    percentile: float = 95.0,
    target: float | None = None,
) -> Threshold:
    """Choose a threshold from validation scores.

    Args:
        normal_scores: (N,) scores of normal cases (may be empty only for ``method="fixed"``).
        abnormal_scores: (M,) scores of abnormal cases; required by ``youden``, ``f1`` and ``sensitivity``.
        method: ``percentile`` (of the normal scores), ``youden`` (max sensitivity + specificity - 1),
            ``f1`` (max F1), ``sensitivity`` (highest value whose sensitivity >= target), ``specificity``
            (lowest value whose specificity >= target) or ``fixed`` (value = target).
        percentile: Percentile in [0, 100] for ``method="percentile"``.
        target: Target in (0, 1] for ``sensitivity``/``specificity``; the threshold itself for ``fixed``.

    Returns:
        The threshold; with ``score > value`` the calibration scores reproduce the reported operating point.

    Raises:
        ValueError: On an unknown method, missing abnormal scores or target, empty arrays or NaN scores.
    """
    has_abnormal = abnormal_scores is not None and np.asarray(abnormal_scores).size > 0
    _check_options(method, percentile, target, has_abnormal)
    normal = _as_scores(normal_scores, "normal_scores", allow_empty=method == "fixed")
    abnormal = np.empty(0)
    if abnormal_scores is not None:
        abnormal = _as_scores(abnormal_scores, "abnormal_scores", allow_empty=True)
    counts = {"n_normal": int(normal.size), "n_abnormal": int(abnormal.size)}
    if method == "fixed":
        return Threshold(value=float(target), method="fixed", params={"target": float(target)}, **counts)  # type: ignore[arg-type]
    if method == "percentile":
        value = float(np.percentile(normal, percentile))
        return Threshold(value=value, method=method, params={"percentile": float(percentile)}, **counts)
    points = _operating_points(normal, abnormal)
    index = _pick_index(points, method, target)
    params: dict[str, Any] = {} if target is None else {"target": float(target)}
    for key in ("sensitivity", "specificity", "f1"):
        if not np.isnan(points[key][index]):
            params[key] = float(points[key][index])
    if method == "youden":
        params["youden_j"] = params["sensitivity"] + params["specificity"] - 1.0
    value = float(points["cut"][index])
    logger.debug("calibrated %s threshold %.6g with %s", method, value, params)
    return Threshold(value=value, method=method, params=params, **counts)


def parse_calibration(spec: str) -> dict[str, Any]:
    """Turn a CLI calibration string into keyword arguments for :func:`calibrate`.

    Args:
        spec: ``"percentile:95"``, ``"percentile"`` (95), ``"youden"``, ``"f1"``, ``"sensitivity:0.9"``,
            ``"specificity:0.95"`` or ``"fixed:0.03"`` (case and surrounding spaces ignored).

    Returns:
        ``{"method": ...}`` plus ``percentile`` or ``target`` as a float.

    Raises:
        ValueError: If the method is unknown, a number is missing, superfluous, malformed or out of range.
    """
    text = str(spec).strip().lower()
    name, sep, arg = (part.strip() for part in text.partition(":"))
    usage = "expected percentile[:P], youden, f1, sensitivity:T, specificity:T or fixed:V"
    if name not in METHODS:
        msg = f"unknown calibration {spec!r}: {usage}"
        raise ValueError(msg)
    if name in ("youden", "f1"):
        if sep:
            msg = f"calibration {name!r} takes no value, got {spec!r}"
            raise ValueError(msg)
        return {"method": name}
    if not arg:
        if name == "percentile":
            return {"method": name, "percentile": 95.0}
        msg = f"calibration {name!r} needs a value, e.g. '{name}:{0.03 if name == 'fixed' else 0.9}' ({usage})"
        raise ValueError(msg)
    try:
        number = float(arg)
    except ValueError:
        msg = f"calibration {spec!r}: {arg!r} is not a number"
        raise ValueError(msg) from None
    kwargs: dict[str, Any] = {"method": name, "percentile" if name == "percentile" else "target": number}
    _check_options(name, kwargs.get("percentile", 95.0), kwargs.get("target"), has_abnormal=True)
    return kwargs


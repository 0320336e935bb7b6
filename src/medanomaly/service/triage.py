"""Triage for a reading list: three bands from two cuts, and the worklist's priority order.

Beside the decision threshold (``score > threshold``: flagged), a model version may carry a rule-out point: the
highest cut that keeps the wanted sensitivity (e.g. 0.98) on the radiologists' labelled studies, fitted with
:func:`medanomaly.thresholds.calibrate` (``method="sensitivity"``). Scores at or below it are *likely normal*,
between the two cuts *review*, above the threshold *flagged*. The figures shown with the bands are measured on
cases the cut was not fitted on (:func:`medanomaly.service.versions.cross_validated_point`).

Priority (unread studies first): a study scored and unread for longer than the maximum waiting time rises above all
others (oldest first); then flagged, review (and out of domain), likely normal, each by score, highest first; then
studies without a result; studies that already have an opinion on their latest result come last.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from medanomaly.evaluation.metrics import operating_point
from medanomaly.service.db import Result, Study, utcnow
from medanomaly.service.model_store import ModelStore
from medanomaly.service.versions import cross_validated_point
from medanomaly.thresholds import calibrate

BANDS = {"likely_normal": "likely normal", "review": "review", "flagged": "flagged"}
_RANK = {"flagged": 0, "review": 1, "likely_normal": 2}


def fit_triage(
    labels: np.ndarray, scores: np.ndarray, threshold: float, target: float, folds: int = 5
) -> dict[str, Any]:
    """The rule-out point for ``target`` sensitivity, with its figures and the cases each band holds.

    Args:
        labels: (N,) 0 normal / 1 abnormal (both classes, at least 2 each).
        scores: (N,) the model's scores of those studies.
        threshold: The version's decision threshold (the rule-out cut is never above it).
        target: Wanted sensitivity of the rule-out cut, in (0, 1].
        folds: Folds of the cross-validation.

    Returns:
        JSON-able: ``target_sensitivity``, ``rule_out`` (cut), ``threshold``, ``rule_out_point`` (cross-validated
        operating point of ``score > rule_out``: its specificity is the share of normal studies ruled out),
        ``flag_point`` (``score > threshold`` on the same cases), ``bands`` (normal/abnormal cases per band) and
        ``n_cases``.
    """
    labels, scores = np.asarray(labels, dtype=np.int64), np.asarray(scores, dtype=np.float64)

    def fit(y: np.ndarray, s: np.ndarray) -> float:
        cut = calibrate(s[y == 0], s[y == 1], method="sensitivity", target=target).value
        return min(cut, threshold)

    rule_out_point = cross_validated_point(labels, scores, fit, folds)
    cut = rule_out_point["threshold"]
    bands = {name: {"normal": 0, "abnormal": 0} for name in BANDS}
    for label, score in zip(labels, scores, strict=True):
        bands[band_of(float(score), threshold, cut)]["abnormal" if label else "normal"] += 1
    return {
        "target_sensitivity": float(target),
        "rule_out": cut,
        "threshold": float(threshold),
        "rule_out_point": rule_out_point,
        "flag_point": operating_point(labels, scores, threshold),
        "bands": bands,
        "n_cases": int(labels.size),
    }


def band_of(score: float, threshold: float, rule_out: float | None) -> str:
    """``flagged`` above the threshold, ``likely_normal`` at or below the rule-out cut, else ``review``."""
    if score > threshold:
        return "flagged"
    return "likely_normal" if rule_out is not None and score <= rule_out else "review"


def result_band(result: Result | None) -> str | None:
    """The band of a result under its own model version's cuts (None without a result; out of domain: review)."""
    if result is None:
        return None
    if result.score is None:
        return "review"
    triage = result.model_version.triage or {}
    return band_of(result.score, result.threshold, triage.get("rule_out"))


def waiting_minutes(study: Study, now: dt.datetime | None = None) -> float:
    """Minutes since the study was uploaded."""
    return ((now or utcnow()) - study.created_at).total_seconds() / 60.0


def is_unread(study: Study) -> bool:
    """Scored (or out of domain) and without an opinion on its latest result."""
    return study.result is not None and study.opinion is None


def is_overdue(study: Study, max_wait_minutes: float, now: dt.datetime | None = None) -> bool:
    """Unread and waiting longer than ``max_wait_minutes``."""
    return is_unread(study) and waiting_minutes(study, now) > max_wait_minutes


def priority_key(study: Study, max_wait_minutes: float, now: dt.datetime) -> tuple:
    """Sort key of the priority order (smaller first; see the module docstring)."""
    age = -waiting_minutes(study, now)
    if study.result is None:
        return (5, age, -study.id)
    if study.opinion is not None:
        return (6, age, -study.id)
    if is_overdue(study, max_wait_minutes, now):
        return (0, age, -study.id)
    score = study.result.score
    return (1 + _RANK[result_band(study.result) or "review"], -(score if score is not None else np.inf), -study.id)


def by_priority(studies: Iterable[Study], max_wait_minutes: float, now: dt.datetime | None = None) -> list[Study]:
    """``studies`` in priority order."""
    now = now or utcnow()
    return sorted(studies, key=lambda study: priority_key(study, max_wait_minutes, now))


def triage_context(db: Session, store: ModelStore, max_wait_minutes: float) -> dict[str, Any]:
    """What the worklist shows about triage: each served model's active cuts and figures, and per-study helpers."""
    now = utcnow()
    active = {name: store.active(db, name) for name in store.models}
    return {
        "versions": {name: row for name, row in active.items() if row is not None},
        "labels": BANDS,
        "max_wait_minutes": max_wait_minutes,
        "band": result_band,
        "overdue": lambda study: is_overdue(study, max_wait_minutes, now),
        "waiting": lambda study: waiting_minutes(study, now),
    }

"""The feedback loop: radiologists' opinions become labels, a data set, and recalibrated model versions.

The label of a study is its latest opinion's. Recalibration pairs that label with the score the model gave the
study (scores do not change between versions that differ only in threshold), calibrates a new threshold with
:func:`medanomaly.thresholds.calibrate` and proposes ``Model.with_threshold`` as a new, inactive version
(``MODEL_DIR/versions/v<N>``, :mod:`medanomaly.service.versions`), recording the sensitivity/specificity before and
after (after: cross-validated, on cases the threshold was not fitted on) and a triage rule-out point.
"""

from __future__ import annotations

import csv
import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from medanomaly.evaluation.metrics import operating_point
from medanomaly.service.db import ModelVersion, Opinion, Result, Study, User
from medanomaly.service.model_store import ModelStore
from medanomaly.service.triage import fit_triage
from medanomaly.service.versions import check_minimum, cross_validated_point, propose_version
from medanomaly.thresholds import calibrate, parse_calibration

logger = logging.getLogger(__name__)
NORMAL_LABEL = "NORMAL"
ABNORMAL_LABEL = "ABNORMAL"
#: Labels a radiologist may use for a healthy study; they are exported as ``NORMAL``.
NORMAL_LABELS = frozenset({"NORMAL", "HEALTHY", "NO_FINDING", "NEGATIVE"})
_MANIFEST_FIELDS = ["path", "label", "study", "score", "model", "model_version", "opinion_by", "opinion_at"]


@dataclass(frozen=True)
class FeedbackCase:
    """One labelled study: its label from the latest opinion and the model's score."""

    study_id: int
    uid: str
    input_path: str
    label: str
    abnormal: bool
    score: float | None
    model_name: str
    model_version: int | None
    opinion_by: str
    opinion_at: str


def clean_label(label: str) -> str:
    """A label usable as a folder name: letters, digits, ``_`` and ``-``, upper case (``""`` stays empty)."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", label.strip()).strip("_").upper()[:64]


def feedback_cases(db: Session, model_name: str | None = None) -> list[FeedbackCase]:
    """Every study with an opinion (and, for ``model_name``, a result of that model), oldest first."""
    query = (
        select(Study)
        .where(Study.opinions.any())
        .order_by(Study.id)
        .options(
            selectinload(Study.opinions).selectinload(Opinion.user),
            selectinload(Study.results).selectinload(Result.model_version),
        )
    )
    cases = []
    for study in db.scalars(query):
        opinion = study.opinions[-1]  # the label of the study, whichever result it judged
        results = [r for r in study.results if model_name is None or r.model_version.name == model_name]
        if model_name is not None and not results:
            continue
        result = results[-1] if results else None
        cases.append(
            FeedbackCase(
                study.id,
                study.uid,
                study.input_path,
                opinion.label,
                opinion.abnormal,
                None if result is None else result.score,
                study.model_name,
                None if result is None else result.model_version.version,
                opinion.user.username,
                opinion.created_at.isoformat(timespec="seconds"),
            )
        )
    return cases


def recalibrate(
    db: Session,
    store: ModelStore,
    name: str | None,
    spec: str,
    user: User | None,
    actor: str | None = None,
    *,
    min_per_class: int = 10,
    folds: int = 5,
    triage_sensitivity: float | None = 0.98,
) -> ModelVersion:
    """Propose a new, **inactive** model version whose threshold is calibrated on the feedback set.

    The "after" figures are measured on cases the threshold was not fitted on (stratified k-fold); "before" is the
    active version's threshold on all labelled studies. An admin activates the version
    (:func:`medanomaly.service.versions.activate_version`) after reading them.

    Args:
        db: Database session (committed on success).
        store: Served models (the new version is saved under the model's ``versions/`` folder).
        name: Model name (default model when None).
        spec: Calibration, as for ``medanomaly train --calibrate`` (``youden``, ``f1``, ``percentile:95``, ...), or
            ``keep`` (same threshold: a version that only adds the triage rule-out point).
        user: Who asked (None from the command line: ``actor`` names them in the audit trail).
        actor: Audit name when ``user`` is None.
        min_per_class: Fewest labelled normal and abnormal studies accepted.
        folds: Folds of the cross-validation.
        triage_sensitivity: Target sensitivity of the triage rule-out point (None: no triage).

    Returns:
        The new version's row; its ``recalibration`` holds the before/after operating points, ``triage`` the bands.

    Raises:
        ValueError: Unknown model or calibration, no usable active version, or too few labelled cases.
    """
    name = name or store.default_name
    current = store.active(db, name)
    if current is None:
        msg = f"model {name!r} is not served or has no usable version ({store.errors.get(name or '', 'unknown')})"
        raise ValueError(msg)
    model = store.load(current)
    old = model.threshold.value if model.threshold else float("nan")
    keep = spec.strip().lower() == "keep"
    if keep and model.threshold is None:
        raise ValueError(f"{current.label} has no threshold to keep")
    options = {} if keep else parse_calibration(spec)
    labels, scores = _labelled_scores(db, current.name)
    check_minimum(labels, min_per_class)

    def fit(y: np.ndarray, s: np.ndarray) -> float:
        return old if keep else calibrate(s[y == 0], s[y == 1], **options).value

    after = cross_validated_point(labels, scores, fit, folds)
    threshold = model.threshold if keep else calibrate(scores[labels == 0], scores[labels == 1], **options)
    details = {"spec": spec, "n_cases": len(labels), "before": operating_point(labels, scores, old), "after": after,
               "from_version": current.version}
    triage = None
    if triage_sensitivity is not None:
        triage = fit_triage(labels, scores, threshold.value, triage_sensitivity, folds)
    new_model = model.with_threshold(threshold, calibration={"spec": spec, "source": "feedback", "n": len(labels)})
    row = propose_version(db, store, current, new_model, details, user=user, actor=actor,
                          action="model.recalibrate", triage=triage)
    logger.info("recalibrated %s: v%d -> v%d (inactive), threshold %.6g", current.name, current.version,
                row.version, threshold.value)
    return row


def _labelled_scores(db: Session, model_name: str) -> tuple[np.ndarray, np.ndarray]:
    """(labels (N,) {0, 1}, scores (N,)) of the feedback set of one model."""
    cases = [case for case in feedback_cases(db, model_name) if case.score is not None]
    labels = np.array([int(case.abnormal) for case in cases], dtype=np.int64)
    scores = np.array([case.score for case in cases], dtype=np.float64)
    return labels, scores


def export_feedback(db: Session, data_dir: Path, out: Path) -> Path:
    """Write the labelled studies as a ``<label>/`` data set plus ``manifest.csv`` (``path,label,...``).

    The normal label is ``NORMAL`` (the name ``medanomaly train``/``evaluate`` look for); files are named after
    the study's internal uid, never its original name.

    Returns:
        The manifest path.
    """
    out.mkdir(parents=True, exist_ok=True)
    rows = [row for case in feedback_cases(db) if (row := _export_case(case, data_dir, out)) is not None]
    manifest = out / "manifest.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=_MANIFEST_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    return manifest


def _export_case(case: FeedbackCase, data_dir: Path, out: Path) -> dict[str, Any] | None:
    """Copy one labelled study to ``out/<LABEL>/<uid><ext>``; its manifest row (None when its input is gone)."""
    label = NORMAL_LABEL if not case.abnormal else (clean_label(case.label) or ABNORMAL_LABEL)
    source = data_dir / case.input_path
    if not source.exists():
        logger.warning("study %d: input missing, not exported", case.study_id)
        return None
    target = out / label / f"{case.uid}{''.join(source.suffixes) if source.is_file() else ''}"
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_dir():
        shutil.rmtree(target)
    if source.is_dir():
        shutil.copytree(source, target)
    else:
        shutil.copy2(source, target)
    return {"path": str(target.relative_to(out)), "label": label, "study": case.study_id,
            "score": "" if case.score is None else f"{case.score:.6g}", "model": case.model_name,
            "model_version": case.model_version or "", "opinion_by": case.opinion_by, "opinion_at": case.opinion_at}

"""New model versions that cannot hurt silently: proposed inactive, measured on unseen cases, activated by an admin.

The flow every maker of versions follows (recalibration from feedback, retraining from feedback):

1. :func:`check_minimum` — refuse when a class has fewer labelled cases than the setting asks for;
2. :func:`cross_validated_point` — the new operating point measured on cases not used to fit it (stratified
   k-fold: each fold's cut is fitted on the other folds, the pooled out-of-fold decisions are counted);
3. :func:`propose_version` — save the new model as ``MODEL_DIR/versions/v<N>`` and register it **inactive**, with
   its before/after figures in ``ModelVersion.recalibration``;
4. an admin reads the figures and calls :func:`activate_version` (any earlier version can be activated again:
   rollback), or :func:`discard_version`.

Exactly one version per model is active (``ModelVersion.active``); new studies and rescoring use it.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from medanomaly.evaluation.metrics import operating_point
from medanomaly.model import Model
from medanomaly.service import audit
from medanomaly.service.db import ModelVersion, Result, User, utcnow
from medanomaly.service.model_store import ModelStore

logger = logging.getLogger(__name__)
#: Fits a decision cut on (labels, scores) of the training folds.
CutFitter = Callable[[np.ndarray, np.ndarray], float]


class VersionConflict(ValueError):
    """The version cannot be activated or discarded in its present state (HTTP 409)."""


def check_minimum(labels: np.ndarray, minimum: int) -> None:
    """ValueError unless both classes have at least ``minimum`` labelled cases (the message gives the counts)."""
    n_abnormal = int(np.sum(labels == 1))
    n_normal = int(labels.size - n_abnormal)
    if min(n_normal, n_abnormal) < minimum:
        msg = (f"too few labelled studies: {n_normal} normal and {n_abnormal} abnormal, at least {minimum} of each "
               "are needed (setting recalibration_min_per_class); give more opinions first")
        raise ValueError(msg)


def cross_validated_point(
    labels: np.ndarray, scores: np.ndarray, fit: CutFitter, folds: int = 5, seed: int = 0
) -> dict[str, Any]:
    """Sensitivity/specificity of a cut-fitting rule on cases it was not fitted on (stratified k-fold).

    Args:
        labels: (N,) 0 normal / 1 abnormal; both classes at least 2 cases.
        scores: (N,) scores, higher = more anomalous.
        fit: Returns the cut (``score > cut`` is abnormal) fitted on the training folds' labels and scores.
        folds: Wanted number of folds (lowered to the size of the smaller class).
        seed: Shuffling seed of the folds.

    Returns:
        :func:`medanomaly.evaluation.metrics.operating_point` of the pooled out-of-fold decisions, with
        ``threshold`` = the cut fitted on all cases, plus ``n_folds`` and ``validation``.
    """
    from sklearn.model_selection import StratifiedKFold

    labels, scores = np.asarray(labels, dtype=np.int64), np.asarray(scores, dtype=np.float64)
    n_folds = int(min(folds, np.sum(labels == 0), np.sum(labels == 1)))
    if n_folds < 2:
        msg = "cross-validation needs at least 2 normal and 2 abnormal labelled cases"
        raise ValueError(msg)
    margins = np.empty_like(scores)  # score minus the cut of the fold the case was held out from
    splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for train, test in splitter.split(scores.reshape(-1, 1), labels):
        margins[test] = scores[test] - fit(labels[train], scores[train])
    point = operating_point(labels, margins, 0.0)
    point["threshold"] = float(fit(labels, scores))
    return {**point, "n_folds": n_folds, "validation": f"stratified {n_folds}-fold cross-validation"}


def sensitivity_drop(row: ModelVersion) -> tuple[float, float] | None:
    """(before, after) sensitivity when the version's measured sensitivity is lower than its parent's, else None."""
    details = row.recalibration or {}
    before = (details.get("before") or {}).get("sensitivity")
    after = (details.get("after") or {}).get("sensitivity")
    if before is None or after is None or after >= before:
        return None
    return float(before), float(after)


def _who(user: User | None, actor: str | None) -> tuple[str, dict[str, str]]:
    """(name to record, extra audit detail): the user's name, or ``actor`` (default ``cli``) named in the detail."""
    if user is not None:
        return user.username, {}
    return actor or "cli", {"actor": actor or "cli"}


def next_version_number(db: Session, name: str) -> int:
    """One more than the highest registered version of ``name``."""
    return int(db.scalar(select(func.max(ModelVersion.version)).where(ModelVersion.name == name)) or 0) + 1


def propose_version(
    db: Session,
    store: ModelStore,
    current: ModelVersion,
    new_model: Model,
    details: dict[str, Any],
    *,
    user: User | None,
    actor: str | None = None,
    action: str = "model.propose",
    triage: dict[str, Any] | None = None,
) -> ModelVersion:
    """Save ``new_model`` as the next version of ``current``'s model and register it **inactive** (committed).

    Args:
        db: Database session.
        store: Served models (the folder is ``MODEL_DIR/versions/v<N>``, N = highest registered + 1).
        current: The version the new one derives from (its parent).
        new_model: The model to save (its ``info["version"]`` is set to N).
        details: Before/after figures shown to the admin: at least ``before`` and ``after``, each an
            :func:`~medanomaly.evaluation.metrics.operating_point` dict (``after`` measured on unseen cases).
        user: Who asked (None from the command line: ``actor`` names them).
        actor: Audit name when ``user`` is None.
        action: Audit action (``model.recalibrate``, ``model.retrain``, ...).
        triage: Optional rule-out point (:func:`medanomaly.service.triage.fit_triage`).

    Returns:
        The new, inactive version's row.
    """
    number = next_version_number(db, current.name)
    new_model.info["version"] = number
    target = store.next_version_dir(current.name, number)
    if target.exists():
        msg = f"version folder v{number} of {current.name!r} exists but is not registered; move it away and retry"
        raise ValueError(msg)
    new_model.save(target)
    row = store.register(db, current.name, target)
    row.parent_id, row.recalibration, row.triage, row.active = current.id, details, triage, False
    row.created_by, who = _who(user, actor)
    audit.record(db, user, action, f"model:{row.id}", name=row.name, version=row.version,
                 from_version=current.version, **who)
    db.commit()
    logger.info("%s: v%d proposed (inactive) from v%d", row.name, row.version, current.version)
    return row


def find_version(db: Session, name: str, version: int) -> ModelVersion:
    """The row of ``name`` v``version``; KeyError when unknown."""
    row = db.scalar(select(ModelVersion).where(ModelVersion.name == name, ModelVersion.version == version))
    if row is None:
        raise KeyError(f"no version {version} of model {name!r}")
    return row


def activate_version(
    db: Session, name: str, version: int, *, user: User | None, actor: str | None = None, accept_drop: bool = False
) -> ModelVersion:
    """Make ``name`` v``version`` the active version (committed); the previously active one becomes inactive.

    Raises:
        KeyError: Unknown version.
        VersionConflict: Its folder is gone, or its measured sensitivity is lower than before and
            ``accept_drop`` is False.
    """
    row = find_version(db, name, version)
    if not (Path(row.path) / "model.json").is_file():
        raise VersionConflict(f"{row.label}: its model folder is gone; it cannot be activated")
    drop = sensitivity_drop(row)
    if drop is not None and not accept_drop:
        msg = (f"{row.label} lowers the sensitivity from {100 * drop[0]:.0f} % to {100 * drop[1]:.0f} %: "
               "confirm that you accept the drop to activate it")
        raise VersionConflict(msg)
    previous = db.scalar(select(ModelVersion).where(ModelVersion.name == name, ModelVersion.active.is_(True)))
    for other in db.scalars(select(ModelVersion).where(ModelVersion.name == name, ModelVersion.id != row.id)):
        other.active = False
    row.active, row.activated_at = True, utcnow()
    row.activated_by, who = _who(user, actor)
    audit.record(db, user, "model.activate", f"model:{row.id}", name=name, version=version,
                 from_version=None if previous is None else previous.version, accepted_drop=drop is not None, **who)
    db.commit()
    logger.info("%s: v%d active (was v%s)", name, version, None if previous is None else previous.version)
    return row


def discard_version(db: Session, name: str, version: int, *, user: User | None, actor: str | None = None) -> None:
    """Delete a proposed version that never scored a study: its row and its folder (committed).

    Raises:
        KeyError: Unknown version.
        VersionConflict: It is active, was ever active, has results, or other versions derive from it.
    """
    row = find_version(db, name, version)
    used = db.scalar(select(func.count()).select_from(Result).where(Result.model_version_id == row.id))
    children = db.scalar(select(func.count()).select_from(ModelVersion).where(ModelVersion.parent_id == row.id))
    if row.active or row.activated_at is not None or used or children or row.parent_id is None:
        raise VersionConflict(f"{row.label} was used (active, scored studies, or has derived versions): kept")
    path = Path(row.path)
    who = _who(user, actor)[1]
    audit.record(db, user, "model.discard", f"model:{row.id}", name=name, version=version, **who)
    db.delete(row)
    db.commit()
    if path.parent.name == "versions" and path.is_dir():
        shutil.rmtree(path)
    logger.info("%s: v%d discarded", name, version)

"""Storing a scored study: its arrays on disk and its ``Result`` row (for the job runner and the PACS worklist)."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from medanomaly.model import Model
from medanomaly.pipeline import StudyResult
from medanomaly.service.db import Result
from medanomaly.service.imaging import finding_box, save_arrays
from medanomaly.types import Study as RawStudy

_EXTRA_IMAGES = ("reconstruction", "translation")


def record_result(
    db: Session,
    data_dir: Path,
    study: Any,
    version: Any,
    raw: RawStudy,
    result: StudyResult,
    model: Model,
    timings: dict[str, float],
) -> Result:
    """Save ``result``'s arrays under ``data_dir/studies/<uid>/`` and add its ``Result`` row (flushed, not committed).

    Earlier results of the study (and their arrays) are kept: they are its history.

    Args:
        db: Open session.
        data_dir: The service's data directory.
        study: The ``Study`` row scored.
        version: The ``ModelVersion`` row that scored it.
        raw: The study as read (pixels for the stored arrays).
        result: What :func:`medanomaly.pipeline.score_study` returned.
        model: The model (post-processing settings for the stored maps).
        timings: Seconds per step, stored rounded to 0.1 ms.
    """
    folder = data_dir / "studies" / study.uid
    name = f"result-v{version.version}.npz"
    if (folder / name).exists():  # a rescore by the same version: the earlier result keeps its arrays
        name = f"result-v{version.version}-{secrets.token_hex(4)}.npz"
    arrays = save_arrays(folder / name, raw, result, model)
    geometry = result.geometry.to_dict()
    row = Result(
        study_id=study.id,
        model_version_id=version.id,
        score=result.score if result.decided else None,
        threshold=result.threshold,
        abnormal=result.abnormal,
        label=result.label,
        status=result.status,
        domain_reason=result.domain_reason,
        domain=result.domain,
        slice_scores=[float(s) for s in result.slice_scores],
        findings=[{**f.to_dict(), "box": finding_box(f.to_dict(), geometry)} for f in result.findings],
        extras=sorted(k for k in result.extras if k in _EXTRA_IMAGES),
        arrays_path=str(arrays.relative_to(data_dir)),
        timings={key: round(value, 4) for key, value in timings.items()},
    )
    db.add(row)
    db.flush()
    return row

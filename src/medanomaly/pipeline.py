"""The one path a study travels at scoring time: read -> preprocess -> detector -> post-process -> decision.

The CLI, evaluation, calibration, the benchmark, the web service and the PACS link all call :func:`score_study` or
its batch form :func:`score_studies` (:func:`score_paths` for files), so a score is the same number whichever door
it came through.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from medanomaly.data.loading import Failure
from medanomaly.domain import DomainCheck, check_study
from medanomaly.errors import InputError
from medanomaly.io import read_study
from medanomaly.mapping import Finding, find_regions
from medanomaly.model import Model, StudyScore
from medanomaly.transforms import Geometry
from medanomaly.types import Study

logger = logging.getLogger(__name__)
_META_KEYS = ("kind", "modality", "body_part", "spacing", "patient_id", "study_uid", "series_uid", "window")
SCORED, OUT_OF_DOMAIN = "scored", "out_of_domain"


@dataclass
class StudyResult:
    """Everything known about one scored study.

    Attributes:
        path: Where the study came from.
        score: Anomaly score (higher = more abnormal); for a classifier, the probability of the abnormal class.
            NaN when the study is out of the model's domain (the detector is not run).
        abnormal: The decision against the model's threshold; None when out of domain (no decision).
        label: Display label: ``NORMAL``/``ABNORMAL`` (anomaly detectors) or the class name (classifiers);
            ``OUT OF DOMAIN`` when out of domain.
        threshold: The threshold used.
        slice_scores: (S,) per-slice scores.
        findings: Regions of the thresholded map, most anomalous first.
        anomaly_maps: (S, R, R) filtered maps in model space.
        images: (S, C, R, R) the preprocessed input slices in [0, 1].
        geometry: Maps model space back to the original slice grid.
        extras: Per-slice extra outputs (``reconstruction``, ``mask``, ...).
        meta: Identifiers and acquisition facts of the study.
        model: ``{"method", "version", "path"}`` of the model that scored it.
        seconds: Wall time of reading + scoring.
        status: ``scored`` (decided) or ``out_of_domain`` (no decision: see ``domain_reason``).
        domain_reason: Why the study is outside the model's domain (also set when the check was overridden).
        domain: The domain check as JSON (``known``, ``in_domain``, ``ignored``, ``reasons``, measured values).
    """

    path: str
    score: float
    abnormal: bool | None
    label: str
    threshold: float
    slice_scores: np.ndarray
    findings: list[Finding]
    anomaly_maps: np.ndarray | None
    images: np.ndarray
    geometry: Geometry
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    status: str = SCORED
    domain_reason: str | None = None
    domain: dict[str, Any] = field(default_factory=dict)

    @property
    def decided(self) -> bool:
        """True when the model made a decision (the study was in its domain, or the check was overridden)."""
        return self.status == SCORED

    def summary(self) -> dict[str, Any]:
        """JSON-able result without the arrays (``score`` is None when out of domain)."""
        return {
            "path": self.path,
            "status": self.status,
            "domain_reason": self.domain_reason,
            "label": self.label,
            "abnormal": self.abnormal,
            "score": self.score if np.isfinite(self.score) else None,
            "threshold": self.threshold,
            "n_slices": int(len(self.slice_scores)),
            "slice_scores": [float(s) for s in self.slice_scores],
            "findings": [finding.to_dict() for finding in self.findings],
            "meta": self.meta,
            "model": self.model,
            "domain": self.domain,
            "seconds": round(self.seconds, 4),
        }


def score_study(
    model: Model,
    study: Study,
    progress: Callable[[int, int], None] | None = None,
    batch_size: int = 64,
    *,
    ignore_domain: bool = False,
) -> StudyResult:
    """Score one study already read from disk; ``progress`` gets (slices done, total) after each batch.

    The study is first checked against the model's domain: outside it, the result has status ``out_of_domain``, no
    decision, and the detector is not run, unless ``ignore_domain`` (research use) asks to score regardless.
    """
    return _finish(model, [_prepare(model, study, ignore_domain)], batch_size, progress=progress)[0]


def score_studies(
    model: Model,
    studies: Iterable[Study],
    *,
    batch_size: int = 64,
    ignore_domain: bool = False,
    failures: list[Failure] | None = None,
    decide: bool = True,
) -> Iterator[StudyResult]:
    """Score studies in order, each as :func:`score_study` scores it; consecutive studies share forward passes.

    The batch form of :func:`score_study` for evaluation, calibration and folders: same preprocessing, domain check,
    post-processing and decision, with the slices of up to ``batch_size`` studies scored together.

    Args:
        model: The model.
        studies: Studies already read (a generator keeps only one batch of them in memory).
        batch_size: Slices per forward pass.
        ignore_domain: Score studies outside the model's domain too (see :func:`score_study`).
        failures: When given, a study whose preprocessing fails is listed here and skipped; else the error is raised.
        decide: False leaves ``abnormal`` None and ``label`` empty (calibration scores a model without a threshold).
    """
    pending: list[_Prepared] = []
    for study in studies:
        try:
            pending.append(_prepare(model, study, ignore_domain))
        except (InputError, ValueError) as error:
            if failures is None:
                raise
            logger.warning("skipped %s: %s", study.meta.get("path", "study"), error)
            failures.append(Failure(str(study.meta.get("path", "")), str(error)))
        if sum(len(p.images) for p in pending if p.to_score) >= batch_size:
            yield from _finish(model, pending, batch_size, decide=decide)
            pending = []
    yield from _finish(model, pending, batch_size, decide=decide)


@dataclass
class _Prepared:
    """A study preprocessed and checked against the model's domain, waiting for its forward pass."""

    study: Study
    images: np.ndarray
    geometry: Geometry
    check: DomainCheck
    seconds: float

    @property
    def to_score(self) -> bool:
        return self.check.in_domain or self.check.ignored


def _prepare(model: Model, study: Study, ignore_domain: bool) -> _Prepared:
    started = time.perf_counter()
    images, geometry = model.preprocessing.apply(study)
    check = check_study(model.domain, study, images)
    where = study.meta.get("path", "study")
    if not check.in_domain and ignore_domain:
        check.ignored = True
        logger.warning("%s: out of domain (%s), scored anyway (domain check overridden)", where, check.reason)
    elif not check.in_domain:
        logger.info("%s: out of domain: %s", where, check.reason)
    return _Prepared(study, images, geometry, check, time.perf_counter() - started)


def _finish(
    model: Model,
    prepared: list[_Prepared],
    batch_size: int,
    *,
    progress: Callable[[int, int], None] | None = None,
    decide: bool = True,
) -> list[StudyResult]:
    """Results of ``prepared`` in order: the ones to score share the detector's forward passes."""
    to_score = [p for p in prepared if p.to_score]
    started, scored = time.perf_counter(), []
    if to_score:
        owners = np.concatenate([np.full(len(p.images), index) for index, p in enumerate(to_score)])
        batch = np.concatenate([p.images for p in to_score]) if len(to_score) > 1 else to_score[0].images
        images = torch.from_numpy(batch)
        with torch.inference_mode():
            scored = model.score_images(images, owners, batch_size, progress)
    per_slice = (time.perf_counter() - started) / max(1, sum(len(p.images) for p in to_score))
    by_study = iter(scored)
    return [
        _scored(model, p, next(by_study), p.seconds + per_slice * len(p.images), decide)
        if p.to_score
        else _out_of_domain(model, p.study, p.images, p.geometry, p.check, p.seconds)
        for p in prepared
    ]


def _scored(model: Model, prepared: _Prepared, scored: StudyScore, seconds: float, decide: bool) -> StudyResult:
    study, check = prepared.study, prepared.check
    abnormal = model.decide(scored.score) if decide else None
    return StudyResult(
        path=str(study.meta.get("path", "")),
        score=scored.score,
        abnormal=abnormal,
        label="" if abnormal is None else _label(model, abnormal),
        threshold=float(model.threshold.value) if model.threshold else float("nan"),
        slice_scores=scored.slice_scores,
        findings=_findings(model, scored.anomaly_maps, study, prepared.geometry),
        anomaly_maps=scored.anomaly_maps,
        images=prepared.images,
        geometry=prepared.geometry,
        extras=scored.extras,
        meta={key: study.meta[key] for key in _META_KEYS if study.meta.get(key) is not None},
        model=_model_summary(model),
        seconds=seconds,
        domain_reason=check.reason,
        domain=check.to_dict(),
    )


def _out_of_domain(
    model: Model, study: Study, images: np.ndarray, geometry: Geometry, check: DomainCheck, seconds: float
) -> StudyResult:
    """A result without a decision: the study is outside what the model learned from."""
    return StudyResult(
        path=str(study.meta.get("path", "")),
        score=float("nan"),
        abnormal=None,
        label="OUT OF DOMAIN",
        threshold=float(model.threshold.value) if model.threshold else float("nan"),
        slice_scores=np.zeros(0, dtype=np.float32),
        findings=[],
        anomaly_maps=None,
        images=images,
        geometry=geometry,
        meta={key: study.meta[key] for key in _META_KEYS if study.meta.get(key) is not None},
        model=_model_summary(model),
        seconds=seconds,
        status=OUT_OF_DOMAIN,
        domain_reason=check.reason,
        domain=check.to_dict(),
    )


def _model_summary(model: Model) -> dict[str, Any]:
    return {"method": model.method, "version": model.version, "path": model.info.get("path", "")}


def score_path(model: Model, path: str | Path, *, ignore_domain: bool = False) -> StudyResult:
    """Read and score one file or series folder (see :func:`score_study` for ``ignore_domain``)."""
    study = read_study(path, color=model.preprocessing.channels == 3)
    return score_study(model, study, ignore_domain=ignore_domain)


def score_paths(
    model: Model,
    paths: Sequence[str | Path],
    *,
    progress: bool = True,
    ignore_domain: bool = False,
    batch_size: int = 64,
    decide: bool = True,
) -> tuple[list[StudyResult], list[Failure]]:
    """Read and score several studies in order (:func:`score_studies`); a bad one is skipped and reported."""
    failures: list[Failure] = []
    studies = read_studies(paths, color=model.preprocessing.channels == 3, failures=failures, progress=progress)
    scored = score_studies(
        model, studies, batch_size=batch_size, ignore_domain=ignore_domain, failures=failures, decide=decide
    )
    return list(scored), failures


def read_studies(
    paths: Sequence[str | Path], *, color: bool, failures: list[Failure], progress: bool = False, desc: str = "score"
) -> Iterator[Study]:
    """Read each path in turn; an unreadable one is logged, listed in ``failures`` and skipped."""
    for path in tqdm(paths, desc=desc, disable=not progress or len(paths) < 2, unit="study"):
        try:
            yield read_study(path, color=color)
        except (InputError, ValueError) as error:
            logger.warning("skipped %s", error)
            failures.append(Failure(str(path), str(error)))


def _label(model: Model, abnormal: bool) -> str:
    if model.detector.kind == "classification":
        names = model.class_names
        return names[1] if abnormal else names[0]
    return "ABNORMAL" if abnormal else "NORMAL"


def _findings(model: Model, maps: np.ndarray | None, study: Study, geometry: Geometry) -> list[Finding]:
    post = model.postprocessing
    if maps is None or post.region_threshold is None:
        return []
    spacing = study.meta.get("spacing")
    scale = geometry.original_shape[0] / geometry.resized_shape[0]
    model_spacing = (spacing[0] * scale, spacing[1] * scale) if spacing else None
    return find_regions(maps, post.region_threshold, min_area=post.min_region_area, spacing=model_spacing)

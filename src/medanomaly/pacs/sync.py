"""Pull -> score -> push between the PACS and the one scoring pipeline.

Fetch a study, score each image series with :func:`medanomaly.pipeline.score_study`, queue the DICOM results (SR,
SEG, Secondary Capture, optional PDF) in the outbox and send them back into the same study; older results of the
same images and model name are superseded (:mod:`medanomaly.pacs.reject`). The watcher
(:mod:`medanomaly.pacs.watcher`) and the DICOM receiver (:mod:`medanomaly.pacs.dimse`) use the same path.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from medanomaly.errors import InputError, ModelError
from medanomaly.io import read_study
from medanomaly.pacs.capture import build_captures, build_pdf
from medanomaly.pacs.client import NON_IMAGE_MODALITIES, PacsClient, PacsError, SeriesInfo
from medanomaly.pacs.identity import (
    MANUFACTURER,
    VOLUME_MODALITIES,
    ResultContext,
    copy_study_attributes,
    out_of_domain,
)
from medanomaly.pacs.outbox import FlushReport, Outbox
from medanomaly.pacs.reject import build_rejection
from medanomaly.pacs.report import report_pdf
from medanomaly.pacs.seg import build_seg
from medanomaly.pacs.settings import PacsSettings
from medanomaly.pacs.sr import build_sr
from medanomaly.pipeline import StudyResult, score_study

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

    from medanomaly.model import Model
    from medanomaly.pacs.worklist import Worklist
    from medanomaly.types import Study

logger = logging.getLogger(__name__)


@dataclass
class SeriesOutcome:
    """What happened to one scored unit (a volume series, or one image of a projection series)."""

    series_uid: str
    modality: str
    source: str
    result: StudyResult | None = None
    queued: list[str] = field(default_factory=list)  # kinds of the result instances queued: sr, seg, sc, pdf, ko
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    registered: int = 0  # 1 when added to the web service's worklist


@dataclass
class SyncReport:
    """Outcome of pulling, scoring and pushing one study."""

    study_uid: str
    outcomes: list[SeriesOutcome] = field(default_factory=list)
    flush: FlushReport | None = None

    @property
    def registered(self) -> int:
        """Units added to the web service's worklist."""
        return sum(outcome.registered for outcome in self.outcomes)

    @property
    def scored(self) -> list[SeriesOutcome]:
        """Units that were scored."""
        return [outcome for outcome in self.outcomes if outcome.result is not None]


def pull_study(
    client: PacsClient, study_uid: str, folder: Path, modalities: tuple[str, ...] | None = None
) -> list[tuple[SeriesInfo, Path]]:
    """Download the image series of a study (skipping reports, segmentations and medanomaly's own results).

    Args:
        client: The PACS.
        study_uid: Study Instance UID.
        folder: Where to write ``<SeriesUID>/<SOPUID>.dcm``.
        modalities: Only series of these modalities (None: any image modality).

    Raises:
        PacsError: The PACS does not know the study.
    """
    series = client.list_series(study_uid)
    if not series:
        msg = f"study {study_uid} is not in the PACS (QIDO-RS lists no series); check the Study Instance UID"
        raise PacsError(msg)
    wanted = [
        s
        for s in series
        if s.modality not in NON_IMAGE_MODALITIES
        and (not modalities or s.modality in modalities)
        and s.manufacturer != MANUFACTURER
    ]
    pulled = []
    for info in wanted:
        paths = client.retrieve_series(study_uid, info.series_uid, folder / info.series_uid)
        logger.info("pulled series %s (%s, %d instance(s))", info.series_uid, info.modality, len(paths))
        pulled.append((info, folder / info.series_uid))
    return pulled


def scoring_units(folder: Path, modality: str) -> list[Path]:
    """What to score in a series folder: the whole folder for a volume modality, else each file."""
    files = sorted(folder.glob("*.dcm"))
    return [folder] if modality in VOLUME_MODALITIES and len(files) > 1 else files


def source_headers(study: Study, folder: Path) -> list[Dataset]:
    """Headers of the source images in the study's slice order (``meta['sop_uids']``).

    Raises:
        InputError: A slice's file is missing from ``folder``.
    """
    import pydicom

    files = [folder] if folder.is_file() else sorted(folder.glob("*.dcm"))
    headers = {str(ds.SOPInstanceUID): ds for ds in (pydicom.dcmread(f, stop_before_pixels=True) for f in files)}
    missing = [uid for uid in study.meta.get("sop_uids", []) if uid not in headers]
    if missing or not study.meta.get("sop_uids"):
        raise InputError(
            folder, f"{len(missing)} source image(s) of the scored study are missing", "pull the study again"
        )
    return [headers[uid] for uid in study.meta["sop_uids"]]


def result_context(
    model: Model, result: StudyResult, sources: list[Dataset], uid_root: str | None = None
) -> ResultContext:
    """The identity of one scored unit's results (source headers, model name/version, UID root)."""
    return ResultContext.from_result(result, sources, created=str(model.info.get("created", "")), uid_root=uid_root)


def build_results(
    model: Model,
    result: StudyResult,
    sources: list[Dataset],
    *,
    pdf: bool = True,
    context: ResultContext | None = None,
) -> tuple[list[tuple[str, Dataset]], list[str]]:
    """The DICOM result objects of one scored unit.

    Args:
        model: The model that scored (threshold, region threshold, identity).
        result: The pipeline's result.
        sources: Source image headers in the result's slice order.
        pdf: Also make the PDF report (Encapsulated PDF) when the report builder is installed.
        context: Result identity (default: :func:`result_context` without a UID root).

    Returns:
        ([(kind, dataset)] with kinds ``sr``, ``seg``, ``sc``, ``pdf``; notes on what was left out and why).
        Every object declares UTF-8 and keeps IssuerOfPatientID / StudyDescription. For a study outside the
        model's domain only the SR (stating it, no decision) and the PDF are made.
    """
    context = context or result_context(model, result, sources)
    results, notes = _result_objects(model, result, context, pdf)
    for _, dataset in results:
        copy_study_attributes(context.first, dataset)
    return results, notes


def _result_objects(
    model: Model, result: StudyResult, context: ResultContext, pdf: bool
) -> tuple[list[tuple[str, Dataset]], list[str]]:
    results: list[tuple[str, Dataset]] = [("sr", build_sr(result, context))]
    notes = []
    threshold = model.postprocessing.region_threshold
    if out_of_domain(result):
        notes.append(f"out of the model's domain ({out_of_domain(result)}): an SR saying so, no decision")
        return results, notes
    if result.anomaly_maps is None:
        notes.append("the method gives no anomaly map: no SEG and no heat-map")
    else:
        if threshold is None:  # maps are resampled slice by slice inside: bounded memory for long series
            notes.append("the model has no region threshold: no SEG (recalibrate the model to get one)")
        else:
            results.append(("seg", build_seg(result, context, threshold)))
        results += [("sc", capture) for capture in build_captures(result, context, threshold)]
    document = report_pdf(result, context, threshold) if pdf else None
    if document is not None:
        results.append(("pdf", build_pdf(document, context)))
    elif pdf:
        notes.append("no PDF report: the report builder (reportlab) is not installed")
    return results, notes


def score_unit(
    model: Model,
    path: Path,
    info: SeriesInfo,
    outbox: Outbox,
    worklist: Worklist | None = None,
    uid_root: str | None = None,
) -> SeriesOutcome:
    """Score one file or series folder, queue its results and supersede the older ones.

    Older results of the same images and model name are dropped when unsent, else named in a rejection KOS.
    Results are registered in the worklist when one is given. A bad input becomes an outcome with an error;
    the other units go on.
    """
    outcome = SeriesOutcome(info.series_uid, info.modality, str(path))
    try:
        study = read_study(path, color=model.preprocessing.channels == 3)
        result = score_study(model, study)
        context = result_context(model, result, source_headers(study, path), uid_root)
        raw = study if worklist is not None else None  # the pixels (0.5 GB for a 1000-slice CT) only if registered
        del study
        datasets, outcome.notes = build_results(model, result, list(context.sources), context=context)
    except (InputError, ModelError, ValueError) as error:
        logger.warning("not scored: %s", error)
        outcome.error = str(error)
        return outcome
    outcome.result = result
    keys = (context.unit_key, context.model_name)
    for kind, dataset in datasets:
        outbox.add(dataset, kind, *keys)
        outcome.queued.append(kind)
    superseded = outbox.supersede(*keys, current={str(dataset.SeriesInstanceUID) for _, dataset in datasets})
    if superseded:
        outbox.add(build_rejection(context, superseded), "ko", *keys)
        outcome.queued.append("ko")
        outcome.notes.append(f"{len(superseded)} older result instance(s) of these images superseded")
    if worklist is not None and raw is not None:
        outcome.registered = worklist.register(model, info.series_uid, raw, result, path)
    return outcome


def score_series(
    model: Model,
    series: list[tuple[SeriesInfo, Path]],
    outbox: Outbox,
    settings: PacsSettings,
    worklist: Worklist | None = None,
) -> list[SeriesOutcome]:
    """Score every unit of the given series folders and queue their results."""
    return [
        score_unit(model, unit, info, outbox, worklist, settings.uid_root)
        for info, folder in series
        for unit in scoring_units(folder, info.modality)
    ]


def process_study(
    client: PacsClient,
    model: Model,
    study_uid: str,
    outbox: Outbox,
    settings: PacsSettings,
    *,
    worklist: Worklist | None = None,
    modalities: tuple[str, ...] | None = None,
    send: bool = True,
) -> SyncReport:
    """Pull a study, score its image series, queue the results, send them (unless ``send`` is False).

    The PACS being unavailable while sending is not an error here: the results stay in the outbox and
    ``report.flush.error`` says why. Pulling needs the PACS, so a failure there raises.

    Raises:
        PacsError: The study cannot be pulled (unknown study, PACS unavailable).
    """
    report = SyncReport(study_uid)
    folder = settings.download_dir / study_uid
    try:
        series = pull_study(client, study_uid, folder, modalities)
        report.outcomes = score_series(model, series, outbox, settings, worklist)
    finally:
        if not settings.keep_downloads:
            shutil.rmtree(folder, ignore_errors=True)
    if send:
        report.flush = outbox.flush(client, study_uid)
    return report

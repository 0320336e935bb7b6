"""Pull -> score -> push between the PACS and the one scoring pipeline.

Fetch a study, score each image series with :func:`medanomaly.pipeline.score_study`, queue the DICOM results (SR,
SEG, Secondary Capture, optional PDF) in the outbox and send them back into the same study. The watcher repeats
this for every new study.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medanomaly.errors import InputError, ModelError
from medanomaly.io import read_study
from medanomaly.pacs.capture import build_captures, build_pdf
from medanomaly.pacs.client import NON_IMAGE_MODALITIES, PacsClient, PacsError, PacsUnavailableError, SeriesInfo
from medanomaly.pacs.identity import MANUFACTURER, ResultContext, original_maps
from medanomaly.pacs.outbox import FlushReport, Outbox
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
#: Modalities whose series are volumes (scored as one study); other series are scored image by image.
VOLUME_MODALITIES = frozenset({"CT", "MR", "PT", "NM"})


@dataclass
class SeriesOutcome:
    """What happened to one scored unit (a volume series, or one image of a projection series)."""

    series_uid: str
    modality: str
    source: str
    result: StudyResult | None = None
    queued: list[str] = field(default_factory=list)  # kinds of the result instances queued: sr, seg, sc, pdf
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


def build_results(
    model: Model, result: StudyResult, sources: list[Dataset], *, pdf: bool = True
) -> tuple[list[tuple[str, Dataset]], list[str]]:
    """The DICOM result objects of one scored unit.

    Args:
        model: The model that scored (threshold, region threshold, identity).
        result: The pipeline's result.
        sources: Source image headers in the result's slice order.
        pdf: Also make the PDF report (Encapsulated PDF) when the report builder is installed.

    Returns:
        ([(kind, dataset)] with kinds ``sr``, ``seg``, ``sc``, ``pdf``; notes on what was left out and why).
    """
    context = ResultContext.from_result(result, sources, created=str(model.info.get("created", "")))
    results: list[tuple[str, Dataset]] = [("sr", build_sr(result, context))]
    notes = []
    threshold = model.postprocessing.region_threshold
    if result.anomaly_maps is None:
        notes.append("the method gives no anomaly map: no SEG and no heat-map")
    else:
        maps = original_maps(result)
        if threshold is None:
            notes.append("the model has no region threshold: no SEG (recalibrate the model to get one)")
        else:
            results.append(("seg", build_seg(result, context, threshold, maps)))
        results += [("sc", capture) for capture in build_captures(result, context, threshold, maps=maps)]
    document = report_pdf(result, context, threshold) if pdf else None
    if document is not None:
        results.append(("pdf", build_pdf(document, context)))
    elif pdf:
        notes.append("no PDF report: the report builder (reportlab) is not installed")
    return results, notes


def score_unit(
    model: Model, path: Path, info: SeriesInfo, outbox: Outbox, worklist: Worklist | None = None
) -> SeriesOutcome:
    """Score one file or series folder, queue its results (and register them in the worklist when given).

    A bad input becomes an outcome with an error; the other units go on.
    """
    outcome = SeriesOutcome(info.series_uid, info.modality, str(path))
    try:
        study = read_study(path, color=model.preprocessing.channels == 3)
        result = score_study(model, study)
        datasets, outcome.notes = build_results(model, result, source_headers(study, path))
    except (InputError, ModelError, ValueError) as error:
        logger.warning("not scored: %s", error)
        outcome.error = str(error)
        return outcome
    outcome.result = result
    for kind, dataset in datasets:
        outbox.add(dataset, kind)
        outcome.queued.append(kind)
    if worklist is not None:
        outcome.registered = worklist.register(model, info.series_uid, study, result, path)
    return outcome


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
        for info, series_folder in pull_study(client, study_uid, folder, modalities):
            for unit in scoring_units(series_folder, info.modality):
                report.outcomes.append(score_unit(model, unit, info, outbox, worklist))
    finally:
        if not settings.keep_downloads:
            shutil.rmtree(folder, ignore_errors=True)
    if send:
        report.flush = outbox.flush(client, study_uid)
    return report


def watch_once(
    client: PacsClient, model: Model, outbox: Outbox, settings: PacsSettings, *, worklist: Worklist | None = None
) -> list[SyncReport]:
    """One poll: send what is pending, then process every study of ``settings.modalities`` not seen before.

    Raises:
        PacsUnavailableError: The PACS cannot be reached (the pass ends; nothing is lost).
    """
    flushed = outbox.flush(client)
    if flushed.error:
        raise PacsUnavailableError(flushed.error)
    seen = outbox.studies()
    reports = []
    for info in client.search_studies(settings.modalities):
        if info.study_uid in seen:
            continue
        try:
            report = process_study(
                client, model, info.study_uid, outbox, settings, worklist=worklist, modalities=settings.modalities
            )
        except PacsUnavailableError:
            raise
        except PacsError as error:
            outbox.remember_study(info.study_uid, "failed", str(error))
            continue
        status = "done" if report.scored else "skipped"
        errors = "; ".join(o.error for o in report.outcomes if o.error)
        outbox.remember_study(info.study_uid, status, errors or f"{len(report.scored)} unit(s) scored")
        reports.append(report)
    return reports


def watch(
    client: PacsClient,
    model: Model,
    outbox: Outbox,
    settings: PacsSettings,
    *,
    worklist: Worklist | None = None,
    max_passes: int | None = None,
    on_pass: Any = None,
) -> int:
    """Poll every ``settings.interval`` seconds (a PACS outage is logged and retried next time).

    Args:
        client: The PACS.
        model: The model that scores.
        outbox: Queue of results and memory of the studies seen.
        settings: Modalities to watch and the poll interval.
        worklist: The web service's database, to register results in its worklist.
        max_passes: Stop after this many passes (None: until interrupted).
        on_pass: Called with each pass's reports (or the PacsUnavailableError) — the CLI prints them.

    Returns:
        Number of studies processed.
    """
    processed, passes = 0, 0
    while max_passes is None or passes < max_passes:
        try:
            reports: Any = watch_once(client, model, outbox, settings, worklist=worklist)
            processed += len(reports)
        except PacsUnavailableError as error:
            logger.warning("%s", error)
            reports = error
        if on_pass is not None:
            on_pass(reports)
        passes += 1
        if max_passes is None or passes < max_passes:
            time.sleep(settings.interval)
    return processed

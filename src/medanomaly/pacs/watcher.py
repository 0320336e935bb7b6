"""``pacs watch``: poll the PACS and score each study once it is complete, small studies first.

Each poll sends what is pending, lists the studies of the watched modalities from ``since`` on (default: the date
of the first start, remembered; the studies already there at that first start are left alone), counts each
study's source instances and scores it when the count has not changed for ``stable_seconds``. A study that gains
instances later is scored again (the new results supersede the old). A study that fails is tried again with
back-off; a study is marked failed before it is scored, so one that kills or hangs the watcher (out of memory)
also waits its back-off after a restart. Studies are taken smallest first, so a large one never holds back the
small ones behind it.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from medanomaly.pacs.client import NON_IMAGE_MODALITIES, PacsClient, PacsConfigError, PacsError, PacsUnavailableError
from medanomaly.pacs.identity import MANUFACTURER
from medanomaly.pacs.ledger import StudyLedger
from medanomaly.pacs.sync import SyncReport, process_study

if TYPE_CHECKING:
    from medanomaly.model import Model
    from medanomaly.pacs.outbox import Outbox
    from medanomaly.pacs.settings import PacsSettings
    from medanomaly.pacs.worklist import Worklist

logger = logging.getLogger(__name__)
UNFINISHED = "scoring started but did not finish (the watcher was stopped, killed or hung); tried again later"


def source_instances(client: PacsClient, study_uid: str, modalities: tuple[str, ...]) -> int:
    """How many source images of the watched modalities a study holds (results and reports not counted)."""
    return sum(
        s.n_instances
        for s in client.list_series(study_uid)
        if s.modality not in NON_IMAGE_MODALITIES
        and s.manufacturer != MANUFACTURER
        and (not modalities or s.modality in modalities)
    )


def stable_studies(client: PacsClient, ledger: StudyLedger, settings: PacsSettings) -> list[str]:
    """Studies to score now (stable, not done at this count, not waiting for a retry), fewest instances first."""
    since, first_start = ledger.since(settings.since)
    found = client.search_studies(settings.modalities, since=since)
    ready = []
    for info in found:
        state = ledger.get(info.study_uid)
        if first_start:
            ledger.remember(info.study_uid, "baseline", "in the PACS before the watcher's first start")
            continue
        if state is not None and (state.status == "baseline" or not ledger.is_due(state)):
            continue
        state = ledger.observe(info.study_uid, source_instances(client, info.study_uid, settings.modalities))
        if state.status in ("done", "skipped") or not ledger.is_stable(state, settings.stable_seconds):
            continue
        ready.append((state.instances, info.study_uid))
    return [uid for _, uid in sorted(ready)]


def watch_once(
    client: PacsClient, model: Model, outbox: Outbox, settings: PacsSettings, *, worklist: Worklist | None = None
) -> list[SyncReport]:
    """One poll: send what is pending, drop sent files past the retention, score every stable new study.

    Raises:
        PacsUnavailableError: The PACS cannot be reached, or the link is misconfigured (the pass ends; nothing
            is lost).
    """
    flushed = outbox.flush(client)
    if flushed.error:
        raise PacsUnavailableError(flushed.error)
    outbox.purge(settings.retention_days)
    ledger = StudyLedger(outbox)
    reports = []
    backoff = (max(settings.interval, 1.0), settings.study_backoff_max)
    for study_uid in stable_studies(client, ledger, settings):
        ledger.remember(study_uid, "failed", UNFINISHED, backoff)  # stays if the process is killed or hangs
        try:
            report = process_study(
                client, model, study_uid, outbox, settings, worklist=worklist, modalities=settings.modalities
            )
        except (PacsUnavailableError, PacsConfigError):
            ledger.remember(study_uid, "arriving", "not scored: the PACS link failed; tried again next pass")
            raise
        except Exception as error:  # one study's failure (even out of memory) must not stop the others
            if not isinstance(error, PacsError):
                logger.exception("study %s failed; it is tried again later", study_uid)
            ledger.explain(study_uid, f"{type(error).__name__}: {error}")
            continue
        errors = "; ".join(o.error for o in report.outcomes if o.error)
        if errors and not report.scored:
            ledger.explain(study_uid, errors)
        else:
            ledger.remember(study_uid, "done" if report.scored else "skipped", errors or f"{len(report.scored)} scored")
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
    """Poll every ``settings.interval`` seconds (a PACS outage or misconfiguration is logged and retried).

    Args:
        client: The PACS.
        model: The model that scores.
        outbox: Queue of results and memory of the studies seen.
        settings: Modalities to watch, poll interval, stability time.
        worklist: The web service's database, to register results in its worklist.
        max_passes: Stop after this many passes (None: until interrupted).
        on_pass: Called with each pass's reports (or the PacsError) — the CLI prints them.

    Returns:
        Number of studies processed.
    """
    processed, passes = 0, 0
    while max_passes is None or passes < max_passes:
        try:
            reports: Any = watch_once(client, model, outbox, settings, worklist=worklist)
            processed += len(reports)
        except (PacsUnavailableError, PacsConfigError) as error:
            logger.warning("%s", error)
            reports = error
        if on_pass is not None:
            on_pass(reports)
        passes += 1
        if max_passes is None or passes < max_passes:
            time.sleep(settings.interval)
    return processed

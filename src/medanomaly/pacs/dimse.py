"""DICOM networking (DIMSE), the way most modalities and PACS still talk: a C-STORE receiver and a C-STORE sender.

``pacs listen`` runs :class:`Receiver` (pynetdicom storage SCP): every instance a PACS or modality sends is written
to ``WORKDIR/inbox/<Study>/<Series>/<SOP>.dcm`` (0600 in 0700 folders) and its study is noted in the watcher's
ledger, so :func:`process_inbox` scores it exactly like a study found over DICOMweb: once stable (no new instance
for ``stable_seconds``), with the same pipeline, outbox and supersession. Results go back with C-STORE to
``dimse_peer`` (:class:`DimseSender`) or, without one, with STOW-RS to ``url``.
DIMSE: PS3.7; C-STORE: PS3.4 Annex B.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medanomaly.pacs.client import NON_IMAGE_MODALITIES, PacsConfigError, PacsError, PacsUnavailableError, SeriesInfo
from medanomaly.pacs.identity import MANUFACTURER
from medanomaly.pacs.ledger import StudyLedger
from medanomaly.pacs.outbox import Outbox, private_dir
from medanomaly.pacs.sync import SyncReport, score_series

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

    from medanomaly.model import Model
    from medanomaly.pacs.settings import PacsSettings
    from medanomaly.pacs.worklist import Worklist

logger = logging.getLogger(__name__)
_SUCCESS, _OUT_OF_RESOURCES = 0x0000, 0xA700
VERIFICATION = "1.2.840.10008.1.1"  # C-ECHO, so that echoscu / a PACS's "test connection" works


@dataclass(frozen=True)
class Peer:
    """A remote DICOM application entity: ``AET@HOST:PORT``."""

    ae_title: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Peer:
        """From ``AET@HOST:PORT``.

        Raises:
            PacsConfigError: The text is not of that form.
        """
        title, at, address = text.partition("@")
        host, colon, port = address.rpartition(":")
        if not (at and colon and title and host and port.isdigit() and len(title) <= 16):
            raise PacsConfigError(f"dimse_peer {text!r}: expected AET@HOST:PORT, e.g. ORTHANC@pacs.example.org:4242")
        return cls(title, host, int(port))


class DimseSender:
    """Sends result instances with C-STORE; the outbox flushes through it as through :class:`PacsClient`.

    Args:
        settings: ``dimse_peer`` (where to), ``ae_title`` (calling AE), ``timeout``.
    """

    def __init__(self, settings: PacsSettings) -> None:
        self.settings = settings
        self.peer = Peer.parse(settings.dimse_peer)

    def existing_instances(self, study_uid: str, series_uid: str) -> set[str]:
        """Nothing is asked first: storing an instance the peer already holds again leaves one copy."""
        return set()

    def store(self, datasets: list[Dataset]) -> None:
        """C-STORE every dataset in one association.

        Raises:
            PacsUnavailableError: No association (peer down), or the peer is out of resources.
            PacsConfigError: The peer refused the association (AE titles) or the SOP classes.
            PacsError: The peer refused an instance itself.
        """
        from pynetdicom import AE

        ae = AE(ae_title=self.settings.ae_title)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.settings.timeout
        for sop_class in sorted({str(ds.SOPClassUID) for ds in datasets}):
            ae.add_requested_context(sop_class)
        peer = f"{self.peer.ae_title}@{self.peer.host}:{self.peer.port}"
        assoc = ae.associate(self.peer.host, self.peer.port, ae_title=self.peer.ae_title)
        if assoc.is_rejected:
            raise PacsConfigError(f"DICOM peer {peer} rejected the association: check both AE titles")
        if not assoc.is_established:
            raise PacsUnavailableError(f"DICOM peer {peer}: no association (down, or wrong host/port)")
        try:
            for dataset in datasets:
                self._store_one(assoc, dataset, peer)
        finally:
            assoc.release()

    @staticmethod
    def _store_one(assoc: Any, dataset: Dataset, peer: str) -> None:
        try:
            status = assoc.send_c_store(dataset)
        except ValueError as error:  # no accepted presentation context for this SOP class
            raise PacsConfigError(f"DICOM peer {peer} does not accept {dataset.SOPClassUID}: {error}") from None
        code = int(status.Status) if "Status" in status else None
        if code is None:
            raise PacsUnavailableError(f"DICOM peer {peer}: no C-STORE answer for {dataset.SOPInstanceUID}")
        if code & 0xFF00 == _OUT_OF_RESOURCES:
            raise PacsUnavailableError(f"DICOM peer {peer} is out of resources (status 0x{code:04X})")
        if code != _SUCCESS and code & 0xF000 != 0xB000:  # 0xBxxx: warning, stored
            raise PacsError(f"DICOM peer {peer} refused {dataset.SOPInstanceUID} (C-STORE status 0x{code:04X})")


class Receiver:
    """A storage SCP writing what it receives into the inbox and noting each study in the ledger.

    Args:
        settings: ``ae_title``, ``listen_host``, ``listen_port``, ``workdir``.
        outbox: Whose index holds the ledger.
    """

    def __init__(self, settings: PacsSettings, outbox: Outbox) -> None:
        self.settings, self.ledger = settings, StudyLedger(outbox)
        self.inbox = private_dir(settings.inbox_dir)
        self._lock = threading.Lock()
        self._server: Any = None

    def handle_store(self, event: Any) -> int:
        """EVT_C_STORE: write the instance (0600), restart its study's stability clock; 0x0000 on success."""
        dataset = event.dataset
        dataset.file_meta = event.file_meta
        study, series = str(dataset.StudyInstanceUID), str(dataset.SeriesInstanceUID)
        with self._lock:
            folder = private_dir(self.inbox / study / series)
            path = folder / f"{dataset.SOPInstanceUID}.dcm"
            partial = path.with_suffix(".partial")
            dataset.save_as(partial, enforce_file_format=True)
            partial.chmod(0o600)
            partial.replace(path)
            self.ledger.observe(study, count_instances(self.inbox / study))
        logger.info("received %s of study %s from %s", dataset.SOPInstanceUID, study, event.assoc.requestor.ae_title)
        return _SUCCESS

    def start(self) -> None:
        """Listen on ``listen_host:listen_port`` in a background thread."""
        from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt

        ae = AE(ae_title=self.settings.ae_title)
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(str(context.abstract_syntax), ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(VERIFICATION)
        address = (self.settings.listen_host, self.settings.listen_port)
        self._server = ae.start_server(address, block=False, evt_handlers=[(evt.EVT_C_STORE, self.handle_store)])
        logger.info("C-STORE receiver %s listening on %s:%d", self.settings.ae_title, *address)

    def stop(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.shutdown()
            self._server = None


def count_instances(study_folder: Path) -> int:
    """Instances received for a study so far."""
    return sum(1 for _ in study_folder.glob("*/*.dcm"))


def _series_infos(study_folder: Path, modalities: tuple[str, ...]) -> list[tuple[SeriesInfo, Path]]:
    """The image series of a received study worth scoring (no reports, no results of ours)."""
    import pydicom

    found = []
    for folder in sorted(p for p in study_folder.iterdir() if p.is_dir()):
        first = next(iter(sorted(folder.glob("*.dcm"))), None)
        if first is None:
            continue
        header = pydicom.dcmread(first, stop_before_pixels=True)
        modality = str(header.get("Modality", ""))
        if modality in NON_IMAGE_MODALITIES or header.get("Manufacturer") == MANUFACTURER:
            continue
        if not modalities or modality in modalities:
            found.append((SeriesInfo(folder.name, modality, str(header.get("SeriesDescription", ""))), folder))
    return found


def process_inbox(
    model: Model, outbox: Outbox, settings: PacsSettings, sender: Any, *, worklist: Worklist | None = None
) -> list[SyncReport]:
    """Score every received study that is stable and not yet scored at its current size; send the results.

    The received files stay in the inbox (so a study that grows is scored again as a whole).
    """
    ledger, reports = StudyLedger(outbox), []
    folders = sorted(settings.inbox_dir.glob("*/"), key=count_instances) if settings.inbox_dir.is_dir() else []
    for folder in folders:  # smallest first: a large study does not hold back the small ones
        state = ledger.observe(folder.name, count_instances(folder))
        if state.status in ("done", "skipped") or not ledger.is_stable(state, settings.stable_seconds):
            continue
        if not ledger.is_due(state):
            continue
        try:
            series = _series_infos(folder, settings.modalities)
            report = SyncReport(folder.name, score_series(model, series, outbox, settings, worklist))
        except Exception as error:  # one study's failure must not stop the receiver
            logger.exception("received study %s failed; it is tried again later", folder.name)
            backoff = (max(settings.interval, 1.0), settings.study_backoff_max)
            ledger.remember(folder.name, "failed", f"{type(error).__name__}: {error}", backoff)
            continue
        report.flush = outbox.flush(sender, folder.name)
        ledger.remember(folder.name, "done" if report.scored else "skipped", f"{len(report.scored)} scored")
        reports.append(report)
    return reports

"""DICOMweb client side of the PACS link: QIDO-RS search, WADO-RS retrieve, STOW-RS store (``dicomweb-client``).

Every request is retried with bounded exponential back-off when the PACS cannot be reached or answers with a
transient status (408, 429, 5xx); after the last attempt :class:`PacsUnavailableError` tells the caller to keep
the results in the outbox. DICOMweb: PS3.18, https://dicom.nema.org/medical/dicom/current/output/html/part18.html
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import requests

from medanomaly.pacs.failures import (
    PacsConfigError,
    PacsError,
    PacsUnavailableError,
    TrustAdapter,
    failure_reason,
)
from medanomaly.pacs.settings import PacsSettings

if TYPE_CHECKING:
    from dicomweb_client.api import DICOMwebClient
    from pydicom.dataset import Dataset

logger = logging.getLogger(__name__)
T = TypeVar("T")
__all__ = [
    "NON_IMAGE_MODALITIES",
    "PacsClient",
    "PacsConfigError",
    "PacsError",
    "PacsUnavailableError",
    "SeriesInfo",
    "StudyInfo",
]
_PAGE = 200  # QIDO-RS results per request
_STUDY_FIELDS = ["00081030", "00080061", "00100020", "00080050"]
#: Series of these modalities hold no images to score (reports, segmentations, presentation states, documents).
NON_IMAGE_MODALITIES = frozenset({"SR", "SEG", "KO", "PR", "DOC", "RTSTRUCT", "REG", "RWV", "PLAN"})


@dataclass(frozen=True)
class StudyInfo:
    """One study as listed by QIDO-RS."""

    study_uid: str
    patient_id: str = ""
    study_date: str = ""
    modalities: tuple[str, ...] = ()
    description: str = ""
    accession_number: str = ""

    @classmethod
    def from_json(cls, item: dict[str, Any]) -> StudyInfo:
        """From a DICOM JSON (PS3.18 F.2) study record."""
        return cls(
            study_uid=_value(item, "0020000D"),
            patient_id=_value(item, "00100020"),
            study_date=_value(item, "00080020"),
            modalities=tuple(item.get("00080061", {}).get("Value", [])),
            description=_value(item, "00081030"),
            accession_number=_value(item, "00080050"),
        )


@dataclass(frozen=True)
class SeriesInfo:
    """One series of a study as listed by QIDO-RS."""

    series_uid: str
    modality: str = ""
    description: str = ""
    n_instances: int = 0
    manufacturer: str = ""

    @classmethod
    def from_json(cls, item: dict[str, Any]) -> SeriesInfo:
        """From a DICOM JSON series record."""
        count = int(_value(item, "00201209") or 0)
        return cls(
            _value(item, "0020000E"),
            _value(item, "00080060"),
            _value(item, "0008103E"),
            count,
            _value(item, "00080070"),
        )


def _value(item: dict[str, Any], tag: str) -> str:
    values = item.get(tag, {}).get("Value") or [""]
    first = values[0]
    return str(first.get("Alphabetic", "") if isinstance(first, dict) else first)


def _as_file(dataset: Dataset) -> Dataset:
    """The dataset as a conformant DICOM file (preamble + file meta), which ``dicomweb-client`` sends as is.

    A dataset built in memory has neither; the PACS would store it that way and WADO-RS would then return bytes
    that ``pydicom.dcmread`` refuses.
    """
    if getattr(dataset, "preamble", None) is not None and "TransferSyntaxUID" in getattr(dataset, "file_meta", {}):
        return dataset
    import pydicom

    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    buffer.seek(0)
    return pydicom.dcmread(buffer)


def _date_range(since: date | str | None, until: date | str | None) -> str | None:
    if since is None and until is None:
        return None

    def fmt(day: date | str | None) -> str:
        return "" if day is None else (day.strftime("%Y%m%d") if isinstance(day, date) else str(day).replace("-", ""))

    return f"{fmt(since)}-{fmt(until)}"


class PacsClient:
    """A DICOMweb peer (Orthanc with its DICOMweb plugin, or any PS3.18 server).

    Args:
        settings: URL, credentials, timeout and retry policy.
        sleep: Function used to wait between attempts (tests pass a recorder).
    """

    def __init__(self, settings: PacsSettings, *, sleep: Callable[[float], None] = time.sleep) -> None:
        if not settings.url:
            msg = "no PACS configured: set MEDANOMALY_PACS_URL (e.g. http://127.0.0.1:8042/dicom-web) or --url"
            raise PacsError(msg)
        self.settings = settings
        self.sleep = sleep
        self._client: DICOMwebClient | None = None

    @property
    def web(self) -> DICOMwebClient:
        """The underlying ``dicomweb_client`` client (built on first use, its own retrying switched off)."""
        if self._client is None:
            from dicomweb_client.api import DICOMwebClient
            from dicomweb_client.session_utils import create_session_from_user_pass

            session = None
            if self.settings.user:
                session = create_session_from_user_pass(self.settings.user, self.settings.password or "")
            if self.settings.ca_bundle:
                session = session or requests.Session()
                session.mount("https://", TrustAdapter(str(self.settings.ca_bundle)))
            client = DICOMwebClient(self.settings.url.rstrip("/"), session=session, timeout=self.settings.timeout)
            client.set_http_retry_params(retry=False)
            self._client = client
        return self._client

    def call(self, what: str, function: Callable[[], T]) -> T:
        """Run one request with the retry policy.

        Raises:
            PacsUnavailableError: Every attempt failed with a connection error or a transient status.
            PacsConfigError: Wrong credentials, permission, URL path, TLS certificate or host (not retried).
            PacsError: The PACS refused the request itself (400, 409, unknown study...).
        """
        delays = self.settings.backoff_delays()
        for attempt in range(1, self.settings.retries + 1):
            try:
                return function()
            except (requests.ConnectionError, requests.Timeout, requests.HTTPError) as error:
                reason = failure_reason(self.settings, what, error)
                if attempt > len(delays):
                    msg = (
                        f"PACS {self.settings.url}: {what} failed after {attempt} attempt(s) ({reason}); "
                        "results stay in the outbox: check the server, then run 'medanomaly pacs push --pending'"
                    )
                    raise PacsUnavailableError(msg) from None
                logger.warning(
                    "PACS %s: attempt %d/%d failed (%s); retrying in %.2f s",
                    what,
                    attempt,
                    self.settings.retries,
                    reason,
                    delays[attempt - 1],
                )
                self.sleep(delays[attempt - 1])
        raise AssertionError("unreachable")  # pragma: no cover

    # --- QIDO-RS ---------------------------------------------------------------------------------------------
    def ping(self) -> None:
        """One small QIDO-RS request; raises PacsError / PacsUnavailableError when the PACS does not answer."""
        self.call("search studies", lambda: self.web.search_for_studies(limit=1))

    def search_studies(
        self,
        modalities: Iterable[str] | None = None,
        since: date | str | None = None,
        until: date | str | None = None,
        limit: int | None = None,
    ) -> list[StudyInfo]:
        """List studies, optionally holding any of ``modalities`` and within a study-date range (inclusive).

        The modality filter is sent to the server (one QIDO-RS query per modality on ModalitiesInStudy) when each
        answer fits in one page: Orthanc ignores ``offset`` with that filter, so larger answers are paged
        without it and filtered here.
        """
        filters: dict[str, str] = {}
        if (dates := _date_range(since, until)) is not None:
            filters["StudyDate"] = dates
        wanted = sorted({m.upper() for m in modalities or ()})
        found = self._studies_by_modality(filters, wanted) if wanted else None
        if found is None:
            found = self._paged(
                "search studies",
                "0020000D",
                lambda offset: self.web.search_for_studies(
                    search_filters=filters, fields=_STUDY_FIELDS, limit=_PAGE, offset=offset
                ),
            )
        studies = [s for s in map(StudyInfo.from_json, found) if not wanted or set(wanted) & set(s.modalities)]
        return studies if limit is None else studies[:limit]

    def _studies_by_modality(self, filters: dict[str, str], modalities: list[str]) -> list[dict] | None:
        """Server-side filtered study records, or None when an answer fills a page (then paging is needed)."""
        found: dict[str, dict] = {}
        for modality in modalities:
            page = self.call(
                "search studies",
                lambda modality=modality: self.web.search_for_studies(
                    search_filters={**filters, "ModalitiesInStudy": modality}, fields=_STUDY_FIELDS, limit=_PAGE
                ),
            )
            if len(page) >= _PAGE:
                return None
            found.update({_value(item, "0020000D"): item for item in page})
        return list(found.values())

    def _paged(self, what: str, key: str, search: Callable[[int], list[dict]]) -> list[dict]:
        """Every QIDO-RS record, page by page; stops on a short page or one that brings no new ``key`` value."""
        found: dict[str, dict] = {}
        while True:
            offset = len(found)
            page = self.call(what, lambda offset=offset: search(offset))
            new = {_value(item, key): item for item in page if _value(item, key) not in found}
            found.update(new)
            if len(page) < _PAGE or not new:
                return list(found.values())

    def list_series(self, study_uid: str) -> list[SeriesInfo]:
        """The series of one study (empty when the PACS does not know it)."""
        fields = ["0008103E", "00201209", "00080070"]
        found = self._paged(
            f"list series of {study_uid}",
            "0020000E",
            lambda offset: self.web.search_for_series(study_uid, fields=fields, limit=_PAGE, offset=offset),
        )
        return [SeriesInfo.from_json(item) for item in found]

    def existing_instances(self, study_uid: str, series_uid: str) -> set[str]:
        """SOP Instance UIDs the PACS already holds in one series."""
        found = self._paged(
            f"list instances of {series_uid}",
            "00080018",
            lambda offset: self.web.search_for_instances(study_uid, series_uid, limit=_PAGE, offset=offset),
        )
        return {_value(item, "00080018") for item in found}

    # --- WADO-RS / STOW-RS -----------------------------------------------------------------------------------
    def retrieve_series(self, study_uid: str, series_uid: str, folder: Path) -> list[Path]:
        """Download one series into ``folder`` as ``<SOPInstanceUID>.dcm`` files; returns the paths.

        Instances are streamed (``iter_series``) and written one by one: a long series is never held in memory.
        """
        folder.mkdir(parents=True, exist_ok=True)

        def download() -> list[Path]:
            paths = []
            for dataset in self.web.iter_series(study_uid, series_uid):
                path = folder / f"{dataset.SOPInstanceUID}.dcm"
                dataset.save_as(path, enforce_file_format=True)
                paths.append(path)
            return paths

        return self.call(f"retrieve series {series_uid}", download)

    def store(self, datasets: list[Dataset]) -> None:
        """Store instances of one study (STOW-RS).

        Raises:
            PacsError: The PACS rejected some instances (named in the message).
            PacsUnavailableError: As :meth:`call`.
        """
        if not datasets:
            return
        datasets = [_as_file(dataset) for dataset in datasets]
        study_uid = str(datasets[0].StudyInstanceUID)
        answer = self.call(
            f"store {len(datasets)} instance(s)",
            lambda: self.web.store_instances(datasets, study_instance_uid=study_uid),
        )
        failed = [str(item.get("ReferencedSOPInstanceUID", "?")) for item in answer.get("FailedSOPSequence", [])]
        if failed:
            msg = f"PACS {self.settings.url} rejected {len(failed)} instance(s): {', '.join(failed[:3])}"
            raise PacsError(msg)

    # --- Orthanc REST ----------------------------------------------------------------------------------------
    def delete_series(self, study_uid: str, series_uid: str) -> None:
        """Delete one series through the Orthanc REST API (``settings.rest_url``); DICOMweb has no deletion.

        Raises:
            PacsError: The PACS refused, or it does not know the series.
        """
        auth = (self.settings.user, self.settings.password or "") if self.settings.user else None
        options: dict[str, Any] = {"auth": auth, "timeout": self.settings.timeout, "verify": self._verify}
        root = self.settings.rest_url

        def lookup() -> list[dict]:
            answer = requests.post(f"{root}/tools/lookup", data=series_uid, **options)
            answer.raise_for_status()
            return answer.json()

        found = [item["ID"] for item in self.call(f"look up series {series_uid}", lookup) if item["Type"] == "Series"]
        if not found:
            raise PacsError(f"PACS {root}: series {series_uid} of study {study_uid} not found; nothing deleted")
        for orthanc_id in found:
            self.call(
                f"delete series {series_uid}",
                lambda orthanc_id=orthanc_id: requests.delete(
                    f"{root}/series/{orthanc_id}", **options
                ).raise_for_status(),
            )

    @property
    def _verify(self) -> bool | str:
        return str(self.settings.ca_bundle) if self.settings.ca_bundle else True

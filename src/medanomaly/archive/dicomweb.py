"""SOURCE ``dicomweb:QUERY``: the studies a DICOMweb query finds in the configured PACS, retrieved into OUT_DIR.

QUERY is ``key=value`` pairs joined by ``&`` (all optional; an empty query takes every study):

- ``modality=CR,DX``: studies holding any of these modalities, and only their series of these modalities;
- ``since=2026-01-01``, ``until=2026-06-30``: study dates (inclusive);
- ``limit=500``: at most this many studies;
- ``study=UID1,UID2``: these studies (no search).

The PACS is the one ``medanomaly pacs`` uses (``MEDANOMALY_PACS_*`` environment variables or a settings file),
reached through :class:`medanomaly.pacs.client.PacsClient` (QIDO-RS search, WADO-RS retrieval with retries).
Each study's image series are retrieved once into ``OUT_DIR/dicomweb/<StudyUID>/<SeriesUID>/`` (a rerun reuses a
complete download), then scored as files: a volume series as one study, other series image by image, as
``medanomaly pacs`` scores them. A study the PACS cannot give is a failed row named ``dicomweb:<StudyUID>``; a PACS
that does not answer stops the run (rerun later: it resumes).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl

from medanomaly.archive.source import Source
from medanomaly.errors import InputError

logger = logging.getLogger(__name__)
PREFIX = "dicomweb:"
_DONE = ".retrieved.json"  # written last in a study's folder: [[series UID, modality], ...]
_KEYS = {"modality", "since", "until", "limit", "study"}


@dataclass(frozen=True)
class Query:
    """A parsed ``dicomweb:`` query."""

    modalities: tuple[str, ...] = ()
    since: str | None = None
    until: str | None = None
    limit: int | None = None
    studies: tuple[str, ...] = ()


def is_dicomweb(source: str) -> bool:
    """Whether SOURCE is a DICOMweb query."""
    return str(source).startswith(PREFIX)


def parse_query(source: str) -> Query:
    """The query of ``dicomweb:QUERY``.

    Raises:
        InputError: An unknown key or a limit that is not a positive whole number.
    """
    pairs = dict(parse_qsl(source[len(PREFIX) :], keep_blank_values=True))
    unknown = set(pairs) - _KEYS
    if unknown:
        keys = ", ".join(sorted(unknown))
        raise InputError(source, f"unknown query key(s) {keys}", f"use {', '.join(sorted(_KEYS))}")
    limit = pairs.get("limit")
    if limit is not None and not (limit.isdigit() and int(limit) > 0):
        raise InputError(source, f"limit={limit} is not a positive whole number", "e.g. dicomweb:modality=DX&limit=100")
    return Query(
        modalities=_listed(pairs.get("modality", "").upper()),
        since=pairs.get("since") or None,
        until=pairs.get("until") or None,
        limit=int(limit) if limit else None,
        studies=_listed(pairs.get("study", "")),
    )


def open_dicomweb(source: str, folder: Path, settings_file: str | None = None) -> Source:
    """Search the PACS, retrieve every found study not yet retrieved into ``folder``, and list what to score.

    Raises:
        PacsUnavailableError: The PACS did not answer (after its retries); nothing is lost, rerun later.
        PacsConfigError: Wrong URL, credentials or certificate.
    """
    from medanomaly.pacs.client import PacsClient
    from medanomaly.pacs.settings import load_settings

    query = parse_query(source)
    client = PacsClient(load_settings(settings_file))
    uids = list(query.studies) or [
        study.study_uid for study in client.search_studies(query.modalities, query.since, query.until, query.limit)
    ]
    found = Source([])
    for uid in uids:
        try:
            series = _retrieved(client, uid, folder / uid, query.modalities)
        except InputError as error:
            found.unreadable[PREFIX + uid] = str(error)
            continue
        for series_uid, modality in series:
            found.paths += [str(p) for p in _units(folder / uid / series_uid, modality)]
    logger.info("%d studies from the PACS: %d to score, %d failed", len(uids), len(found.paths), len(found.unreadable))
    return found


def _retrieved(client: object, uid: str, folder: Path, modalities: tuple[str, ...]) -> list[tuple[str, str]]:
    """The study's (series UID, modality) pairs, retrieving it unless a complete download is in ``folder``.

    Raises:
        InputError: The PACS does not know the study or refused to give it.
    """
    from medanomaly.pacs.client import PacsError, PacsUnavailableError
    from medanomaly.pacs.sync import pull_study

    done = folder / _DONE
    if done.is_file():
        return [(str(s), str(m)) for s, m in json.loads(done.read_text())]
    try:
        pulled = pull_study(client, uid, folder, modalities or None)  # type: ignore[arg-type]
    except PacsUnavailableError:
        raise
    except PacsError as error:
        raise InputError(PREFIX + uid, f"the PACS did not give the study: {error}", "check the Study UID") from None
    series = [(info.series_uid, info.modality) for info, _ in pulled]
    folder.mkdir(parents=True, exist_ok=True)
    done.write_text(json.dumps(series))
    return series


def _units(folder: Path, modality: str) -> list[Path]:
    """What to score in a retrieved series: as ``medanomaly pacs`` does (a volume whole, else each image)."""
    from medanomaly.pacs.sync import scoring_units

    return scoring_units(folder, modality)


def _listed(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())

"""Results waiting for the PACS, and the watcher's memory of the studies it has seen.

A folder of DICOM files plus a small SQLite index, so nothing is lost while the PACS is down.

Layout::

    OUTBOX/index.sqlite                       items (one row per result instance) and studies (watcher state)
    OUTBOX/items/<StudyUID>/<SOPInstanceUID>.dcm

An item is ``pending`` until the PACS holds it (``sent``); an instance the PACS refuses for good is ``rejected``
(``push --study`` queues it again). Before storing, the PACS is asked which instances it already holds (QIDO-RS),
and result UIDs are deterministic, so sending twice leaves one copy.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path
from typing import TYPE_CHECKING

from medanomaly.pacs.client import PacsClient, PacsError, PacsUnavailableError

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

logger = logging.getLogger(__name__)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    sop_uid TEXT PRIMARY KEY, study_uid TEXT NOT NULL, series_uid TEXT NOT NULL, kind TEXT NOT NULL,
    path TEXT NOT NULL, status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT,
    created TEXT NOT NULL, updated TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS studies (
    study_uid TEXT PRIMARY KEY, status TEXT NOT NULL, detail TEXT, updated TEXT NOT NULL);
"""
_COLUMNS = "sop_uid, study_uid, series_uid, kind, path, status, attempts, last_error, updated"


@dataclass(frozen=True)
class OutboxItem:
    """One result instance in the outbox."""

    sop_uid: str
    study_uid: str
    series_uid: str
    kind: str
    path: Path
    status: str
    attempts: int
    last_error: str | None
    updated: str


@dataclass
class FlushReport:
    """What one attempt to empty the outbox did.

    Attributes:
        sent: Instances stored now.
        already_there: Instances the PACS already held (marked sent without storing again).
        rejected: Instances the PACS refused for good.
        pending: Instances still waiting after this attempt.
        error: Why sending stopped early (PACS unavailable), else None.
    """

    sent: int = 0
    already_there: int = 0
    rejected: int = 0
    pending: int = 0
    error: str | None = None

    @property
    def ok(self) -> bool:
        """True when nothing is left pending or rejected."""
        return self.error is None and self.pending == 0 and self.rejected == 0


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


class Outbox:
    """The on-disk queue of result instances.

    Args:
        root: Outbox folder (created if missing).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        (self.root / "items").mkdir(parents=True, exist_ok=True)
        with self._db() as db:
            db.executescript(_SCHEMA)

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        with closing(sqlite3.connect(self.root / "index.sqlite", timeout=30)) as connection, connection:
            yield connection

    # --- queue ----------------------------------------------------------------------------------------------
    def add(self, dataset: Dataset, kind: str) -> OutboxItem:
        """Write one result instance and queue it (a re-added instance replaces the file and is pending again)."""
        study_uid, sop_uid = str(dataset.StudyInstanceUID), str(dataset.SOPInstanceUID)
        folder = self.root / "items" / study_uid
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{sop_uid}.dcm"
        partial = path.with_suffix(".partial")
        dataset.save_as(partial, enforce_file_format=True)
        os.replace(partial, path)
        now = _now()
        with self._db() as db:
            db.execute(
                "INSERT INTO items (sop_uid, study_uid, series_uid, kind, path, status, attempts, created, updated) "
                "VALUES (?, ?, ?, ?, ?, 'pending', 0, ?, ?) ON CONFLICT(sop_uid) DO UPDATE SET "
                "status = 'pending', last_error = NULL, path = excluded.path, updated = excluded.updated",
                (sop_uid, study_uid, str(dataset.SeriesInstanceUID), kind, str(path.relative_to(self.root)), now, now),
            )
        return self.items(sop_uid=sop_uid)[0]

    def items(
        self, study_uid: str | None = None, status: str | None = None, sop_uid: str | None = None
    ) -> list[OutboxItem]:
        """Items, optionally of one study / status / instance, ordered by study, series and instance."""
        clauses, values = [], []
        for column, value in (("study_uid", study_uid), ("status", status), ("sop_uid", sop_uid)):
            if value is not None:
                clauses.append(f"{column} = ?")
                values.append(value)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._db() as db:
            rows = db.execute(f"SELECT {_COLUMNS} FROM items{where} ORDER BY study_uid, series_uid, path", values)
            return [OutboxItem(*row[:4], self.root / row[4], *row[5:]) for row in rows.fetchall()]

    def counts(self) -> dict[str, int]:
        """Number of items per status (``pending``, ``sent``, ``rejected``)."""
        with self._db() as db:
            rows = db.execute("SELECT status, COUNT(*) FROM items GROUP BY status").fetchall()
        return {"pending": 0, "sent": 0, "rejected": 0} | dict(rows)

    def requeue(self, study_uid: str) -> int:
        """Queue every result of a study again (``push --study``); returns how many."""
        with self._db() as db:
            cursor = db.execute(
                "UPDATE items SET status = 'pending', updated = ? WHERE study_uid = ?", (_now(), study_uid)
            )
            return cursor.rowcount

    def _mark(self, items: list[OutboxItem], status: str, error: str | None = None) -> None:
        tried = 0 if status == "pending" and error is None else 1
        with self._db() as db:
            db.executemany(
                "UPDATE items SET status = ?, last_error = ?, attempts = attempts + ?, updated = ? WHERE sop_uid = ?",
                [(status, error, tried, _now(), item.sop_uid) for item in items],
            )

    # --- sending --------------------------------------------------------------------------------------------
    def flush(self, client: PacsClient, study_uid: str | None = None) -> FlushReport:
        """Send the pending items (of one study, or all), one STOW-RS request per result series.

        Stops at the first series the PACS cannot take because it is unavailable (after the client's retries):
        that series and the rest stay pending. A series it refuses is marked ``rejected`` and the rest go on.
        """
        report = FlushReport()
        pending = self.items(study_uid=study_uid, status="pending")
        for (study, series), grouped in groupby(pending, key=lambda item: (item.study_uid, item.series_uid)):
            group = list(grouped)
            try:
                self._send_series(client, study, series, group, report)
            except PacsUnavailableError as error:
                self._mark(group, "pending", str(error))
                report.error = str(error)
                break
            except PacsError as error:
                logger.error("PACS refused series %s: %s", series, error)
                self._mark(group, "rejected", str(error))
                report.rejected += len(group)
        report.pending = len(self.items(study_uid=study_uid, status="pending"))
        return report

    def _send_series(
        self, client: PacsClient, study: str, series: str, group: list[OutboxItem], report: FlushReport
    ) -> None:
        import pydicom

        present = client.existing_instances(study, series)
        there = [item for item in group if item.sop_uid in present]
        todo = [item for item in group if item.sop_uid not in present]
        if there:
            logger.info("PACS already holds %d instance(s) of series %s: not sent again", len(there), series)
            self._mark(there, "sent")
            report.already_there += len(there)
        if todo:
            client.store([pydicom.dcmread(item.path) for item in todo])
            self._mark(todo, "sent")
            report.sent += len(todo)

    # --- watcher state --------------------------------------------------------------------------------------
    def remember_study(self, study_uid: str, status: str, detail: str = "") -> None:
        """Record what happened to a study (``done``, ``failed``, ``skipped``)."""
        with self._db() as db:
            db.execute(
                "INSERT INTO studies VALUES (?, ?, ?, ?) ON CONFLICT(study_uid) DO UPDATE SET "
                "status = excluded.status, detail = excluded.detail, updated = excluded.updated",
                (study_uid, status, detail, _now()),
            )

    def studies(self) -> dict[str, tuple[str, str]]:
        """Studies seen so far: ``{study_uid: (status, detail)}``."""
        with self._db() as db:
            return {
                uid: (status, detail or "")
                for uid, status, detail in db.execute("SELECT study_uid, status, detail FROM studies").fetchall()
            }

"""Results waiting for the PACS, and the watcher's memory of the studies it has seen.

A folder of DICOM files plus a small SQLite index, so nothing is lost while the PACS is down.

Layout::

    OUTBOX/index.sqlite                       items (one row per result instance) and studies (watcher state)
    OUTBOX/items/<StudyUID>/<SOPInstanceUID>.dcm

An item is ``pending`` until the PACS holds it (``sent``); an instance the PACS refuses for good is ``rejected``
(``push --study`` queues it again). A PACS that is down, or a wrong password, URL, certificate or host, leaves items
``pending`` (sent once the setting is fixed). Before storing, the PACS is asked which instances it already holds
(QIDO-RS), and result UIDs are deterministic, so sending twice leaves one copy. Results of a unit re-scored by a
model of the same name become ``superseded`` (a Key Object Selection rejects them in the PACS) and ``deleted`` once
removed through the PACS's API. Sent files are deleted after the retention (the index keeps their UIDs); the folder
is private to its owner (0700, files 0600).
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
from typing import TYPE_CHECKING, Any

from medanomaly.pacs.client import PacsClient, PacsConfigError, PacsError, PacsUnavailableError

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
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
#: Columns added after the first release (older index files get them on open).
_ADDED = {
    "items": {"unit_key": "TEXT NOT NULL DEFAULT ''", "model_name": "TEXT NOT NULL DEFAULT ''", "sop_class": "TEXT"},
    "studies": {
        "instances": "INTEGER NOT NULL DEFAULT -1",
        "changed": "TEXT",
        "attempts": "INTEGER NOT NULL DEFAULT 0",
        "next_try": "TEXT",
    },
}
_COLUMNS = "sop_uid, study_uid, series_uid, kind, path, status, attempts, last_error, updated, unit_key, model_name"
STATUSES = ("pending", "sent", "rejected", "superseded", "deleted")


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
    unit_key: str = ""
    model_name: str = ""


@dataclass
class FlushReport:
    """What one attempt to empty the outbox did.

    Attributes:
        sent: Instances stored now.
        already_there: Instances the PACS already held (marked sent without storing again).
        rejected: Instances the PACS refused for good.
        pending: Instances still waiting after this attempt.
        error: Why sending stopped early (PACS unavailable or misconfigured), else None.
        deleted: Superseded result instances deleted from the PACS.
    """

    sent: int = 0
    already_there: int = 0
    rejected: int = 0
    pending: int = 0
    error: str | None = None
    deleted: int = 0

    @property
    def ok(self) -> bool:
        """True when nothing is left pending or rejected."""
        return self.error is None and self.pending == 0 and self.rejected == 0


def private_dir(folder: Path) -> Path:
    """Create ``folder`` (and parents) and make it private to its owner (0700)."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    return folder


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


class Outbox:
    """The on-disk queue of result instances.

    Args:
        root: Outbox folder (created if missing).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        private_dir(self.root / "items")
        private_dir(self.root)
        with self._db() as db:
            db.executescript(_SCHEMA)
            for table, columns in _ADDED.items():
                present = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
                for name, declaration in columns.items():
                    if name not in present:
                        db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {declaration}")
        (self.root / "index.sqlite").chmod(0o600)

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        with closing(sqlite3.connect(self.root / "index.sqlite", timeout=30)) as connection, connection:
            yield connection

    # --- queue ----------------------------------------------------------------------------------------------
    def add(self, dataset: Dataset, kind: str, unit_key: str = "", model_name: str = "") -> OutboxItem:
        """Write one result instance (0600) and queue it (a re-added instance replaces the file, pending again).

        Args:
            dataset: The result instance.
            kind: ``sr``, ``seg``, ``sc``, ``pdf`` or ``ko``.
            unit_key: What was scored (see ``ResultContext.unit_key``); with ``model_name``, what a later result
                of the same unit supersedes.
            model_name: Name of the model that made it.
        """
        study_uid, sop_uid = str(dataset.StudyInstanceUID), str(dataset.SOPInstanceUID)
        folder = private_dir(self.root / "items" / study_uid)
        path = folder / f"{sop_uid}.dcm"
        partial = path.with_suffix(".partial")
        dataset.save_as(partial, enforce_file_format=True)
        partial.chmod(0o600)
        os.replace(partial, path)
        now = _now()
        row = (sop_uid, study_uid, str(dataset.SeriesInstanceUID), kind, str(path.relative_to(self.root)), now, now)
        with self._db() as db:
            db.execute(
                "INSERT INTO items (sop_uid, study_uid, series_uid, kind, path, status, attempts, created, updated, "
                "unit_key, model_name, sop_class) VALUES (?, ?, ?, ?, ?, 'pending', 0, ?, ?, ?, ?, ?) "
                "ON CONFLICT(sop_uid) DO UPDATE SET status = 'pending', last_error = NULL, path = excluded.path, "
                "updated = excluded.updated",
                (*row, unit_key, model_name, str(dataset.SOPClassUID)),
            )
        return self.items(sop_uid=sop_uid)[0]

    def supersede(self, unit_key: str, model_name: str, current: set[str]) -> list[tuple[OutboxItem, str]]:
        """Retire the older results of a unit made by a model of this name (series not in ``current``).

        Never-sent ones are dropped from the outbox; sent ones become ``superseded``.

        Returns:
            [(sent item, its SOP Class UID)] that the PACS holds and a rejection note must name.
        """
        if not unit_key:
            return []
        with self._db() as db:
            rows = db.execute(
                f"SELECT {_COLUMNS}, sop_class FROM items WHERE unit_key = ? AND model_name = ? AND kind != 'ko' "
                "AND status IN ('pending', 'sent', 'rejected')",
                (unit_key, model_name),
            ).fetchall()
        old = [(self._item(row), row[-1]) for row in rows if row[2] not in current]
        unsent = [item for item, _ in old if item.status != "sent"]
        for item in unsent:
            item.path.unlink(missing_ok=True)
        with self._db() as db:
            db.executemany("DELETE FROM items WHERE sop_uid = ?", [(item.sop_uid,) for item in unsent])
        sent = [(item, sop_class) for item, sop_class in old if item.status == "sent"]
        self._mark([item for item, _ in sent], "superseded", "a newer result of the same images replaces it")
        return sent

    def purge(self, retention_days: float) -> int:
        """Delete the files of results sent (or retired) more than ``retention_days`` ago; returns how many."""
        cutoff = (dt.datetime.now(dt.UTC) - dt.timedelta(days=retention_days)).isoformat(timespec="seconds")
        old = [
            item
            for status in ("sent", "superseded", "deleted")
            for item in self.items(status=status)
            if item.updated <= cutoff and item.path.is_file()
        ]
        for item in old:
            item.path.unlink()
        return len(old)

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
            return [self._item(row) for row in rows.fetchall()]

    def _item(self, row: tuple) -> OutboxItem:
        return OutboxItem(*row[:4], self.root / row[4], *row[5:11])

    def counts(self) -> dict[str, int]:
        """Number of items per status (``pending``, ``sent``, ``rejected``, ``superseded``, ``deleted``)."""
        with self._db() as db:
            rows = db.execute("SELECT status, COUNT(*) FROM items GROUP BY status").fetchall()
        return dict.fromkeys(STATUSES, 0) | dict(rows)

    def requeue(self, study_uid: str) -> int:
        """Queue the current results of a study again (``push --study``; files still on disk); returns how many."""
        again = [
            item
            for status in ("sent", "rejected", "pending")
            for item in self.items(study_uid=study_uid, status=status)
            if item.path.is_file()
        ]
        self._mark(again, "pending")
        return len(again)

    def _mark(self, items: list[OutboxItem], status: str, error: str | None = None) -> None:
        tried = int(status in ("sent", "rejected") or (status == "pending" and error is not None))
        with self._db() as db:
            db.executemany(
                "UPDATE items SET status = ?, last_error = ?, attempts = attempts + ?, updated = ? WHERE sop_uid = ?",
                [(status, error, tried, _now(), item.sop_uid) for item in items],
            )

    # --- sending --------------------------------------------------------------------------------------------
    def flush(self, client: PacsClient, study_uid: str | None = None) -> FlushReport:
        """Send the pending items (of one study, or all), one STOW-RS request per result series.

        Stops at the first series the PACS cannot take because it is unavailable (after the client's retries) or
        the link is misconfigured (password, URL, certificate, host): that series and the rest stay pending. A
        series the PACS refuses itself is marked ``rejected`` and the rest go on. Then, when the client can delete
        (``delete_superseded``), superseded results are removed from the PACS.
        """
        report = FlushReport()
        pending = self.items(study_uid=study_uid, status="pending")
        for (study, series), grouped in groupby(pending, key=lambda item: (item.study_uid, item.series_uid)):
            group = list(grouped)
            try:
                self._send_series(client, study, series, group, report)
            except (PacsUnavailableError, PacsConfigError) as error:
                self._mark(group, "pending", str(error))
                report.error = str(error)
                break
            except PacsError as error:
                logger.error("PACS refused series %s: %s", series, error)
                self._mark(group, "rejected", str(error))
                report.rejected += len(group)
        if report.error is None:
            report.deleted = self._delete_superseded(client, study_uid)
        report.pending = len(self.items(study_uid=study_uid, status="pending"))
        return report

    def _delete_superseded(self, client: Any, study_uid: str | None) -> int:
        """Delete superseded series through the PACS API when the client is set up for it; returns instances."""
        settings = getattr(client, "settings", None)
        if not getattr(settings, "delete_superseded", False) or not hasattr(client, "delete_series"):
            return 0
        done = 0
        old = self.items(study_uid=study_uid, status="superseded")
        for (study, series), grouped in groupby(old, key=lambda item: (item.study_uid, item.series_uid)):
            group = list(grouped)
            try:
                client.delete_series(study, series)
            except PacsError as error:
                logger.warning("superseded series %s not deleted: %s", series, error)
                continue
            self._mark(group, "deleted", None)
            done += len(group)
        return done

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

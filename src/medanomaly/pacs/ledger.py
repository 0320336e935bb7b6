"""The watcher's memory of studies: what was done, what is still arriving, what failed and when to try again.

Kept in the outbox's ``index.sqlite`` (table ``studies`` plus ``meta``). A study is scored once it is *stable*: its
count of source instances has not changed for ``stable_seconds`` (Orthanc's own StableAge idea, measured over
DICOMweb). A study that gains instances after it was scored is scored again (its new results supersede the old).
A failed study is tried again after ``interval * 2**(failures - 1)`` seconds, at most ``study_backoff_max``. A
study is recorded as failed *before* it is scored, so one that kills or hangs the watcher also waits its back-off
after a restart instead of being taken again first.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from medanomaly.pacs.outbox import Outbox

#: Statuses of a study: ``arriving`` (seen, not stable yet), ``done``, ``skipped`` (nothing to score), ``failed``
#: (tried again later), ``baseline`` (already in the PACS when the watcher first started: left alone).
FINAL = ("done", "skipped")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _iso(moment: dt.datetime) -> str:
    return moment.isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class StudyState:
    """One study as the watcher remembers it."""

    study_uid: str
    status: str
    detail: str
    instances: int
    changed: dt.datetime | None
    attempts: int
    next_try: dt.datetime | None


class StudyLedger:
    """Studies seen by the watcher, in the outbox's index.

    Args:
        outbox: The outbox whose index holds the ledger.
    """

    def __init__(self, outbox: Outbox) -> None:
        self._db = outbox._db

    def get(self, study_uid: str) -> StudyState | None:
        """The state of one study, or None when never seen."""
        return self.all(study_uid).get(study_uid)

    def all(self, study_uid: str | None = None) -> dict[str, StudyState]:
        """Every study seen (or only ``study_uid``)."""
        where, values = (" WHERE study_uid = ?", (study_uid,)) if study_uid else ("", ())
        with self._db() as db:
            rows = db.execute(
                f"SELECT study_uid, status, detail, instances, changed, attempts, next_try FROM studies{where}", values
            ).fetchall()
        parse = lambda text: dt.datetime.fromisoformat(text) if text else None  # noqa: E731
        return {
            row[0]: StudyState(row[0], row[1], row[2] or "", row[3], parse(row[4]), row[5], parse(row[6]))
            for row in rows
        }

    def observe(self, study_uid: str, instances: int) -> StudyState:
        """Record a study's current count of source instances; a new count restarts its stability clock."""
        state = self.get(study_uid)
        if state is None or state.instances != instances:
            status = "arriving" if state is None or state.status in FINAL else state.status
            with self._db() as db:
                db.execute(
                    "INSERT INTO studies (study_uid, status, detail, updated, instances, changed) "
                    "VALUES (?, ?, '', ?, ?, ?) ON CONFLICT(study_uid) DO UPDATE SET status = excluded.status, "
                    "instances = excluded.instances, changed = excluded.changed, updated = excluded.updated",
                    (study_uid, status, _iso(_now()), instances, _iso(_now())),
                )
            state = self.get(study_uid)
        assert state is not None
        return state

    def remember(
        self, study_uid: str, status: str, detail: str = "", backoff: tuple[float, float] = (30, 3600)
    ) -> None:
        """Record what happened (``done``, ``skipped``, ``failed``, ``baseline``); a failure schedules a retry.

        Args:
            study_uid: The study.
            status: Its new status.
            detail: What to show in ``pacs status``.
            backoff: (first wait, longest wait) in seconds before a failed study is tried again.
        """
        state = self.get(study_uid)
        attempts = (state.attempts if state else 0) + 1 if status == "failed" else 0
        wait = min(backoff[0] * 2 ** max(attempts - 1, 0), backoff[1]) if status == "failed" else 0
        next_try = _iso(_now() + dt.timedelta(seconds=wait)) if status == "failed" else None
        with self._db() as db:
            db.execute(
                "INSERT INTO studies (study_uid, status, detail, updated, attempts, next_try) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(study_uid) DO UPDATE SET status = excluded.status, "
                "detail = excluded.detail, updated = excluded.updated, attempts = excluded.attempts, "
                "next_try = excluded.next_try",
                (study_uid, status, detail, _iso(_now()), attempts, next_try),
            )

    def explain(self, study_uid: str, detail: str) -> None:
        """Replace what ``pacs status`` shows for a study, keeping its status, attempts and next try."""
        with self._db() as db:
            db.execute(
                "UPDATE studies SET detail = ?, updated = ? WHERE study_uid = ?", (detail, _iso(_now()), study_uid)
            )

    @staticmethod
    def is_due(state: StudyState) -> bool:
        """False while a failed study waits for its next try."""
        return state.next_try is None or state.next_try <= _now()

    @staticmethod
    def is_stable(state: StudyState, stable_seconds: float) -> bool:
        """True when the study's instance count has not changed for ``stable_seconds``."""
        return state.changed is None or (_now() - state.changed).total_seconds() >= stable_seconds

    def since(self, given: str | None = None) -> tuple[str, bool]:
        """The first study date to watch: ``given``, else the date of the first start (remembered).

        Returns:
            (date as YYYYMMDD, True when this is the first start and no date was given).
        """
        if given:
            return given.replace("-", ""), False
        with self._db() as db:
            row = db.execute("SELECT value FROM meta WHERE key = 'since'").fetchone()
            if row:
                return row[0], False
            today = _now().astimezone().strftime("%Y%m%d")
            db.execute("INSERT INTO meta VALUES ('since', ?)", (today,))
        return today, True

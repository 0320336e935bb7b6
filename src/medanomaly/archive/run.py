"""Run an archive: list the studies, skip the ones already in OUT_DIR, score the rest in parts, summarise."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
from tqdm.auto import tqdm

from medanomaly.archive.dicomweb import is_dicomweb, open_dicomweb
from medanomaly.archive.rows import FAILED
from medanomaly.archive.source import Source, open_source
from medanomaly.archive.store import Store, to_table


@dataclass
class ArchiveJob:
    """What to score and where: the options of ``medanomaly archive score``."""

    source: str
    model_dir: str
    out_dir: str
    part_size: int = 64
    ignore_domain: bool = False
    maps: bool = False
    device: str = "auto"
    pacs_settings: str | None = None  # settings file of the PACS a ``dicomweb:`` SOURCE queries (else environment)

    @property
    def maps_dir(self) -> Path | None:
        """Where ``--maps`` writes the overlays (None without ``--maps``)."""
        return Path(self.out_dir) / "maps" if self.maps else None


#: An engine scores the chunks and yields each chunk's rows as an Arrow table, in any order.
Engine = Callable[[ArchiveJob, list[list[str]], dict[str, str]], Iterator[pa.Table]]


def run_archive(job: ArchiveJob, engine: Engine, model_id: tuple[str, int], *, progress: bool = True) -> dict[str, Any]:
    """Score every study of ``job.source`` not yet in ``job.out_dir``; returns :func:`summarise` of the whole store."""
    store = Store(job.out_dir)
    source = _open(job)
    done = store.done(*model_id)
    store.write(_unreadable_rows(source, done, model_id))
    todo = [p for p in source.paths if p not in done]
    chunks = [todo[i : i + job.part_size] for i in range(0, len(todo), job.part_size)]
    written = _write_all(store, engine(job, chunks, source.labels), len(todo), progress, seen=set(done))
    summary = summarise(store.read())
    summary.update(skipped=len(done), written=written)
    return summary


def _open(job: ArchiveJob) -> Source:
    """The studies of a folder, a manifest or a DICOMweb query (retrieved into ``OUT_DIR/dicomweb``)."""
    if is_dicomweb(job.source):
        return open_dicomweb(job.source, Path(job.out_dir) / "dicomweb", job.pacs_settings)
    return open_source(job.source)


def _write_all(store: Store, tables: Iterable[pa.Table], total: int, progress: bool, seen: set[str]) -> int:
    """Write each table's new rows as a part as it comes; a progress bar counts studies and shows images/s.

    A row whose path is in ``seen`` (already in OUT_DIR, or written earlier in this run) is dropped and the path is
    added to ``seen``: an engine that delivers a study twice (Ray redoing a lost node's work) never duplicates it.
    """
    started, images, written = time.perf_counter(), 0, 0
    with tqdm(total=total, unit="study", desc="archive", disable=not progress) as bar:
        for table in tables:
            table = _new_rows(table, seen)
            store.write(table)
            written += table.num_rows
            images += sum(n or 0 for n in table["n_images"].to_pylist())
            bar.update(table.num_rows)
            bar.set_postfix(images_per_s=f"{images / max(time.perf_counter() - started, 1e-9):.1f}")
    return written


def _new_rows(table: pa.Table, seen: set[str]) -> pa.Table:
    """The rows of ``table`` whose path is not in ``seen``; their paths join ``seen``."""
    keep = []
    for path in table["path"].to_pylist():
        keep.append(path not in seen)
        seen.add(path)
    return table if all(keep) else table.filter(pa.array(keep))


def _unreadable_rows(source: Source, done: set[str], model_id: tuple[str, int]) -> pa.Table:
    """Failed rows for what the folder scan found cannot be a study (unreadable DICOM, mixed series)."""
    rows = [
        {"path": path, "status": FAILED, "error": error, "model": model_id[0], "model_version": model_id[1],
         "n_images": 0, "seconds": 0.0}
        for path, error in source.unreadable.items() if path not in done
    ]  # fmt: skip
    return to_table(rows)


def summarise(table: pa.Table, top: int = 5) -> dict[str, Any]:
    """Counts by status and the ``top`` most anomalous decided studies (highest score first)."""
    rows = table.select(["path", "status", "score", "decision"]).to_pylist()
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    scored = sorted((r for r in rows if r["status"] == "ok" and r["score"] is not None), key=lambda r: -r["score"])
    return {"total": len(rows), "counts": counts, "most_anomalous": scored[:top]}


def format_summary(summary: dict[str, Any]) -> str:
    """The summary as a few human lines."""
    counts = ", ".join(f"{n} {status}" for status, n in sorted(summary["counts"].items()))
    lines = [
        f"{summary['total']} studies in the archive ({counts}); this run wrote {summary['written']}, "
        f"skipped {summary['skipped']} already done",
        "most anomalous:",
    ]
    lines += [f"  {r['score']:.4g}  {r['decision']}  {r['path']}" for r in summary["most_anomalous"]]
    return "\n".join(lines)

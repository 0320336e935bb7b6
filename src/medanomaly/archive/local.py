"""The local engine: one process, one model, chunk after chunk."""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa

from medanomaly.archive.rows import score_chunk
from medanomaly.archive.run import ArchiveJob, Engine
from medanomaly.archive.store import to_table
from medanomaly.model import Model


def load_model(model_dir: str, device: str = "auto") -> Model:
    """The model as ``medanomaly score`` loads it (its path recorded the same way)."""
    model = Model.load(model_dir, device=device)
    model.info["path"] = str(model_dir)
    return model


def local_engine(model: Model) -> Engine:
    """An engine scoring the chunks in order in this process with ``model``."""

    def run(job: ArchiveJob, chunks: list[list[str]], labels: dict[str, str]) -> Iterator[pa.Table]:
        for chunk in chunks:
            yield to_table(score_chunk(model, chunk, labels, ignore_domain=job.ignore_domain, maps_dir=job.maps_dir))

    return run

"""The Ray engine: actors load the model once and score chunks of study paths.

Ray Data feeds the chunks to the actors, which score each with :func:`medanomaly.archive.rows.score_chunk` (the
same function as the local engine); the driver writes the parts.

Needs the ``scale`` extra (``ray[data]``). The study paths and OUT_DIR (for ``--maps``) must be readable/writable at
the same paths on every node (a shared file system).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from medanomaly.archive.rows import score_chunk
from medanomaly.archive.run import ArchiveJob, Engine
from medanomaly.archive.store import SCHEMA, to_table


class ChunkScorer:
    """A Ray actor's scorer: the model is loaded once, then each batch (a chunk of paths) becomes its rows."""

    def __init__(self, job: ArchiveJob, labels: dict[str, str]) -> None:
        from medanomaly.archive.local import load_model

        self.job, self.labels = job, labels
        self.model = load_model(job.model_dir, job.device)

    def __call__(self, batch: pa.Table) -> pa.Table:
        """The rows of the batch's paths."""
        paths = [str(p) for p in batch["path"].to_pylist()]
        job = self.job
        return to_table(score_chunk(self.model, paths, self.labels, ignore_domain=job.ignore_domain,
                                    maps_dir=job.maps_dir))


def ray_engine(address: str | None = None, workers: int | None = None, cpus_per_worker: float = 1.0) -> Engine:
    """An engine on the Ray cluster at ``address`` (None: the one already initialised, else a new local one).

    Args:
        address: ``ray.init`` address (``auto``, ``ray://host:10001``, ``127.0.0.1:6379``).
        workers: Scoring actors (default: the cluster's CPUs divided by ``cpus_per_worker``, at most the chunks).
        cpus_per_worker: Logical CPUs each actor declares.
    """

    def run(job: ArchiveJob, chunks: list[list[str]], labels: dict[str, str]) -> Iterator[pa.Table]:
        import ray

        if not chunks:
            return
        started_here = not ray.is_initialized()
        if started_here:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        try:
            yield from _run(ray, job, chunks, labels, workers, cpus_per_worker)
        finally:
            if started_here:
                ray.shutdown()

    return run


def _run(
    ray: Any, job: ArchiveJob, chunks: list[list[str]], labels: dict[str, str], workers: int | None, cpus: float
) -> Iterator[pa.Table]:
    """One Ray Data pipeline: a block per chunk, ``map_batches`` over a pool of :class:`ChunkScorer` actors."""
    if workers is None:
        workers = max(1, int(ray.cluster_resources().get("CPU", 1) // cpus) - 1)  # one CPU left for reading
    workers = max(1, min(workers, len(chunks)))
    todo = [path for chunk in chunks for path in chunk]
    items = [{"path": path} for path in todo]
    dataset = ray.data.from_items(items, override_num_blocks=len(chunks))
    scored = dataset.map_batches(
        ChunkScorer,
        fn_constructor_kwargs={"job": job, "labels": {p: labels[p] for p in todo if p in labels}},
        batch_size=job.part_size,
        batch_format="pyarrow",
        concurrency=workers,
        num_cpus=cpus,
    )
    for batch in scored.iter_batches(batch_size=None, batch_format="pyarrow"):
        yield batch.cast(SCHEMA)

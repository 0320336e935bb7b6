"""The Ray engine: reading tasks decode the studies, scoring actors load the model once and score them.

A Ray Data pipeline of two stages, one block per chunk of study paths:

1. :func:`read_block` (Ray tasks, 1 CPU each): :func:`medanomaly.pipeline.read_studies` reads and decodes each file
   or series (DICOM, PNG, NIfTI); a file that cannot be read becomes its failure text.
2. :class:`ChunkScorer` (a pool of actors; 1 CPU, 1.5 GB, and 1 GPU when the cluster has GPUs): the model is loaded
   once per actor; :func:`medanomaly.archive.rows.score_read_chunk` preprocesses, checks the domain and scores the chunk
   with :func:`medanomaly.pipeline.score_studies`, the second half of the local engine's ``score_paths``.

The driver writes each chunk's rows as a Parquet part as it arrives. Ray Data restarts an actor lost with its node
and reruns the lost work elsewhere; the writer drops any row already in OUT_DIR (see :mod:`.run`). The actor pool
autoscales between 1 and ``workers``: with a fixed-size pool, Ray Data 2.60 waited forever for the lost actor's
restart once the cluster had shrunk (measured in ``tests/scale/test_archive.py``).

Needs the ``scale`` extra (``ray[data]``). The study paths and OUT_DIR (for ``--maps``) must be readable/writable at
the same paths on every node (a shared file system).
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from medanomaly.archive.rows import score_read_chunk
from medanomaly.archive.run import ArchiveJob, Engine
from medanomaly.archive.store import SCHEMA, to_table
from medanomaly.data.loading import Failure
from medanomaly.pipeline import read_studies
from medanomaly.scale import connected, gpus_per_worker

#: What a reading task hands to a scoring actor: the path, the pickled study (or null) and the read error (or null).
READ_SCHEMA = pa.schema([("path", pa.string()), ("study", pa.binary()), ("error", pa.string())])


def read_block(batch: pa.Table, color: bool) -> pa.Table:
    """Read and decode the batch's studies (a Ray task): one row per path, the study pickled or the error."""
    rows = []
    for path in (str(p) for p in batch["path"].to_pylist()):
        failures: list[Failure] = []
        studies = list(read_studies([path], color=color, failures=failures))
        study = pickle.dumps(studies[0], protocol=pickle.HIGHEST_PROTOCOL) if studies else None
        rows.append({"path": path, "study": study, "error": failures[0].error if failures else None})
    return pa.Table.from_pylist(rows, schema=READ_SCHEMA)


class ChunkScorer:
    """A Ray actor's scorer: the model is loaded once, then each batch of read studies becomes its rows."""

    def __init__(self, job: ArchiveJob, labels: dict[str, str]) -> None:
        from medanomaly.archive.local import load_model

        self.job, self.labels = job, labels
        self.model = load_model(job.model_dir, job.device)

    def __call__(self, batch: pa.Table) -> pa.Table:
        """The rows of the batch's studies, in order."""
        paths, pickled, errors = (batch[name].to_pylist() for name in ("path", "study", "error"))
        studies = [pickle.loads(data) for data in pickled if data is not None]
        failures = [Failure(p, e) for p, d, e in zip(paths, pickled, errors, strict=True) if d is None]
        rows = score_read_chunk(self.model, paths, studies, failures, self.labels,
                                ignore_domain=self.job.ignore_domain, maps_dir=self.job.maps_dir)  # fmt: skip
        return to_table(rows)


def ray_engine(
    address: str | None = None, workers: int | None = None, cpus_per_worker: float = 1.0, memory_gb: float = 1.5
) -> Engine:
    """An engine on the Ray cluster at ``address`` (None: the one already connected, else a new local one).

    Args:
        address: ``ray.init`` address (``auto``, ``ray://host:10001``, ``127.0.0.1:6379``).
        workers: The most scoring actors (default: the cluster's CPUs divided by ``cpus_per_worker``, minus one for
            reading, at most the number of chunks). Ray Data starts one and adds actors while chunks wait.
        cpus_per_worker: Logical CPUs each actor declares.
        memory_gb: Memory each actor declares (the model and a chunk's studies must fit in it); must be above 0.
    """
    if memory_gb <= 0:
        raise ValueError("memory_gb must be above 0")

    def run(job: ArchiveJob, chunks: list[list[str]], labels: dict[str, str]) -> Iterator[pa.Table]:
        if not chunks:
            return
        with connected(address) as ray:
            yield from _run(ray, job, chunks, labels, workers, cpus_per_worker, memory_gb)

    return run


def _run(
    ray: Any,
    job: ArchiveJob,
    chunks: list[list[str]],
    labels: dict[str, str],
    workers: int | None,
    cpus: float,
    memory_gb: float,
) -> Iterator[pa.Table]:
    """Reading tasks then a pool of :class:`ChunkScorer` actors, a block per chunk; yields each chunk's rows."""
    if workers is None:
        workers = max(1, int(ray.cluster_resources().get("CPU", 1) // cpus) - 1)  # one CPU left for reading
    workers = max(1, min(workers, len(chunks)))
    todo = [path for chunk in chunks for path in chunk]
    dataset = ray.data.from_items([{"path": path} for path in todo], override_num_blocks=len(chunks))
    # Reads spread over the nodes (each reads its share from the file share). The actors' declared memory keeps
    # reading a stage of its own: Ray Data fuses a task stage into the next actor stage when their remote arguments
    # are equal, which would put reading back inside the actors.
    read = dataset.map_batches(
        read_block, fn_kwargs={"color": _color(job.model_dir)}, batch_size=job.part_size, batch_format="pyarrow",
        num_cpus=1, scheduling_strategy="SPREAD",
    )  # fmt: skip
    scored = read.map_batches(
        ChunkScorer,
        fn_constructor_kwargs={"job": job, "labels": {p: labels[p] for p in todo if p in labels}},
        batch_size=job.part_size,
        batch_format="pyarrow",
        concurrency=(1, workers),  # an autoscaling pool: it shrinks when a node is lost, where a fixed one stalls
        num_cpus=cpus,
        num_gpus=gpus_per_worker(ray, job.device),
        memory=int(memory_gb * 1024**3),
    )
    for batch in scored.iter_batches(batch_size=None, batch_format="pyarrow"):
        yield batch.cast(SCHEMA)


def _color(model_dir: str) -> bool:
    """Whether the model reads colour images (its preprocessing keeps 3 channels), from ``model.json``."""
    config = json.loads((Path(model_dir) / "model.json").read_text())
    return int(config.get("preprocessing", {}).get("channels", 1)) == 3

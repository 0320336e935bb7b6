"""The benchmark's cells as Ray tasks (``medanomaly bench --engine ray``; needs the ``scale`` extra).

Each task runs :func:`medanomaly.evaluation.bench_runner.run_in_subprocess`, the function the local engine runs: the
cell trains and tests in its own process on whichever node the task landed, writing into its cell folder, so
results.csv, resuming and failure records are those of the local engine. The cells' folders (``--out``) and the data
sets must be at the same paths on every node (a shared file system).

A task declares ``num_cpus``, ``memory`` and, when the cluster has GPUs and ``--device`` allows CUDA, one GPU;
Ray runs as many cells at once as the nodes' resources allow. A task whose node is lost is retried by Ray elsewhere
and the cell resumes from its last epoch checkpoint.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

from medanomaly.evaluation.bench_progress import Progress
from medanomaly.evaluation.bench_runner import Outcome, run_in_subprocess
from medanomaly.evaluation.benchmark import BenchConfig, Cell, CellEngine, cell_timeout, finish_cell, start_cell
from medanomaly.scale import connected, gpus_per_worker

_GB = 1024**3


def run_cell_task(directory: str, key: str, timeout: float | None) -> Outcome:
    """The body of a cell's Ray task: the local engine's cell function, on the node Ray chose."""
    return run_in_subprocess(Path(directory), key, timeout)


def ray_cells(address: str | None = None, cpus: float = 1.0, memory_gb: float = 2.0, retries: int = 3) -> CellEngine:
    """An engine running the cells as Ray tasks on the cluster at ``address`` (None: a new local one).

    Args:
        address: ``ray.init`` address (``auto``, ``ray://host:10001``, ``host:6379``).
        cpus: Logical CPUs each cell declares (its process may use them all).
        memory_gb: Memory each cell declares, so that Ray never packs more cells on a node than fit.
        retries: Times Ray reruns a cell whose worker or node died.
    """

    def engine(config: BenchConfig, progress: Progress) -> RayCells:
        return RayCells(config, progress, address, {"num_cpus": cpus, "memory": int(memory_gb * _GB)}, retries)

    return engine


class RayCells:
    """Submits each cell as a Ray task at once; :meth:`wait` records each as it ends (in any order)."""

    def __init__(
        self, config: BenchConfig, progress: Progress, address: str | None, needs: dict[str, Any], retries: int
    ) -> None:
        self.config, self.progress, self.address = config, progress, address
        self.needs, self.retries = needs, retries
        self.pending: dict[Any, tuple[int, Cell]] = {}
        self._session = contextlib.ExitStack()
        self._task: Any = None

    def submit(self, i: int, cell: Cell) -> None:
        """Prepare the cell's folder and queue its task."""
        if self._task is None:
            ray = self._session.enter_context(connected(self.address))
            gpus = gpus_per_worker(ray, self.config.train.device)
            options = {**self.needs, "num_gpus": gpus, "max_retries": self.retries, "retry_exceptions": False}
            self._task = ray.remote(run_cell_task).options(**options)
        start_cell(cell, self.progress, i)
        ref = self._task.remote(str(cell.directory), cell.key, cell_timeout(self.config))
        self.pending[ref] = (i, cell)

    def wait(self) -> None:
        """Record every cell as its task ends; on an interrupt, cancel the tasks still queued or running."""
        with self._session:
            if not self.pending:
                return
            import ray

            try:
                while self.pending:
                    done, _ = ray.wait(list(self.pending), num_returns=1)
                    i, cell = self.pending.pop(done[0])
                    finish_cell(cell, _outcome(ray, done[0]), self.progress, i)
            finally:
                for ref in self.pending:
                    ray.cancel(ref, force=True)


def _outcome(ray: Any, ref: Any) -> Outcome:
    """The task's outcome; a task Ray could not complete (its node lost more often than retried) is a failed cell."""
    started = time.monotonic()
    try:
        return ray.get(ref)
    except ray.exceptions.RayError as error:
        reason = f"the Ray task failed: {type(error).__name__}: {str(error).strip().splitlines()[0][:200]}"
        return Outcome("failed", reason, round(time.monotonic() - started, 2))

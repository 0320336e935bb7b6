"""Connecting to a Ray cluster (the optional ``scale`` extra), shared by ``archive score`` and ``bench``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


def import_ray() -> Any:
    """The ``ray`` module, or an error naming the extra to install."""
    try:
        import ray
    except ImportError as error:
        msg = f"--engine ray needs Ray ({error}): pip install 'medanomaly[scale]'"
        raise ImportError(msg) from error
    return ray


@contextlib.contextmanager
def connected(address: str | None = None) -> Iterator[Any]:
    """``ray`` connected to the cluster at ``address`` (None: a new local one) unless already connected.

    A connection made here is closed on exit; one made by the caller (tests, a notebook) is left open.
    """
    ray = import_ray()
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        if started_here:
            ray.shutdown()


def gpus_per_worker(ray: Any, device: str) -> float:
    """1 GPU per worker when the cluster has GPUs and ``device`` allows CUDA, else 0."""
    allowed = device == "auto" or device.startswith("cuda")
    return 1.0 if allowed and ray.cluster_resources().get("GPU", 0) >= 1 else 0.0

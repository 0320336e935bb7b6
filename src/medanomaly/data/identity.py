"""What a training checkpoint belongs to: the method's configuration and the exact training data.

A checkpoint records both; resuming from one of another configuration or data set is refused instead of silently
continuing someone else's run (and recording the wrong provenance in the model).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, Subset

from medanomaly.errors import ModelError


def run_identity(detector: Any, train_set: Dataset, batch_size: int) -> dict[str, str]:
    """SHA-256 ids of the run's configuration (method, hyper-parameters, batch size) and of its training data.

    The data id covers every tensor of a ``TensorDataset`` (through any ``Subset``: the chosen indices too); other
    datasets are identified by their type and length only.
    """
    params = detector.get_params() if hasattr(detector, "get_params") else {}
    config = json.dumps({"method": getattr(detector, "name", type(detector).__name__), "params": params,
                         "batch_size": batch_size}, sort_keys=True, default=str)
    return {"config": hashlib.sha256(config.encode()).hexdigest(), "data": _data_id(train_set)}


def _data_id(dataset: Dataset) -> str:
    digest = hashlib.sha256()
    while isinstance(dataset, Subset):
        digest.update(torch.as_tensor(list(dataset.indices)).numpy().tobytes())
        dataset = dataset.dataset
    tensors = getattr(dataset, "tensors", None)
    if tensors is None:
        digest.update(f"{type(dataset).__name__}:{len(dataset)}".encode())  # type: ignore[arg-type]
    for tensor in tensors or ():
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def check_identity(path: Path, stored: dict[str, str] | None, current: dict[str, str]) -> None:
    """Refuse to resume a checkpoint written for another configuration or data set.

    Raises:
        ModelError: Naming the checkpoint, what differs and what to do.
    """
    if not stored:
        return  # written before checkpoints recorded their run: nothing to compare
    differs = [what for what in ("config", "data") if stored.get(what) != current.get(what)]
    if differs:
        what = " and ".join({"config": "method configuration", "data": "training data"}[d] for d in differs)
        msg = (f"{path}: this checkpoint belongs to another run (its {what} differs); delete it or pass another "
               f"--checkpoint-dir to start afresh")
        raise ModelError(msg)


def load_checkpoint(path: Path, device: torch.device) -> dict[str, Any]:
    """``torch.load`` a checkpoint (weights only); ModelError when it is empty, truncated or not a checkpoint."""
    try:
        if path.stat().st_size == 0:
            raise EOFError("the file is empty")
        payload = torch.load(path, map_location=device, weights_only=True)
        if not isinstance(payload, dict) or "state" not in payload:
            raise ValueError("not a medanomaly training checkpoint")
    except (OSError, EOFError, RuntimeError, ValueError, KeyError) as error:
        msg = f"{path}: unreadable checkpoint ({error}); delete it to start afresh"
        raise ModelError(msg) from None
    except Exception as error:  # noqa: BLE001 - unpickling errors of a corrupt file come in many types
        msg = f"{path}: unreadable checkpoint ({type(error).__name__}: {error}); delete it to start afresh"
        raise ModelError(msg) from None
    return payload


def save_checkpoint(payload: dict[str, Any], path: Path) -> None:
    """Write ``payload`` atomically (temp file + rename); ModelError with the reason when the disk refuses."""
    tmp = path.with_suffix(".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(payload, tmp)
        tmp.replace(path)
    except (OSError, RuntimeError) as error:
        tmp.unlink(missing_ok=True)
        reason = getattr(error, "strerror", None) or str(error)
        msg = (f"{path}: cannot write the checkpoint ({reason}); free disk space, fix the permissions or pass "
               f"another --checkpoint-dir")
        raise ModelError(msg) from error

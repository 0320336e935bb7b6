"""Device auto-selection: CUDA when present, then Apple MPS, else CPU."""

from __future__ import annotations

import torch


def select_device(preference: str | torch.device = "auto") -> torch.device:
    """Resolve ``auto``/``cpu``/``cuda[:N]``/``mps`` to a usable device; ``auto`` never needs a GPU."""
    if isinstance(preference, torch.device):
        return preference
    if preference != "auto":
        device = torch.device(preference)
        if device.type == "cuda" and not torch.cuda.is_available():
            msg = "device 'cuda' asked for, but no CUDA GPU is available: use --device auto or cpu"
            raise ValueError(msg)
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")

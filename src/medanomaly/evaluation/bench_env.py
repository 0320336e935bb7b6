"""``environment.json`` of a benchmark: the machine, the software versions, the code commit and the command line.

Every invocation over the same output folder is appended to ``runs`` (date, command, load average before and after,
cells computed), so a table assembled over several sessions says when and under what load each part ran.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import shlex
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import medanomaly

ENVIRONMENT = "environment.json"
_PACKAGES = ("torch", "numpy", "scikit-learn", "scipy", "monai", "onnxruntime", "pydicom")


def collect_environment() -> dict[str, Any]:
    """Machine, OS, versions and code commit of this process."""
    import torch

    return {
        "machine": {
            "cpu": _cpu_model(),
            "logical_cores": os.cpu_count(),
            "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "ram_gb": _ram_gb(),
            "os": platform.platform(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "torch_threads": torch.get_num_threads(),
        },
        "python": sys.version.split()[0],
        "medanomaly": medanomaly.__version__,
        "packages": {name: _version(name) for name in _PACKAGES if _version(name)},
        "git": _git_state(Path(medanomaly.__file__).resolve().parent),
    }


def start_run(out: Path, command: str | None = None, settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write ``environment.json`` for a run that starts now; returns its content.

    Args:
        out: The benchmark folder.
        command: The command line (default: this process's ``sys.argv``).
        settings: The resolved benchmark configuration, JSON-able.
    """
    previous = _read(out / ENVIRONMENT).get("runs", [])
    environment = collect_environment()
    run = {
        "started": _now(),
        "command": command or shlex.join(sys.argv),
        "cwd": os.getcwd(),
        "git": environment["git"],
        "loadavg_start": _loadavg(),
    }
    payload = {
        **environment,
        "date": run["started"],
        "command": run["command"],
        "settings": settings or {},
        "runs": [*previous, run],
    }
    _write(out / ENVIRONMENT, payload)
    return payload


def finish_run(out: Path, payload: dict[str, Any], computed: int) -> None:
    """Add the end time, final load average and number of computed cells to this run's record."""
    payload["runs"][-1].update(finished=_now(), loadavg_end=_loadavg(), cells_computed=computed)
    _write(out / ENVIRONMENT, payload)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return None


def _version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _git_state(folder: Path) -> dict[str, Any] | None:
    """Commit and whether tracked files differ from it (read-only git commands); None outside a checkout."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        changes = subprocess.run(
            ["git", "-C", str(folder), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": bool(changes.strip())}


def _loadavg() -> list[float] | None:
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return None


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _read(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _write(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=2))
    tmp.replace(path)

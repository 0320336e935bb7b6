"""Run one benchmark cell in a fresh Python process and record how it ended.

The child (:mod:`medanomaly.evaluation.bench_cell`) writes ``metrics.json`` + ``result.json`` on success or
``error.json`` on a Python error; this side adds the configuration hash and wall time, so ``metrics.json`` only
counts as finished once it carries ``bench.config_hash``. A child killed by a signal (the OOM killer) or by the hard
timeout leaves ``failed.json`` with the reason. Peak memory is measured by the child itself (``VmHWM``; see
:func:`medanomaly.evaluation.bench_cell.peak_rss_mb` for why not ``getrusage``).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import medanomaly

logger = logging.getLogger(__name__)
METRICS, FAILED, CELL_SPEC = "metrics.json", "failed.json", "cell.json"
RESULT, ERROR, LOG = "result.json", "error.json", "cell.log"
_POLL_SECONDS = 0.5


@dataclass
class Outcome:
    """How a cell process ended.

    Attributes:
        status: ``done`` or ``failed``.
        error: One-line reason when failed.
        seconds: Wall time of the process.
        auroc: Test AUROC when done.
    """

    status: str
    error: str
    seconds: float
    auroc: float | None = None


def run_in_subprocess(
    directory: Path, key: str, timeout: float | None = None, heartbeat: Callable[[float], None] | None = None
) -> Outcome:
    """Run the cell whose ``cell.json`` is in ``directory``; never raises for a failing cell.

    Args:
        directory: The cell folder (holds ``cell.json``; receives the outputs and ``cell.log``).
        key: The configuration hash stamped into ``metrics.json`` / ``failed.json``.
        timeout: Seconds after which the process is killed; None = no limit.
        heartbeat: Called about twice a second with the elapsed seconds (progress display).
    """
    for name in (RESULT, ERROR):
        (directory / name).unlink(missing_ok=True)
    started = time.monotonic()
    returncode, timed_out = _run_child(directory, timeout, heartbeat or (lambda _elapsed: None))
    seconds = round(time.monotonic() - started, 2)
    if returncode == 0 and (directory / RESULT).is_file() and (directory / METRICS).is_file():
        metrics = _read(directory / METRICS)
        metrics["bench"] = {**_read(directory / RESULT), "config_hash": key, "wall_seconds": seconds}
        _write_atomic(directory / METRICS, metrics)
        (directory / RESULT).unlink()
        return Outcome("done", "", seconds, metrics.get("auroc"))
    error = _failure_reason(directory, returncode, timed_out, timeout)
    (directory / METRICS).unlink(missing_ok=True)
    record = {"error": error, "returncode": returncode, "bench": {"config_hash": key, "wall_seconds": seconds}}
    _write_atomic(directory / FAILED, record)
    return Outcome("failed", error, seconds)


def _run_child(directory: Path, timeout: float | None, heartbeat: Callable[[float], None]) -> tuple[int, bool]:
    command = [sys.executable, "-m", "medanomaly.evaluation.bench_cell", str(directory)]
    started, timed_out = time.monotonic(), False
    with (directory / LOG).open("w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=_child_environment())
        try:
            while process.poll() is None:
                elapsed = time.monotonic() - started
                if timeout is not None and elapsed > timeout:
                    timed_out = True
                    process.kill()
                    break
                heartbeat(elapsed)
                time.sleep(_POLL_SECONDS)
        finally:
            if process.poll() is None:  # interrupted (Ctrl-C) or timed out: never leave the child behind
                process.kill()
            process.wait()
    return int(process.returncode), timed_out


def _child_environment() -> dict[str, str]:
    """The current environment with the running medanomaly's source folder first on the path (same code)."""
    env = dict(os.environ)
    source = str(Path(medanomaly.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (source, env.get("PYTHONPATH"))))
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _failure_reason(directory: Path, returncode: int, timed_out: bool, timeout: float | None) -> str:
    if timed_out:
        return f"timed out after {(timeout or 0) / 60:g} min (--cell-timeout-minutes)"
    if (directory / ERROR).is_file():
        return str(_read(directory / ERROR).get("error", "unknown error"))
    if returncode < 0:
        name = signal.Signals(-returncode).name if -returncode in signal.valid_signals() else str(-returncode)
        hint = " (out of memory?)" if returncode == -signal.SIGKILL else ""
        return f"killed by {name}{hint}"
    return f"cell process exited with code {returncode}: {_last_line(directory / LOG)}"


def _last_line(path: Path) -> str:
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no log"
    return lines[-1][:300] if lines else "no output"


def _read(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _write_atomic(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=2))
    tmp.replace(path)

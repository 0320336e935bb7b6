"""Progress lines of a benchmark run: which cell (i/n), elapsed time, and time left estimated from finished cells."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

_QUIET_HEARTBEAT = 300.0  # seconds between "still running" lines when the output is not a terminal
_LIVE_REFRESH = 2.0


def format_duration(seconds: float | None) -> str:
    """``42s``, ``3m05s``, ``2h07m``; ``?`` when unknown."""
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Progress:
    """Prints one line per cell and estimates the time left from the wall time of finished cells.

    The estimate for a cell still to run is the mean time of finished cells of the same method on the same data
    set, else of the same method, else of all cells; cells that will be reused cost nothing.

    Args:
        cells: The planned cells (objects with ``label``, ``method.name``, ``dataset.name``, ``seconds``).
        to_run: For each cell, whether it will run (False = reused from an earlier run).
        echo: Prints a full line.
        live: Rewrites a status line in place (a terminal); None = only occasional "still running" lines.
        clock: Monotonic clock in seconds (a parameter for tests).
    """

    def __init__(
        self,
        cells: list[Any],
        to_run: list[bool],
        echo: Callable[[str], None],
        live: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cells, self.to_run, self.echo, self.live, self.clock = cells, list(to_run), echo, live, clock
        self.started = clock()
        self.durations: dict[tuple[str, str], list[float]] = {}
        self._current, self._last_beat = "", 0.0

    @property
    def total(self) -> int:
        """Number of cells."""
        return len(self.cells)

    def line(self, i: int, cell: Any, text: str) -> None:
        """Print ``[i/n] cell  text``."""
        self.echo(f"[{i}/{self.total}] {cell.label}  {text}")

    def started_cell(self, i: int, cell: Any) -> None:
        """A cell process starts."""
        self._current, self._last_beat = f"[{i}/{self.total}] {cell.label}", 0.0
        if self.live is None:
            self.echo(f"{self._current}  running ...")

    def heartbeat(self, elapsed: float) -> None:
        """Called while the cell runs with its elapsed seconds."""
        if self.live is not None and elapsed - self._last_beat >= _LIVE_REFRESH:
            total = self.clock() - self.started
            self.live(f"{self._current}  running {format_duration(elapsed)}  | total {format_duration(total)}")
            self._last_beat = elapsed
        elif self.live is None and elapsed - self._last_beat >= _QUIET_HEARTBEAT:
            self.echo(f"{self._current}  still running ({format_duration(elapsed)})")
            self._last_beat = elapsed

    def finished(self, i: int, cell: Any, *, cached: bool, auroc: float | None) -> None:
        """A cell is done, failed or reused; prints its line with elapsed time and time left."""
        if cell.seconds is not None:
            self.durations.setdefault((cell.method.name, cell.dataset.name), []).append(float(cell.seconds))
        if self.live is not None and not cached:
            self.live("")
        score = f"  AUROC {auroc:.3f}" if auroc is not None else ""
        if cell.status == "failed":
            what = f"FAILED ({cell.error})" + ("" if not cached else " [recorded earlier]")
        elif cached:
            what = "reused from an earlier run"
        else:
            what = f"done in {format_duration(cell.seconds)}"
        left = self.estimate_left(i)
        elapsed = format_duration(self.clock() - self.started)
        self.line(i, cell, f"{what}{score}  | elapsed {elapsed}, ~{format_duration(left)} left")

    def estimate_left(self, i: int) -> float | None:
        """Estimated seconds for the cells after the ``i``-th (1-based) that will run; None when unknown."""
        total = 0.0
        for cell, runs in zip(self.cells[i:], self.to_run[i:], strict=True):
            if not runs:
                continue
            guess = self._guess(cell)
            if guess is None:
                return None
            total += guess
        return total

    def _guess(self, cell: Any) -> float | None:
        same = self.durations.get((cell.method.name, cell.dataset.name))
        method = [s for (name, _), values in self.durations.items() if name == cell.method.name for s in values]
        every = [s for values in self.durations.values() for s in values]
        for values in (same, method, every):
            if values:
                return sum(values) / len(values)
        return None

"""Images/s of ``medanomaly archive score``: the local engine against Ray with 1 and 2 scoring actors.

Same model, same images, a fresh OUT_DIR per run::

    nice -n 10 .venv/bin/python bench/archive_speed.py --model MODEL_DIR \
        --images ../shared/data/zhanglab_chest_xray/test --limit 400 --out bench/results/archive_speed.json

Runs, each timed from the first study listed to the last row written (Ray is started before the clock, as a running
cluster would be; actor start-up and model loading are inside the time):

- ``local-1``: the local engine with PyTorch on 1 thread; ``local-N``: on N threads (N = the machine's cores);
- ``ray-1``: Ray with 1 scoring actor (1 CPU); ``ray-2``: 2 actors; Ray gets one more logical CPU than actors, for
  the reading tasks. An actor runs PyTorch on 1 thread (Ray sets ``OMP_NUM_THREADS`` to its CPUs).

The Ray overhead is ``1 - (ray-k images/s) / (local images/s at the same core count)``: ray-1 against local-1,
ray-2 against local-2, over the whole run and at the steady state (from the first part written to the last: actor
start-up and model loading, paid once per run, left out). Peak memory: the peak resident set size (``VmHWM``,
sampled every 0.2 s) of the driver (local) and of each scoring actor's process (Ray). Prints one JSON object, also
written to ``--out``, with the load average before and after each run: on a machine shared with other jobs the
numbers describe the contention too.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import torch

from medanomaly.archive.local import load_model, local_engine
from medanomaly.archive.run import ArchiveJob, Engine, run_archive
from medanomaly.archive.store import Store


def _hwm_mb(pid: int) -> float | None:
    """The process's peak resident memory so far (``VmHWM``), MB; None when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@contextmanager
def peak_rss(match: Callable[[int], bool]) -> Iterator[dict[int, float]]:
    """Sample every 0.2 s the peak resident memory (MB) of the processes ``match`` accepts; yields pid -> peak."""
    peaks: dict[int, float] = {}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            for entry in Path("/proc").iterdir():
                if entry.name.isdigit() and match(int(entry.name)):
                    peak = _hwm_mb(int(entry.name))
                    if peak is not None:
                        peaks[int(entry.name)] = max(peaks.get(int(entry.name), 0.0), peak)
            stop.wait(0.2)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield peaks
    finally:
        stop.set()
        thread.join()


def _is_scoring_actor(pid: int) -> bool:
    return "ChunkScorer" in _cmdline(pid)


def timed_run(name: str, job: ArchiveJob, engine: Engine, model_id: tuple[str, int], watch: Callable) -> dict:
    """One archive run into a fresh OUT_DIR: wall seconds, images, images/s, peak memory, load average."""
    load_before = os.getloadavg()[0]
    arrivals: list[tuple[float, int]] = []  # (time, images) of each part as it arrives

    def timed(job: ArchiveJob, chunks: list[list[str]], labels: dict[str, str]) -> Iterator[pa.Table]:
        for table in engine(job, chunks, labels):
            arrivals.append((time.perf_counter(), sum(n or 0 for n in table["n_images"].to_pylist())))
            yield table

    with peak_rss(watch) as peaks:
        started = time.perf_counter()
        run_archive(job, timed, model_id, progress=False)
        seconds = time.perf_counter() - started
    table = Store(job.out_dir).read(["status", "n_images"])
    images = sum(n or 0 for n in table["n_images"].to_pylist())
    return {
        "run": name, "seconds": round(seconds, 2), "studies": table.num_rows, "images": images,
        "images_per_second": round(images / seconds, 2),
        "first_part_seconds": round(arrivals[0][0] - started, 2) if arrivals else None,
        "steady_images_per_second": _steady(arrivals),
        "peak_rss_mb_per_process": sorted(round(v) for v in peaks.values()),
        "loadavg_before": round(load_before, 2), "loadavg_after": round(os.getloadavg()[0], 2),
    }  # fmt: skip


def _steady(arrivals: list[tuple[float, int]]) -> float | None:
    """Images/s from the first part's arrival to the last (start-up and model loading left out)."""
    if len(arrivals) < 2:
        return None
    images = sum(n for _, n in arrivals[1:])
    return round(images / max(arrivals[-1][0] - arrivals[0][0], 1e-9), 2)


def manifest(images: Path, limit: int, folder: Path) -> Path:
    """A manifest CSV of the first ``limit`` images (sorted) under ``images``."""
    suffixes = {".png", ".jpg", ".jpeg", ".dcm"}
    paths = sorted(p for p in images.rglob("*") if p.suffix.lower() in suffixes)[:limit]
    out = folder / "manifest.csv"
    out.write_text("path\n" + "".join(f"{p.resolve()}\n" for p in paths))
    return out


def main() -> None:
    """Run the five timings and print the report."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--images", required=True, type=Path, help="folder of images (searched recursively)")
    parser.add_argument("--limit", type=int, default=400, help="images to score per run")
    parser.add_argument("--part-size", type=int, default=32)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="archive_speed-") as tmp:
        source = manifest(args.images, args.limit, Path(tmp))
        model = load_model(args.model, "cpu")
        model_id = (model.method, model.version)
        me = os.getpid()

        def job(name: str) -> ArchiveJob:
            return ArchiveJob(str(source), args.model, str(Path(tmp) / name), part_size=args.part_size, device="cpu")

        run_archive(job("warm-up"), local_engine(model), model_id, progress=False)  # file cache, lazy imports
        for threads in sorted({1, cores}):
            torch.set_num_threads(threads)
            name = f"local-{threads}"
            results.append(timed_run(name, job(name), local_engine(model), model_id, lambda pid: pid == me))
        results += _ray_runs(job, model_id)
    local = {r["run"]: r["images_per_second"] for r in results}
    steadies = {r["run"]: r["steady_images_per_second"] for r in results}
    for row in results:
        if row["run"].startswith("ray-"):
            k = row["run"].split("-")[1]
            reference = local.get(f"local-{k}")
            row["overhead_vs_local"] = round(1 - row["images_per_second"] / reference, 3) if reference else None
            steady = steadies.get(f"local-{k}")
            ray_steady = row["steady_images_per_second"]
            row["steady_overhead_vs_local"] = round(1 - ray_steady / steady, 3) if steady and ray_steady else None
    report = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {cores} cores, {_memory_gb():.0f} GB memory",
        "model": json.loads((Path(args.model) / "model.json").read_text()).get("method"),
        "resolution": model.preprocessing.resolution,
        "images": args.limit, "part_size": args.part_size, "runs": results,
    }  # fmt: skip
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


def _memory_gb() -> float:
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30


def _ray_runs(job: Callable[[str], ArchiveJob], model_id: tuple[str, int]) -> list[dict[str, Any]]:
    """ray-1 and ray-2, each on a fresh local Ray with one logical CPU more than actors (for reading)."""
    import ray

    from medanomaly.archive.ray_engine import ray_engine

    runs = []
    for workers in (1, 2):
        ray.init(num_cpus=workers + 1, include_dashboard=False, log_to_driver=False)
        try:
            name = f"ray-{workers}"
            runs.append(timed_run(name, job(name), ray_engine(workers=workers), model_id, _is_scoring_actor))
        finally:
            ray.shutdown()
    return runs


if __name__ == "__main__":
    main()

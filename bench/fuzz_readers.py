"""Fuzz the readers: every mutated input must give a valid study or a medanomaly error, within 5 s and 2 GB.

Mutates the seed corpus (bench/fuzz_seeds.py, built like the test suite's fixtures) with bit flips, byte sets,
truncations, chunk cuts/duplications, DICOM tag and length edits, transfer-syntax swaps, NIfTI header-field edits and
series-folder edits, then reads each input with :func:`medanomaly.io.read_study` (or ``inspect_study``, and
``scan_studies`` for folders). Input ``i`` of seed ``s`` is a pure function of (s, i), so a run is reproducible and
can be split or resumed. Each worker process runs under an address-space limit of its baseline + 2 GiB, so an input
that tries to allocate more shows up as a MemoryError behind the error and is counted as a violation. ::

    nice -n 19 .venv/bin/python bench/fuzz_readers.py --n 100000 --seed 1 --workers 2 --out /tmp/fuzz.json

Prints (and writes to ``--out``) a JSON summary: inputs, studies read, InputErrors, crashes by signature (the
exception type and where it was raised), slow inputs (> 5 s of CPU time: wall time on a shared machine measures the
machine's load), over-memory inputs, the slowest input (CPU and wall) and the rate.
Crashing inputs are copied to ``--crash-dir`` (three per signature) to become regression fixtures.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import multiprocessing as mp
import os
import resource
import shutil
import signal
import sys
import tempfile
import time
import traceback
import zlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fuzz_seeds import write_seeds

TIME_LIMIT_S = 5.0
LOST_AFTER_S = 1800.0  # a 500-input chunk within the 5 s limit takes far less, even at a load of 30
MEMORY_LIMIT = 2 << 30
_INTS = (0, 1, -1, 2, 3, 7, 8, 12, 15, 16, 17, 255, 256, 4096, 32767, -32768, 65535, 2**31 - 1, -(2**31), 2**32 - 1)
_FLOATS = (float("nan"), float("inf"), -float("inf"), 0.0, -0.0, 1e38, -1e38, 1e-38, -1.0, 2.0, 3e9)
_DICOM_TAGS = (b"\x28\x00\x10\x00", b"\x28\x00\x11\x00", b"\x28\x00\x08\x00", b"\x28\x00\x02\x00", b"\x28\x00\x00\x01",
               b"\x28\x00\x01\x01", b"\x28\x00\x03\x01", b"\x28\x00\x53\x10", b"\x28\x00\x52\x10", b"\xe0\x7f\x10\x00",
               b"\x28\x00\x00\x30", b"\x28\x00\x02\x30", b"\x28\x00\x06\x30", b"\x20\x00\x0e\x00", b"\x02\x00\x10\x00",
               b"\x20\x00\x32\x00", b"\x20\x00\x37\x00", b"\x28\x00\x30\x00", b"\xfe\xff\x00\xe0", b"\x28\x00\x04\x00")
_DICOM_EDITS = {
    "Rows": [0, 1, 3, 65535, [16, 16]], "Columns": [0, 1, 65535, [8, 8]], "NumberOfFrames": [0, 2, 99999, "2\\3", -1],
    "BitsAllocated": [0, 1, 8, 12, 32, 64], "BitsStored": [0, 1, 12, 40], "HighBit": [0, 31, 99],
    "SamplesPerPixel": [0, 2, 3, 4], "PixelRepresentation": [0, 1, 2], "PlanarConfiguration": [0, 1, 7],
    "RescaleSlope": ["nan", "inf", "-inf", "0", "1e400", "abc"], "RescaleIntercept": ["nan", "-inf", "1e39"],
    "PhotometricInterpretation": ["MONOCHROME1", "RGB", "YBR_FULL_422", "PALETTE COLOR", "HSV", ""],
    "WindowCenter": ["nan", "1\\2\\3"], "WindowWidth": ["0", "-5", "inf"], "ImageOrientationPatient": [[0] * 6],
    "PixelSpacing": [["nan", "inf"], [0, 0]], "ImagePositionPatient": [["nan", 0, 0]],
}
_SYNTAXES = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99",
             "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80",
             "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.201", "1.2.3.4")
# NIfTI-1 header fields: (offset, numpy dtype, count)
_NIFTI_FIELDS = ((0, "<i4", 1), (40, "<i2", 8), (70, "<i2", 1), (72, "<i2", 1), (76, "<f4", 8), (108, "<f4", 1),
                 (112, "<f4", 1), (116, "<f4", 1), (252, "<i2", 2), (256, "<f4", 6), (280, "<f4", 12), (344, "S4", 1))


def _bit_flips(data: bytes, rng: np.random.Generator) -> bytes:
    buf = bytearray(data)
    span = min(len(buf), 1024) if rng.random() < 0.6 else len(buf)
    for _ in range(int(rng.integers(1, 9))):
        pos = int(rng.integers(span))
        buf[pos] ^= 1 << int(rng.integers(8))
    return bytes(buf)


def _byte_sets(data: bytes, rng: np.random.Generator) -> bytes:
    buf = bytearray(data)
    for _ in range(int(rng.integers(1, 5))):
        pos = int(rng.integers(len(buf)))
        value = int(rng.choice(_INTS)) & 0xFFFFFFFF
        chunk = value.to_bytes(4, "little")[: int(rng.choice([1, 2, 4]))]
        buf[pos : pos + len(chunk)] = chunk
    return bytes(buf)


def _truncate(data: bytes, rng: np.random.Generator) -> bytes:
    return data[: int(rng.integers(len(data)))]


def _chunks(data: bytes, rng: np.random.Generator) -> bytes:
    start = int(rng.integers(len(data)))
    end = min(len(data), start + int(rng.integers(1, 256)))
    if rng.random() < 0.5:
        return data[:start] + data[end:]
    return data[:end] + data[start:end] * int(rng.integers(1, 4)) + data[end:]


def _tag_lengths(data: bytes, rng: np.random.Generator) -> bytes:
    """Overwrite the VR/length bytes after a known DICOM tag (or random ones when none is present)."""
    tag = _DICOM_TAGS[int(rng.integers(len(_DICOM_TAGS)))]
    positions = [i for i in range(len(data)) if data.startswith(tag, i)] if tag in data else []
    if not positions:
        return _byte_sets(data, rng)
    pos = positions[int(rng.integers(len(positions)))] + 4 + int(rng.integers(0, 5))
    buf = bytearray(data)
    buf[pos : pos + 4] = (int(rng.choice(_INTS)) & 0xFFFFFFFF).to_bytes(4, "little")
    return bytes(buf)


def _dicom_edit(data: bytes, rng: np.random.Generator) -> bytes:
    """Parse, edit one header element (or the transfer syntax, or delete one), write back without re-encoding."""
    import pydicom

    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
        choice = rng.random()
        if choice < 0.2 and hasattr(ds, "file_meta"):
            ds.file_meta.TransferSyntaxUID = _SYNTAXES[int(rng.integers(len(_SYNTAXES)))]
        elif choice < 0.35:
            keywords = [elem.keyword for elem in ds if elem.keyword]
            if keywords:
                delattr(ds, keywords[int(rng.integers(len(keywords)))])
        else:
            keyword = list(_DICOM_EDITS)[int(rng.integers(len(_DICOM_EDITS)))]
            values = _DICOM_EDITS[keyword]
            setattr(ds, keyword, values[int(rng.integers(len(values)))])
        out = io.BytesIO()
        ds.save_as(out, enforce_file_format=False)
        return out.getvalue()
    except Exception:  # noqa: BLE001 - an edit pydicom cannot write falls back to a byte-level one
        return _tag_lengths(data, rng)


def _nifti_edit(data: bytes, rng: np.random.Generator) -> bytes:
    """Set one NIfTI-1 header field (of a .nii or, decompressed, a .nii.gz) to an extreme value."""
    packed = data[:2] == b"\x1f\x8b"
    try:
        raw = bytearray(gzip.decompress(data) if packed else data)
    except (OSError, EOFError, zlib.error):
        return _bit_flips(data, rng)
    offset, dtype, count = _NIFTI_FIELDS[int(rng.integers(len(_NIFTI_FIELDS)))]
    size = np.dtype(dtype).itemsize
    index = int(rng.integers(count))
    if dtype.endswith("f4"):
        value = np.array([rng.choice(_FLOATS)], dtype=dtype)
    elif dtype == "S4":
        value = np.array([rng.choice([b"ni1\0", b"n+1\0", b"n+2\0", b"xxxx"])], dtype=dtype)
    else:
        value = np.array([int(rng.choice(_INTS))], dtype=np.int64).astype(dtype)
    raw[offset + index * size : offset + (index + 1) * size] = value.tobytes()
    return gzip.compress(bytes(raw), compresslevel=1) if packed else bytes(raw)


_GENERIC = (_bit_flips, _byte_sets, _truncate, _chunks)


def mutate(data: bytes, kind: str, rng: np.random.Generator) -> bytes:
    """Apply 1-3 mutations suited to ``kind`` ("dicom", "nifti" or "image")."""
    specific = {"dicom": (_dicom_edit, _tag_lengths, _dicom_edit), "nifti": (_nifti_edit, _nifti_edit)}
    mutators = _GENERIC + specific.get(kind, (_bit_flips,))
    for _ in range(int(rng.integers(1, 4))):
        if not data:
            break
        data = mutators[int(rng.integers(len(mutators)))](data, rng)
    return data


def _kind(path: Path) -> str:
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        return "nifti"
    return "dicom" if name.endswith(".dcm") or path.is_dir() or "raw" in name else "image"


def make_input(seeds: list[Path], seed: int, index: int, workdir: Path) -> Path:
    """Write input ``index`` of campaign ``seed`` under ``workdir`` and return its path (file or series folder)."""
    rng = np.random.default_rng([seed, index])
    source = seeds[int(rng.integers(len(seeds)))]
    target = workdir / f"{index}_{source.name}"
    if source.is_dir():
        shutil.copytree(source, target)
        files = sorted(target.iterdir())
        victim = files[int(rng.integers(len(files)))]
        victim.write_bytes(mutate(victim.read_bytes(), "dicom", rng))
    else:
        target.write_bytes(mutate(source.read_bytes(), _kind(source), rng))
    return target


def check_one(path: Path, index: int) -> tuple[str, str | None, float, float]:
    """Read one input: ("read" | "input_error" | "crash" | "memory", signature or None, CPU s, wall s)."""
    from medanomaly.errors import MedanomalyError
    from medanomaly.io import inspect_study, read_study, scan_studies

    start, cpu = time.perf_counter(), time.process_time()
    try:
        if path.is_dir() and index % 2:
            scan_studies(path)
        if index % 3 == 0:
            inspect_study(path)
        else:
            _check_pixels(read_study(path, color=index % 2 == 1).pixels)
        outcome, signature = "read", None
    except MedanomalyError as err:
        chain = [err]
        while chain[-1].__cause__ is not None:
            chain.append(chain[-1].__cause__)
        memory = any(isinstance(e, MemoryError) for e in chain)
        outcome, signature = ("memory", _signature(chain[-1])) if memory else ("input_error", None)
    except Exception as err:  # noqa: BLE001 - anything else breaks the reader contract: that is what we count
        outcome, signature = "crash", _signature(err)
    return outcome, signature, time.process_time() - cpu, time.perf_counter() - start


def _check_pixels(pixels: np.ndarray) -> None:
    if pixels.size == 0 or pixels.ndim not in (3, 4):
        msg = f"empty or malformed pixels {pixels.shape}"
        raise AssertionError(msg)
    if np.issubdtype(pixels.dtype, np.floating) and not np.isfinite(pixels).all():
        msg = "non-finite pixels returned"
        raise AssertionError(msg)


def _signature(err: BaseException) -> str:
    frames = traceback.extract_tb(err.__traceback__)
    where = f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else "?"
    return f"{type(err).__name__} at {where}: {str(err).strip()[:80]}"


def run_range(seed: int, start: int, stop: int, seeds_dir: str, crash_dir: str | None) -> dict[str, Any]:
    """Generate and check inputs ``start..stop-1``; return counts, signatures and the slowest input."""
    seeds = sorted(Path(seeds_dir).iterdir())
    counts: Counter[str] = Counter()
    signatures: Counter[str] = Counter()
    examples: dict[str, int] = {}
    slowest, slowest_wall, growth = (0.0, -1), (0.0, -1), (0, -1)
    baseline = _vm_kb()
    with tempfile.TemporaryDirectory(prefix="fuzz_") as tmp:
        for index in range(start, stop):
            try:
                path = make_input(seeds, seed, index, Path(tmp))
                outcome, signature, seconds, wall = check_one(path, index)
            except MemoryError:  # the worker's own memory ran out after an input: name the input, go on
                counts["memory"] += 1
                signatures[f"memory: worker out of address space at input {index}"] += 1
                continue
            growth = max(growth, (_vm_kb() - baseline, index))
            counts[outcome] += 1
            if seconds > TIME_LIMIT_S:
                counts["slow"] += 1
                signatures[f"slow: {outcome} {path.name}"] += 1
            slowest, slowest_wall = max(slowest, (seconds, index)), max(slowest_wall, (wall, index))
            if signature:
                signatures[f"{outcome}: {signature}"] += 1
                examples.setdefault(f"{outcome}: {signature}", index)
                if crash_dir and signatures[f"{outcome}: {signature}"] <= 3:
                    _keep(path, Path(crash_dir))
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    return {"counts": dict(counts), "signatures": dict(signatures), "examples": examples, "slowest": slowest,
            "slowest_wall": slowest_wall, "vm_growth": growth}


def _vm_kb() -> int:
    """Mapped address space of this process in KiB (what the 2 GiB cap limits); 0 where /proc is missing."""
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmSize:"))
    except (OSError, StopIteration):
        return 0


def _keep(path: Path, crash_dir: Path) -> None:
    crash_dir.mkdir(parents=True, exist_ok=True)
    if path.is_dir():
        shutil.copytree(path, crash_dir / path.name, dirs_exist_ok=True)
    else:
        shutil.copy2(path, crash_dir / path.name)


def _limit_memory() -> None:
    """Worker initializer: address space = what the process maps now + 2 GiB; quiet logs and warnings."""
    import logging
    import warnings

    import nibabel  # noqa: F401
    import pydicom  # noqa: F401

    import medanomaly.io  # noqa: F401 - imported before measuring the baseline

    logging.disable(logging.CRITICAL)
    warnings.simplefilter("ignore")
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    limit = _vm_kb() * 1024 + MEMORY_LIMIT
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _merge(total: dict[str, Any], part: dict[str, Any]) -> None:
    for key in ("counts", "signatures"):
        total[key].update(part[key])
    for key, index in part["examples"].items():
        total["examples"].setdefault(key, index)
    total["slowest"] = max(total["slowest"], tuple(part["slowest"]))
    total["slowest_wall"] = max(total["slowest_wall"], tuple(part["slowest_wall"]))
    total["vm_growth"] = max(total["vm_growth"], tuple(part["vm_growth"]))


def campaign(n: int, seed: int, *, start: int = 0, workers: int = 1, chunk: int = 500,
             crash_dir: str | None = None, progress: bool = False) -> dict[str, Any]:
    """Run inputs ``start..start+n-1`` of campaign ``seed``; ``workers`` = 0 runs in this process (no memory cap)."""
    total: dict[str, Any] = {"counts": Counter(), "signatures": Counter(), "examples": {}, "slowest": (0.0, -1),
                             "slowest_wall": (0.0, -1), "vm_growth": (0, -1), "lost": []}
    began = time.time()
    with tempfile.TemporaryDirectory(prefix="fuzz_seeds_") as seeds_dir:
        write_seeds(Path(seeds_dir))
        ranges = [(seed, a, min(a + chunk, start + n), seeds_dir, crash_dir) for a in range(start, start + n, chunk)]
        if workers == 0:
            parts = (run_range(*r) for r in ranges)
            pool = None
        else:
            pool = mp.get_context("spawn").Pool(workers, initializer=_limit_memory, maxtasksperchild=20)
            parts = _collect(pool, ranges, total)
        try:
            for done, part in enumerate(parts, 1):
                _merge(total, part)
                if progress:
                    print(f"{min(done * chunk, n)}/{n} inputs, {time.time() - began:.0f} s, "
                          f"{dict(total['counts'])}", file=sys.stderr, flush=True)
        finally:
            if pool is not None:
                pool.terminate()
    counts = total["counts"]
    seconds = time.time() - began
    return {"seed": seed, "start": start, "inputs": sum(counts[k] for k in ("read", "input_error", "crash", "memory")),
            "read": counts["read"], "input_errors": counts["input_error"], "crashes": counts["crash"],
            "over_memory": counts["memory"], "slow": counts["slow"], "signatures": dict(total["signatures"]),
            "examples": total["examples"], "slowest_seconds": round(total["slowest"][0], 3),
            "slowest_index": total["slowest"][1], "slowest_wall_seconds": round(total["slowest_wall"][0], 3),
            "slowest_wall_index": total["slowest_wall"][1], "seconds": round(seconds, 1),
            "max_vm_growth_mb": round(total["vm_growth"][0] / 1024), "max_vm_growth_index": total["vm_growth"][1],
            "lost_chunks": total["lost"],
            "inputs_per_second": round(n / seconds, 1) if seconds else None, "loadavg": os.getloadavg()}


def _collect(pool: Any, ranges: list[tuple[Any, ...]], total: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Results of the chunks in order; a chunk whose worker vanished (native crash, kill) or hangs is listed as lost."""
    pending = [(r[1], pool.apply_async(run_range, r)) for r in ranges]
    for first, result in pending:
        try:
            yield result.get(timeout=LOST_AFTER_S)
        except mp.TimeoutError:
            total["lost"].append(first)


def main() -> int:
    """Command line: run a campaign and print its JSON summary; exit 1 on any contract violation."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=10_000, help="number of inputs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--start", type=int, default=0, help="first input index (resume or split a campaign)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (0: in this process, no 2 GB cap)")
    parser.add_argument("--chunk", type=int, default=500, help="inputs per worker task")
    parser.add_argument("--crash-dir", default=None, help="copy crashing inputs here")
    parser.add_argument("--out", default=None, help="also write the summary JSON here")
    args = parser.parse_args()
    summary = campaign(args.n, args.seed, start=args.start, workers=args.workers, chunk=args.chunk,
                       crash_dir=args.crash_dir, progress=True)
    text = json.dumps(summary, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 1 if summary["crashes"] or summary["over_memory"] or summary["slow"] or summary["lost_chunks"] else 0


if __name__ == "__main__":
    sys.exit(main())

"""Does the codestream check vouch only for JPEG-LS frames CharLS survives? Mutate a valid frame and find out.

Mutates the fuzz seed's JPEG-LS frame (``bench/fuzz_seeds.py``: 16x16, 16-bit) with header-byte edits, bit flips,
truncations, cuts and injected markers; classifies each with :func:`medanomaly.io.codestream.check_frame`
(refused / vouched / unvouched), then decodes every vouched frame with CharLS itself (pyjpegls, no check) in child
processes under a 2 GiB address-space cap, restarting the child after a crash or a frame that takes over 10 s.
A vouched frame that crashes or hangs CharLS would be a hole in the check. ::

    nice -n 19 .venv/bin/python bench/jpegls_sweep.py --n 20000 --seed 4
"""

from __future__ import annotations

import argparse
import collections
import json
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fuzz_seeds import write_seeds

from medanomaly.io import codestream

HANG_S = 10.0
_CHILD = """
import resource, sys
import _CharLS
streams = __import__("pickle").load(open(sys.argv[1], "rb"))
with open("/proc/self/status") as status:
    mapped = next(int(line.split()[1]) for line in status if line.startswith("VmSize:")) * 1024
resource.setrlimit(resource.RLIMIT_AS, (mapped + (2 << 30), mapped + (2 << 30)))
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
for index in range(int(sys.argv[2]), len(streams)):
    print(index, flush=True)
    try:
        _CharLS._decode(streams[index])
    except Exception:
        pass
"""
_VALUES = (0, 1, 2, 3, 7, 8, 15, 16, 17, 0x7F, 0x80, 0xFE, 0xFF)


def mutate(frame: bytes, rng: np.random.Generator) -> bytes:
    """One mutated copy of ``frame``."""
    data, kind = bytearray(frame), rng.random()
    if kind < 0.5:  # marker-segment bytes (SOF55, LSE, SOS)
        for _ in range(int(rng.integers(1, 3))):
            data[int(rng.integers(2, 45))] = int(rng.choice(_VALUES)) if rng.random() < 0.6 else int(rng.integers(256))
    elif kind < 0.75:
        for _ in range(int(rng.integers(1, 9))):
            data[int(rng.integers(len(data)))] ^= 1 << int(rng.integers(8))
    elif kind < 0.8:
        data = data[: int(rng.integers(2, len(data)))]
    elif kind < 0.9:
        cut = int(rng.integers(2, len(data)))
        data = data[:cut] + data[cut + int(rng.integers(1, 20)) :]
    else:
        at = int(rng.integers(len(data)))
        data[at : at + 2] = bytes([0xFF, int(rng.integers(0x80, 0x100))])
    return bytes(data)


def decode_all(streams: list[bytes]) -> list[tuple[int, str]]:
    """Decode ``streams`` with CharLS in child processes; return (index, "crash rc" | "hang") of the failures."""
    failures: list[tuple[int, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        source, progress = Path(tmp) / "streams.pkl", Path(tmp) / "progress.txt"
        source.write_bytes(pickle.dumps(streams))
        start = 0
        while start < len(streams):
            with progress.open("w") as out:
                child = subprocess.Popen([sys.executable, "-c", _CHILD, str(source), str(start)], stdout=out)
                last, since = -1, time.time()
                while child.poll() is None:
                    time.sleep(0.2)
                    seen = progress.read_text().split()
                    current = int(seen[-1]) if seen else -1
                    if current != last:
                        last, since = current, time.time()
                    elif time.time() - since > HANG_S:
                        child.kill()
                        child.wait()
            if child.returncode == 0:
                break
            index = int(progress.read_text().split()[-1])
            failures.append((index, "hang" if child.returncode == -9 else f"crash {child.returncode}"))
            start = index + 1
    return failures


def main() -> int:
    """Command line: print the verdict counts and the decoder failures among vouched frames as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    import pydicom
    from pydicom.encaps import generate_frames

    with tempfile.TemporaryDirectory() as tmp:
        seeds = write_seeds(Path(tmp))
        path = next(p for p in seeds if p.name == "jpegls.dcm")
        frame = next(generate_frames(pydicom.dcmread(path).PixelData, number_of_frames=1))
    header = codestream.Frame(16, 16, 1, 16)
    rng = np.random.default_rng(args.seed)
    streams = [mutate(frame, rng) for _ in range(args.n)]
    verdicts = [codestream.check_frame(s, header, True) for s in streams]
    kinds = ["refused" if v.problem else "vouched" if v.vouched else "unvouched" for v in verdicts]
    vouched = [s for s, kind in zip(streams, kinds, strict=True) if kind == "vouched"]
    failures = decode_all(vouched)
    print(json.dumps({"inputs": args.n, "seed": args.seed, "verdicts": dict(collections.Counter(kinds)),
                      "vouched_decoded": len(vouched), "vouched_crashes_or_hangs": failures}))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

"""Decode compressed DICOM pixel data in a separate process, so that a decoder's native crash cannot end ours.

Used only for frames whose codestream :mod:`medanomaly.io.codestream` cannot vouch for (valid files decode in
process, at no extra cost). The child is a fresh interpreter running :data:`_CHILD` (a subprocess, not
multiprocessing, so that it also works inside daemonic pool workers; it imports only numpy and pydicom): it gets the
pixel-describing elements of the dataset on stdin, decodes them under an address-space limit and a time limit, and
writes the array back in numpy's ``.npy`` format (no pickle is read by the parent). A crash, a kill, a time-out or
an allocation above the limit becomes an :class:`~medanomaly.errors.InputError` naming the file.
"""

from __future__ import annotations

import io
import pickle
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from medanomaly.errors import InputError

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

TIMEOUT_S = 60.0
MEMORY_MARGIN = 1 << 30  # the child's address space: what it maps after its imports + 4x the pixels + 1 GiB
_KEYWORDS = ("Rows", "Columns", "SamplesPerPixel", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation",
             "PhotometricInterpretation", "PlanarConfiguration", "NumberOfFrames", "PixelData")
_HINT = ("the compressed pixel data is corrupt: export the image again, or convert it (gdcmconv --raw in.dcm out.dcm) "
         "and check the result")


def decode(path: Path, ds: Dataset) -> np.ndarray:
    """``ds.pixel_array``, computed in a child process.

    Raises:
        InputError: The decoder crashed, ran out of its memory limit, took longer than :data:`TIMEOUT_S`, or
            refused the data.
    """
    payload = pickle.dumps((_pixel_dataset(ds), _budget(ds)))
    try:
        done = subprocess.run([sys.executable, "-c", _CHILD], input=payload, capture_output=True, timeout=TIMEOUT_S,
                              check=False)
    except subprocess.TimeoutExpired as err:
        problem = f"decoding the compressed pixel data took more than {TIMEOUT_S:.0f} s (stopped)"
        raise InputError(path, problem, _HINT) from err
    syntax = getattr(ds.file_meta.get("TransferSyntaxUID"), "name", "compressed")
    if done.returncode < 0:
        name = signal.Signals(-done.returncode).name if -done.returncode in signal.valid_signals() else "a signal"
        problem = f"the {syntax} decoder crashed on this file (ended by {name}; caught in a separate process)"
        raise InputError(path, problem, _HINT)
    if done.returncode != 0:
        detail = (done.stderr.decode(errors="replace").strip().splitlines() or ["no message"])[-1][:160]
        what = "refused the pixel data" if done.returncode == 2 else "failed in its separate process"
        raise InputError(path, f"the {syntax} decoder {what} ({detail})", _HINT)
    return np.lib.format.read_array(io.BytesIO(done.stdout), allow_pickle=False)


def _pixel_dataset(ds: Dataset) -> Dataset:
    """A copy holding only what decoding needs: the file meta and the pixel-describing elements."""
    from pydicom.dataset import Dataset, FileMetaDataset

    small = Dataset()
    small.file_meta = FileMetaDataset(ds.file_meta)
    for keyword in _KEYWORDS:
        if keyword in ds:
            small[keyword] = ds[keyword]
    return small


def _budget(ds: Dataset) -> int:
    """Bytes of address space the child may add: 4x the announced pixels (as float64 at worst) + 1 GiB."""
    announced = 1
    for keyword in ("Rows", "Columns", "SamplesPerPixel", "NumberOfFrames"):
        try:
            announced *= max(1, int(ds.get(keyword) or 1))
        except (TypeError, ValueError):
            pass
    return 4 * 8 * announced + MEMORY_MARGIN



# The child: read (dataset, budget) from stdin, cap its address space at what it maps now + budget (no core file),
# decode, and write the array to stdout as .npy; a Python exception is reported on stderr with exit status 2.
_CHILD = """
import io, pickle, sys
import numpy as np
import pydicom
dataset, budget = pickle.loads(sys.stdin.buffer.read())
try:
    import resource
    with open("/proc/self/status") as status:
        mapped = next(int(line.split()[1]) for line in status if line.startswith("VmSize:")) * 1024
    resource.setrlimit(resource.RLIMIT_AS, (mapped + budget, mapped + budget))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
except (ImportError, OSError, StopIteration, ValueError):
    pass
try:
    pixels = dataset.pixel_array
except Exception as err:
    sys.stderr.write(f"{type(err).__name__}: {str(err).strip()[:300]}")
    sys.exit(2)
out = io.BytesIO()
np.lib.format.write_array(out, np.ascontiguousarray(pixels), allow_pickle=False)
sys.stdout.buffer.write(out.getvalue())
"""

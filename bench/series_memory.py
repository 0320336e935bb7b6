"""Peak memory of reading and scoring a long CT series: synthetic 512x512 slices through ``pipeline.score_path``.

Writes synthetic CT series (uint16 stored values, RescaleIntercept -1024, so HU; a body ellipse with noise; one
folder per slice count, kept in ``--workdir`` for re-runs), a small conv_ae model (128 px, CT window, 3D median
filter of the maps), then reads and scores each series in a fresh process and reports that process's peak resident
set size (``getrusage``: ``ru_maxrss``), its RSS after imports and model load, and the seconds of reading and
scoring. ::

    nice -n 19 .venv/bin/python bench/series_memory.py --slices 28 300 1000 --out /tmp/series_memory.json

``MEDANOMALY_MAX_VOXELS`` is raised for the run when a series is above the reader's default voxel limit.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def write_series(folder: Path, n_slices: int, size: int = 512, seed: int = 0) -> Path:
    """A CT series of ``n_slices`` slices of ``size`` x ``size`` in ``folder`` (skipped if already complete)."""
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    if folder.is_dir() and len(list(folder.glob("*.dcm"))) == n_slices:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    body = ((yy - size / 2) / (0.42 * size)) ** 2 + ((xx - size / 2) / (0.35 * size)) ** 2 < 1
    study, series = generate_uid(), generate_uid()
    for index in range(n_slices):
        hu = np.where(body, 40.0, -1000.0) + rng.normal(0, 15, (size, size))
        stored = np.clip(hu + 1024, 0, 4095).astype(np.uint16)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(folder / f"{index:04d}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.PatientID = "CT", study, series, "BENCH"
        ds.InstanceNumber, ds.ImagePositionPatient = index + 1, [0.0, 0.0, float(index)]
        ds.ImageOrientationPatient, ds.PixelSpacing, ds.SliceThickness = [1, 0, 0, 0, 1, 0], [0.7, 0.7], 1.0
        ds.Rows = ds.Columns = size
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        ds.PixelData = stored.tobytes()
        pydicom.dcmwrite(ds.filename, ds, enforce_file_format=True)
    return folder


def write_model(directory: Path, resolution: int = 128) -> Path:
    """A small conv_ae fitted for one epoch on random slices, with a threshold: enough to run the scoring path."""
    import torch

    from medanomaly.model import Model, Postprocessing
    from medanomaly.registry import create
    from medanomaly.thresholds import Threshold
    from medanomaly.training import TrainConfig, Trainer
    from medanomaly.transforms import Preprocessing

    if (directory / "model.json").exists():
        return directory
    torch.manual_seed(0)
    detector = create("conv_ae", depth=3, width=8, latent_dim=16)
    detector.fit(torch.rand(16, 1, resolution, resolution),
                 trainer=Trainer(TrainConfig(max_epochs=1, batch_size=8, progress=False)))
    model = Model(detector, Preprocessing(resolution=resolution, window="lung"), Postprocessing(median_size=5),
                  Threshold(0.5, "fixed"))
    model.save(directory)
    return directory


def measure(model_dir: Path, series: Path) -> dict[str, float]:
    """Child side: load the model, read + score the series, return peak RSS and timings."""
    from medanomaly.io import read_study
    from medanomaly.model import Model
    from medanomaly.pipeline import score_study

    model = Model.load(model_dir, device="cpu")
    base = _rss_mb()
    started = time.perf_counter()
    study = read_study(series)
    read_s = time.perf_counter() - started
    shape, dtype = list(study.pixels.shape), str(study.pixels.dtype)
    result = score_study(model, study)
    score_s = time.perf_counter() - started - read_s
    return {"slices": shape[0], "shape": shape, "dtype": dtype, "score": result.score, "rss_after_load_mb": base,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "read_s": round(read_s, 2),
            "score_s": round(score_s, 2)}


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024


def main() -> int:
    """Command line: write the series and the model, measure each series in a fresh process, print JSON rows."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--slices", type=int, nargs="+", default=[28, 300, 1000])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--workdir", default="/tmp/medanomaly_series_memory")
    parser.add_argument("--out", default=None)
    parser.add_argument("--child", nargs=2, metavar=("MODEL", "SERIES"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(Path(args.child[0]), Path(args.child[1]))))
        return 0
    work = Path(args.workdir)
    model_dir = write_model(work / "model")
    env = {**os.environ, "MEDANOMALY_MAX_VOXELS": str(max(args.slices) * args.size**2 * 2)}
    rows = []
    for n in args.slices:
        series = write_series(work / f"ct_{n}_{args.size}", n, args.size)
        done = subprocess.run([sys.executable, __file__, "--child", str(model_dir), str(series)], env=env,
                              capture_output=True, text=True, check=True)
        row = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(json.dumps(row), flush=True)
    summary = {"rows": rows, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "loadavg": os.getloadavg(),
               "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"}
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

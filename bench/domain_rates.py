"""How often the domain check refuses in-domain and out-of-domain studies (the table of docs/domain.md).

Builds a chest X-ray domain the way ``medanomaly train`` does (train NORMAL images of zhanglab_chest_xray, the
training plan's held-out 10 % as held-out normals, declared DX/CR CHEST) without training a detector (the check does
not depend on the method), then counts the studies each set has refused::

    python bench/domain_rates.py [--data ../shared/data] [--resolution 128]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from medanomaly.data.datasets import load_index
from medanomaly.data.loading import load_images
from medanomaly.domain import Domain, build_domain, check_study
from medanomaly.fitting import FitOptions, plan_training
from medanomaly.io import find_studies, read_study
from medanomaly.transforms import Preprocessing


def chest_domain(data: Path, preprocessing: Preprocessing) -> Domain:
    """The domain a model trained on zhanglab train NORMAL (one-class protocol) records."""
    index = load_index(data / "zhanglab_chest_xray")
    plan = plan_training(index, frozenset({"normal"}), FitOptions())
    normal = load_images(plan.normal, preprocessing, progress=False)
    held_out = load_images(plan.calibration_normal, preprocessing, progress=False)
    return build_domain(
        normal.facts + held_out.facts,
        normal.images.numpy(),
        held_out.images.numpy(),
        channels=preprocessing.channels,
        modality="DX,CR",
        body_part="CHEST",
    )


def refused(domain: Domain, preprocessing: Preprocessing, paths: list[Path]) -> tuple[int, np.ndarray, dict]:
    """(number refused, appearance distances, first reason -> count) over ``paths``."""
    count, distances, reasons = 0, [], {}
    for path in paths:
        study = read_study(path)
        images, _ = preprocessing.apply(study)
        check = check_study(domain, study, images)
        distances.append(check.details.get("appearance", {}).get("distance", np.nan))
        if not check.in_domain:
            count += 1
            reason = check.reasons[0].split("(")[0].strip()
            reasons[reason] = reasons.get(reason, 0) + 1
    return count, np.asarray(distances, dtype=float), reasons


def main() -> None:
    """Print one line per set."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--resolution", type=int, default=128)
    args = parser.parse_args()
    preprocessing = Preprocessing(resolution=args.resolution)
    started = time.monotonic()
    domain = chest_domain(args.data, preprocessing)
    quantiles = {k: round(v, 2) for k, v in domain.appearance.quantiles.items()}
    print(f"domain in {time.monotonic() - started:.0f} s: bound {domain.appearance.bound:.2f}, normals {quantiles}")
    zhang = load_index(args.data / "zhanglab_chest_xray")
    sets = {
        "zhanglab test NORMAL (in domain)": [s.path for s in zhang.select(split="test", label="NORMAL")],
        "zhanglab test PNEUMONIA (in domain)": [s.path for s in zhang.select(split="test", label="PNEUMONIA")],
        "covid_ct_cropped slices (CT)": find_studies(args.data / "covid_ct_cropped"),
        "ct_dicom_dcm_qa_ct series (CT)": sorted((args.data / "ct_dicom_dcm_qa_ct" / "dicom").iterdir()),
        "ct_dicom_dcm_qa_ct slices (CT)": sorted((args.data / "ct_dicom_dcm_qa_ct" / "dicom").glob("*/*")),
        "pneumoniamnist test (28 px chest X-ray)": find_studies(args.data / "pneumoniamnist" / "test"),
    }
    for name, paths in sets.items():
        count, distances, reasons = refused(domain, preprocessing, paths)
        print(
            f"{name}: {count}/{len(paths)} out of domain ({100 * count / len(paths):.1f} %); appearance distance "
            f"min {np.nanmin(distances):.1f} median {np.nanmedian(distances):.1f} max {np.nanmax(distances):.1f}; "
            f"{reasons}"
        )


if __name__ == "__main__":
    main()

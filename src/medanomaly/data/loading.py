"""Read and preprocess the samples of a data set into one tensor, skipping (and reporting) bad files."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from medanomaly.data.datasets import Sample
from medanomaly.domain import study_facts
from medanomaly.errors import InputError, printable
from medanomaly.io import read_study
from medanomaly.transforms import Preprocessing

logger = logging.getLogger(__name__)


@dataclass
class Failure:
    """A study that could not be used, and why."""

    path: str
    error: str

    def to_dict(self) -> dict[str, str]:
        """JSON-able form."""
        return {"path": self.path, "error": self.error}


@dataclass
class LoadedImages:
    """Preprocessed slices of several samples.

    Attributes:
        images: (N, C, R, R) float32 in [0, 1]; a volume contributes one row per slice.
        owners: (N,) index into ``samples`` of the sample each row came from.
        samples: The samples that loaded.
        failures: The samples that did not, with the reason.
        facts: :func:`medanomaly.domain.study_facts` of each loaded sample (what a model's domain records).
    """

    images: Tensor
    owners: np.ndarray
    samples: list[Sample]
    failures: list[Failure] = field(default_factory=list)
    facts: list[dict] = field(default_factory=list)


def load_images(
    samples: list[Sample], preprocessing: Preprocessing, *, progress: bool = True, desc: str = "load"
) -> LoadedImages:
    """Read and prepare ``samples``; an unreadable one is logged, listed in ``failures`` and skipped."""
    arrays, owners, loaded, failures, facts = [], [], [], [], []
    for sample in tqdm(samples, desc=desc, disable=not progress or not samples, unit="study"):
        try:
            study = read_study(sample.path, color=preprocessing.channels == 3)
            batch, _ = preprocessing.apply(study)
        except (InputError, ValueError) as error:
            logger.warning("skipped %s", error)
            failures.append(Failure(str(sample.path), str(error)))
            continue
        owners += [len(loaded)] * len(batch)
        arrays.append(batch)
        loaded.append(sample)
        facts.append(study_facts(study))
    channels, size = preprocessing.channels, preprocessing.resolution
    images = torch.from_numpy(np.concatenate(arrays)) if arrays else torch.empty(0, channels, size, size)
    return LoadedImages(images, np.asarray(owners, dtype=np.int64), loaded, failures, facts)


def describe_failures(failures: list[Failure]) -> str:
    """A short block listing skipped files, for the end of a command's output."""
    lines = [f"skipped {len(failures)} unreadable stud{'y' if len(failures) == 1 else 'ies'}:"]
    lines += [f"  {printable(Path(f.path).name)}: {printable(f.error)}" for f in failures]
    return "\n".join(lines)

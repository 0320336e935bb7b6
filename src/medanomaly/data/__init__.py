"""Data sets (folder layouts and manifests), loading them into tensors, and synthetic phantoms."""

from medanomaly.data.datasets import DatasetIndex, Sample, fingerprint, load_index
from medanomaly.data.loading import LoadedImages, load_images

__all__ = ["DatasetIndex", "LoadedImages", "Sample", "fingerprint", "load_images", "load_index"]

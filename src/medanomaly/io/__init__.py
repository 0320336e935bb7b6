"""Image readers: PNG/JPEG/BMP/TIFF, DICOM files and series folders, NIfTI volumes -> :class:`~medanomaly.types.Study`.

pydicom and nibabel are imported only when a DICOM or NIfTI file is read.
"""

from medanomaly.io.reader import find_studies, inspect_study, is_readable, read_study, scan_studies

__all__ = ["find_studies", "inspect_study", "is_readable", "read_study", "scan_studies"]

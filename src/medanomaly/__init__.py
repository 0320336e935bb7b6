"""medanomaly: anomaly detection in medical images without lesion annotations.

Decision support only: a radiologist decides.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("medanomaly")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]

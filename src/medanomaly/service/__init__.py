"""The radiologist's workstation: FastAPI web service, UI, background scoring, reports and the feedback loop.

Install with ``pip install 'medanomaly[service]'`` and start with ``medanomaly serve --model MODEL_DIR``.
Importing this package is cheap; the web stack is imported when :func:`create_app` or ``Settings`` is used.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Settings", "create_app"]


def create_app(settings: Any = None) -> Any:
    """Build the FastAPI application (see :func:`medanomaly.service.app.create_app`)."""
    from medanomaly.service.app import create_app as _create_app

    return _create_app(settings)


def __getattr__(name: str) -> Any:
    if name == "Settings":
        from medanomaly.service.settings import Settings

        return Settings
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)

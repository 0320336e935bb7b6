"""Where the PACS is and how to talk to it: defaults -> settings file (TOML/YAML) -> environment -> CLI flags.

Environment variables: ``MEDANOMALY_PACS_URL`` (DICOMweb root, e.g. ``http://pacs:8042/dicom-web``),
``MEDANOMALY_PACS_USER``, ``MEDANOMALY_PACS_PASSWORD``, ``MEDANOMALY_PACS_WORKDIR`` (outbox, downloads, watcher
state) and ``MEDANOMALY_PACS_SETTINGS`` (a settings file). A settings file holds the same keys as
:class:`PacsSettings`, at top level or under a ``pacs`` table::

    [pacs]
    url = "http://127.0.0.1:8042/dicom-web"
    user = "ai"
    password = "secret"
    modalities = ["CT", "CR", "DX"]
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

ENV_PREFIX = "MEDANOMALY_PACS_"
SETTINGS_ENV = "MEDANOMALY_PACS_SETTINGS"
_ENV_KEYS = (
    "url",
    "user",
    "password",
    "workdir",
    "timeout",
    "retries",
    "backoff",
    "backoff_max",
    "ca_bundle",
    "uid_root",
    "stable_seconds",
    "retention_days",
    "delete_superseded",
    "orthanc_url",
    "ae_title",
    "listen_port",
    "dimse_peer",
)
_FLOATS = ("timeout", "backoff", "backoff_max", "interval", "stable_seconds", "retention_days", "study_backoff_max")
_BOOLS = ("keep_downloads", "delete_superseded")


def default_workdir() -> Path:
    """``$XDG_DATA_HOME/medanomaly/pacs`` (``~/.local/share/medanomaly/pacs``): outbox, downloads, watcher state."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "medanomaly" / "pacs"


@dataclass(frozen=True)
class PacsSettings:
    """Connection and behaviour of the PACS link.

    Attributes:
        url: DICOMweb root of the PACS (Orthanc: ``http://HOST:8042/dicom-web``); empty = not configured.
        user: HTTP basic-auth user, or None for no authentication.
        password: HTTP basic-auth password (never shown in ``repr`` or logs).
        workdir: Folder holding the outbox (results waiting to be sent), downloaded studies and watcher state.
        timeout: Seconds to wait for one HTTP answer.
        retries: Attempts per request before the PACS counts as unavailable (>= 1).
        backoff: Seconds to wait after the first failed attempt; doubles after each further failure.
        backoff_max: Longest single wait, in seconds.
        modalities: Modalities the watcher scores (series of other modalities are left alone).
        interval: Seconds between two polls of ``pacs watch``.
        keep_downloads: Keep the downloaded source images after scoring (default: delete them).
        ca_bundle: CA file (PEM) that signed the PACS's TLS certificate (None: the system's CAs).
        uid_root: The organisation's UID root for result UIDs (None: pydicom's ``1.2.826.0.1.3680043.8.498.``).
        stable_seconds: A study is scored once no instance arrived for this long (Orthanc's own StableAge idea).
        retention_days: Sent results are deleted from the outbox after this many days (the index keeps their UIDs).
        delete_superseded: Also delete superseded results through the Orthanc REST API (the KOS is always sent).
        orthanc_url: Orthanc REST root for that deletion (default: ``url`` without its ``/dicom-web`` tail).
        since: First study date the watcher looks at (None: the date of its first start, remembered).
        study_backoff_max: Longest wait, in seconds, before a failed study is tried again (doubling from
            ``interval``).
        ae_title: Our DICOM AE title (``pacs listen`` answers to it, C-STORE of results calls from it).
        listen_host, listen_port: Where ``pacs listen`` accepts C-STORE.
        dimse_peer: ``AET@HOST:PORT`` to send results to with C-STORE instead of STOW-RS (empty: DICOMweb).
    """

    url: str = ""
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    workdir: Path = field(default_factory=default_workdir)
    timeout: float = 20.0
    retries: int = 4
    backoff: float = 0.5
    backoff_max: float = 8.0
    modalities: tuple[str, ...] = ("CT", "CR", "DX")
    interval: float = 30.0
    keep_downloads: bool = False
    ca_bundle: str | None = None
    uid_root: str | None = None
    stable_seconds: float = 60.0
    retention_days: float = 7.0
    delete_superseded: bool = False
    orthanc_url: str = ""
    since: str | None = None
    study_backoff_max: float = 3600.0
    ae_title: str = "MEDANOMALY"
    listen_host: str = "0.0.0.0"
    listen_port: int = 11112
    dimse_peer: str = ""

    def __post_init__(self) -> None:
        if self.retries < 1:
            msg = f"PACS retries must be at least 1, got {self.retries}"
            raise ValueError(msg)
        if min(self.timeout, self.backoff, self.backoff_max, self.interval, self.stable_seconds) < 0:
            msg = "PACS timeout, backoff, backoff_max, interval and stable_seconds must not be negative"
            raise ValueError(msg)
        if self.uid_root and not _is_uid_root(self.uid_root):
            msg = f"uid_root {self.uid_root!r} is not a UID root (digits and dots, at most 40 characters, e.g. 1.2.3)"
            raise ValueError(msg)

    @property
    def rest_url(self) -> str:
        """Orthanc's REST root: ``orthanc_url``, else ``url`` without a trailing ``/dicom-web``."""
        return (self.orthanc_url or self.url.rstrip("/").removesuffix("/dicom-web")).rstrip("/")

    @property
    def inbox_dir(self) -> Path:
        """Folder where ``pacs listen`` writes the instances it receives (``<Study>/<Series>/<SOP>.dcm``)."""
        return Path(self.workdir) / "inbox"

    @property
    def outbox_dir(self) -> Path:
        """Folder of the outbox (DICOM files + index)."""
        return Path(self.workdir) / "outbox"

    @property
    def download_dir(self) -> Path:
        """Folder where pulled studies are written before scoring."""
        return Path(self.workdir) / "downloads"

    def backoff_delays(self) -> list[float]:
        """Waits between the ``retries`` attempts: ``backoff * 2**k`` capped at ``backoff_max``."""
        return [min(self.backoff * 2**k, self.backoff_max) for k in range(self.retries - 1)]


def _is_uid_root(root: str) -> bool:
    parts = root.rstrip(".").split(".")
    return len(root) <= 40 and all(p.isdigit() and (p == "0" or not p.startswith("0")) for p in parts)


def _coerce(name: str, value: Any) -> Any:
    """Convert a file/env/CLI value to the type of the field ``name``."""
    if value is None:
        return None
    if name == "workdir":
        return Path(str(value)).expanduser()
    if name == "modalities":
        items = value.split(",") if isinstance(value, str) else list(value)
        return tuple(str(item).strip().upper() for item in items if str(item).strip())
    if name in _FLOATS:
        return float(value)
    if name in ("retries", "listen_port"):
        return int(value)
    if name in _BOOLS:
        return value if isinstance(value, bool) else str(value).strip().lower() in ("1", "true", "yes", "on")
    return str(value)


def read_settings_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML (``.toml``) or YAML (``.yaml``/``.yml``) settings file into PacsSettings keys.

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: It cannot be parsed or holds unknown keys (named, with the file).
    """
    path = Path(path)
    if not path.is_file():
        msg = f"{path}: PACS settings file not found; check the path or MEDANOMALY_PACS_SETTINGS"
        raise FileNotFoundError(msg)
    try:
        text = path.read_text()
        data = tomllib.loads(text) if path.suffix.lower() == ".toml" else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError, UnicodeDecodeError) as error:
        msg = f"{path}: cannot parse the PACS settings ({str(error).splitlines()[0]}); fix the file's syntax"
        raise ValueError(msg) from None
    data = data or {}
    if isinstance(data.get("pacs"), dict):
        data = data["pacs"]
    known = {f.name for f in fields(PacsSettings)}
    unknown = sorted(set(data) - known)
    if unknown:
        msg = f"{path}: unknown PACS settings {unknown}; known keys: {sorted(known)}"
        raise ValueError(msg)
    return {key: _coerce(key, value) for key, value in data.items()}


def _from_env(environ: dict[str, str]) -> dict[str, Any]:
    values = {}
    for key in _ENV_KEYS:
        raw = environ.get(ENV_PREFIX + key.upper())
        if raw is not None and raw != "":
            values[key] = _coerce(key, raw)
    return values


def load_settings(
    path: str | Path | None = None, environ: dict[str, str] | None = None, **overrides: Any
) -> PacsSettings:
    """Resolve the PACS settings: defaults -> file -> environment -> ``overrides`` (None values are ignored).

    Args:
        path: Settings file; default ``$MEDANOMALY_PACS_SETTINGS`` when set.
        environ: Environment to read (default ``os.environ``).
        **overrides: Values from CLI flags, by PacsSettings field name.
    """
    environ = dict(os.environ if environ is None else environ)
    path = path or environ.get(SETTINGS_ENV) or None
    values: dict[str, Any] = read_settings_file(path) if path else {}
    values.update(_from_env(environ))
    values.update({key: _coerce(key, value) for key, value in overrides.items() if value is not None})
    return replace(PacsSettings(), **values)

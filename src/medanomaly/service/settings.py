"""Service settings, read from ``MEDANOMALY_*`` environment variables or given by ``medanomaly serve`` flags."""

from __future__ import annotations

import secrets
from functools import cached_property
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

_SECRET_FILE = "secret_key"
_DB_FILE = "medanomaly.db"


class Settings(BaseSettings):
    """Everything the web service needs to know at start-up.

    Attributes:
        data_dir: Folder holding uploads, result arrays, reports, the SQLite database and the session secret.
        db_url: SQLAlchemy URL; default ``sqlite:///<data_dir>/medanomaly.db`` (a PostgreSQL URL works too).
        model_dirs: Model directories to serve, each ``DIR`` or ``NAME=DIR``; the first is the default model.
        device: Torch device for scoring (``cpu``, ``auto``, ``cuda``).
        max_upload_mb: Largest accepted upload, in MiB.
        max_archive_files: Most members a zip upload may hold.
        max_uncompressed_mb: Largest total uncompressed size of a zip upload, in MiB.
        max_compression_ratio: Largest uncompressed/compressed size ratio of a zip (zip-bomb guard).
        secret_key: Signs session cookies; default: a random key kept in ``<data_dir>/secret_key``.
        session_hours: Absolute session lifetime from the log-in.
        session_idle_minutes: A session unused this long ends (background polling does not count as use).
        https_only: Mark the session cookie ``Secure`` (set it behind HTTPS).
        password_time_cost: Argon2 time cost.
        password_memory_kib: Argon2 memory cost in KiB.
        password_checks: Password checks (Argon2) run at the same time; more wait, so a burst cannot starve the rest.
        password_queue: Password checks allowed to wait; beyond that a log-in is answered 503 at once.
        login_free_failures: Failed log-ins of a user name before each further try must wait.
        login_address_free_failures: Failed log-ins from one client address before each further try must wait.
        login_delay_seconds: The first wait; it doubles with each further failure.
        login_user_lockout: Failed log-ins of one user name (known or not) that lock it.
        login_address_lockout: Failed log-ins from one client address that lock it (higher: a shared reading room).
        login_lockout_minutes: How long a lock lasts (an admin can lift it sooner); also how long failures count.
        api_docs: Serve the API description (``/docs``, ``/openapi.json``) to logged-in users.
        start_worker: Run the background scoring worker (tests may turn it off and run jobs by hand).
        poll_seconds: How often the worker looks for queued jobs besides being woken up.
        recalibration_min_per_class: Fewest labelled normal and abnormal studies a new version may be fitted on.
        recalibration_folds: Folds of the cross-validation that measures a new version on unseen cases.
        triage_sensitivity: Sensitivity the triage rule-out point keeps (scores at or below it: likely normal).
        triage_max_wait_minutes: An unread study waiting longer rises to the top of the priority order.
    """

    model_config = SettingsConfigDict(env_prefix="MEDANOMALY_", frozen=True)

    data_dir: Path = Path("medanomaly-data")
    db_url: str | None = None
    model_dirs: tuple[str, ...] = ()
    device: str = "cpu"
    max_upload_mb: float = Field(512.0, gt=0)
    max_archive_files: int = Field(4000, gt=0)
    max_uncompressed_mb: float = Field(4096.0, gt=0)
    max_compression_ratio: float = Field(200.0, gt=1)
    secret_key: str | None = None
    session_hours: float = Field(12.0, gt=0)
    session_idle_minutes: float = Field(30.0, gt=0)
    https_only: bool = False
    password_time_cost: int = Field(3, ge=1)
    password_memory_kib: int = Field(65536, ge=8)
    password_checks: int = Field(2, ge=1)
    password_queue: int = Field(16, ge=0)
    login_free_failures: int = Field(3, ge=0)
    login_address_free_failures: int = Field(10, ge=0)
    login_delay_seconds: float = Field(1.0, ge=0)
    login_user_lockout: int = Field(10, ge=1)
    login_address_lockout: int = Field(30, ge=1)
    login_lockout_minutes: float = Field(15.0, gt=0)
    api_docs: bool = True
    start_worker: bool = True
    poll_seconds: float = Field(2.0, gt=0)
    recalibration_min_per_class: int = Field(10, ge=2)
    recalibration_folds: int = Field(5, ge=2)
    triage_sensitivity: float = Field(0.98, gt=0, le=1)
    triage_max_wait_minutes: float = Field(240.0, gt=0)

    @property
    def database_url(self) -> str:
        """The SQLAlchemy URL in force."""
        return self.db_url or f"sqlite:///{(self.data_dir / _DB_FILE).resolve()}"

    @property
    def max_upload_bytes(self) -> int:
        """``max_upload_mb`` in bytes."""
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def max_uncompressed_bytes(self) -> int:
        """``max_uncompressed_mb`` in bytes."""
        return int(self.max_uncompressed_mb * 1024 * 1024)

    @cached_property
    def session_secret(self) -> str:
        """``secret_key``, or a random key created once and kept (mode 0600) in the data directory."""
        if self.secret_key:
            return self.secret_key
        path = self.data_dir / _SECRET_FILE
        if not path.is_file():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_urlsafe(48))
            path.chmod(0o600)
        return path.read_text().strip()


def parse_model_spec(spec: str) -> tuple[str, Path]:
    """``NAME=DIR`` or ``DIR`` (name = the folder's name) -> (name, path)."""
    name, sep, path = spec.partition("=")
    if sep and name and "/" not in name:
        return name.strip(), Path(path.strip())
    folder = Path(spec)
    return (folder.resolve().name or "model"), folder

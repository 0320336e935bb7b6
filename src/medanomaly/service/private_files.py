"""The data folder's hygiene: private permissions, no leftover temporary uploads, no server paths in messages.

The data folder holds the database (password hashes), the uploaded studies and the reports: only the service's
own system user may read them. :func:`make_private` sets the process umask to 077 (new files 0600, new folders
0700; SQLite gives its ``-wal``/``-shm`` files the database file's mode) and tightens what already exists.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import stat
from pathlib import Path

logger = logging.getLogger(__name__)
TMP_FOLDER = "tmp"
UPLOAD_PREFIX = "upload-"
_ABSOLUTE_PATH = re.compile(r"(?<![\w.])(?:/[\w.@+-]+){2,}/?|[A-Za-z]:\\[^\s'\"]+")


def make_private(data_dir: Path, *files: Path) -> None:
    """Umask 077 for this process; ``data_dir`` and everything in it (and ``files``) owner-only (0700/0600)."""
    os.umask(0o077)
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    _restrict(data_dir, 0o700)
    for root, folders, names in os.walk(data_dir):
        for folder in folders:
            _restrict(Path(root) / folder, 0o700)
        for name in names:
            _restrict(Path(root) / name, 0o600)
    for file in files:
        if file.is_file():
            _restrict(file, 0o600)


def _restrict(path: Path, mode: int) -> None:
    info = path.lstat()
    if stat.S_ISLNK(info.st_mode) or stat.S_IMODE(info.st_mode) & 0o077 == 0:
        return
    path.chmod(stat.S_IMODE(info.st_mode) & ~0o077 | (mode & 0o700))


def clean_leftover_uploads(data_dir: Path) -> int:
    """Remove temporary upload folders left by a crash (at start-up: no upload is under way); returns how many."""
    removed = 0
    tmp = data_dir / TMP_FOLDER
    for folder in tmp.glob(f"{UPLOAD_PREFIX}*") if tmp.is_dir() else ():
        shutil.rmtree(folder, ignore_errors=True)
        removed += 1
    if removed:
        logger.warning("removed %d temporary upload folder(s) left by an interrupted upload", removed)
    return removed


def scrub_paths(message: str, replacement: str | None = None) -> str:
    """``message`` with absolute file system paths (POSIX or Windows) replaced.

    The replacement is ``replacement``, or by default the path's last part (``/srv/models/chest/weights.pt`` ->
    ``weights.pt``).
    """
    if replacement is not None:
        return _ABSOLUTE_PATH.sub(replacement, message)
    return _ABSOLUTE_PATH.sub(lambda match: re.split(r"[/\\]", match.group(0).rstrip("/\\"))[-1], message)

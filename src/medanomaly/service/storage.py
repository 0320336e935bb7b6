"""Uploads: size limits, type sniffing, safe zip extraction, validation with :func:`medanomaly.io.read_study`.

An upload is written to a private temporary folder under ``<data_dir>/tmp`` and moved into
``<data_dir>/studies/<uid>/input/`` only once it has been read successfully, so a rejected upload leaves nothing
behind. Zip archives (a DICOM series, or one image/NIfTI) are checked before extraction against the member count,
the declared total size and the compression ratio, members with absolute paths, ``..``, drive letters or symlinks
are refused, and the bytes actually written are counted again while extracting (OWASP file-upload cheat sheet).
Files inside the data directory never carry the uploaded name (it may hold a patient's name).
"""

from __future__ import annotations

import hashlib
import re
import shutil
import stat
import tempfile
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from medanomaly.errors import InputError
from medanomaly.io import find_studies, read_study
from medanomaly.io.reader import SUPPORTED, file_kind
from medanomaly.service.private_files import TMP_FOLDER, UPLOAD_PREFIX, scrub_paths
from medanomaly.service.settings import Settings

_CHUNK = 1 << 20
_ZIP_MAGIC = b"PK\x03\x04"
_KEEP_SUFFIXES = (".nii.gz", ".nii", ".dcm", ".dicom", ".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
_SKIPPED_MEMBERS = re.compile(r"(^|/)(__MACOSX|\.[^/]*)(/|$)")


class UploadRejected(Exception):
    """An upload that cannot be accepted; ``status_code`` is the HTTP status, ``reason`` the one-line message.

    File system paths in the reason (a reader's message about our temporary copy) are replaced: users see none.
    """

    def __init__(self, status_code: int, reason: str) -> None:
        reason = scrub_paths(reason, "the upload")
        super().__init__(reason)
        self.status_code = status_code
        self.reason = reason


@dataclass
class StoredUpload:
    """A validated upload moved into the data directory.

    Attributes:
        uid: Folder name under ``studies/``.
        input_path: What :func:`read_study` reads, relative to the data directory.
        size_bytes: Size of the upload as received.
        sha256: Hex digest of the upload as received.
        meta: ``kind``, ``modality``, ``patient_id``, ``study_uid`` and ``n_slices`` of the study.
    """

    uid: str
    input_path: str
    size_bytes: int
    sha256: str
    meta: dict[str, Any] = field(default_factory=dict)


def study_dir(settings: Settings, uid: str) -> Path:
    """``<data_dir>/studies/<uid>``."""
    return settings.data_dir / "studies" / uid


def store_upload(stream: BinaryIO, filename: str, settings: Settings) -> StoredUpload:
    """Validate an uploaded file and move it into the data directory.

    Args:
        stream: The uploaded bytes (read once, in chunks).
        filename: The name the client gave (used only for its extension and in messages).
        settings: Limits and the data directory.

    Returns:
        The stored upload.

    Raises:
        UploadRejected: 413 over a size/count limit, 415 not a supported image, 400 unsafe or malformed archive,
            422 a supported type whose content cannot be read (corrupt DICOM, truncated PNG).
    """
    shown = PurePosixPath(filename.replace("\\", "/")).name or "upload"
    tmp_root = settings.data_dir / TMP_FOLDER
    tmp_root.mkdir(mode=0o700, parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=UPLOAD_PREFIX, dir=tmp_root))
    try:
        raw = work / "raw"
        size, digest = _copy_limited(stream, raw, settings.max_upload_bytes, shown)
        if size == 0:
            raise UploadRejected(400, f"{shown}: the file is empty; choose the image file again")
        target = _unpack(raw, work, shown, settings)
        meta = _validate(target, shown)
        uid = uuid.uuid4().hex
        final = study_dir(settings, uid)
        final.mkdir(parents=True)
        relative = target.relative_to(work / "input")
        shutil.move(str(work / "input"), str(final / "input"))
        stored = final / "input" / relative
        return StoredUpload(uid, str(stored.relative_to(settings.data_dir)), size, digest, meta)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def store_copy(source: Path, data_dir: Path, meta: dict[str, Any]) -> StoredUpload:
    """Copy a file or series folder already read elsewhere (the PACS link) into ``<data_dir>/studies/<uid>/input/``.

    ``size_bytes`` and ``sha256`` cover the copied files (a folder's in name order); ``meta`` is stored as given.
    """
    uid = uuid.uuid4().hex
    target = data_dir / "studies" / uid / "input"
    if source.is_dir():
        shutil.copytree(source, target)
    else:
        target.mkdir(parents=True)
        target = Path(shutil.copy2(source, target / source.name))
    digest, size = hashlib.sha256(), 0
    for file in sorted(p for p in target.rglob("*") if p.is_file()) if target.is_dir() else [target]:
        data = file.read_bytes()
        size += len(data)
        digest.update(data)
    return StoredUpload(uid, str(target.relative_to(data_dir)), size, digest.hexdigest(), meta)


def discard(settings: Settings, uid: str) -> None:
    """Remove a stored study folder (when the database insert that should follow fails)."""
    shutil.rmtree(study_dir(settings, uid), ignore_errors=True)


def _copy_limited(stream: BinaryIO, target: Path, limit: int, shown: str) -> tuple[int, str]:
    digest, size = hashlib.sha256(), 0
    with target.open("wb") as out:
        while chunk := stream.read(_CHUNK):
            size += len(chunk)
            if size > limit:
                msg = f"{shown}: larger than the upload limit of {limit / 2**20:.0f} MiB; ask an admin to raise it"
                raise UploadRejected(413, msg)
            digest.update(chunk)
            out.write(chunk)
    return size, digest.hexdigest()


def _suffix(name: str) -> str:
    """The file's extension if it is a known or harmless one (``.nii.gz`` kept whole), else ''."""
    lower = name.lower()
    known = next((suffix for suffix in _KEEP_SUFFIXES if lower.endswith(suffix)), "")
    plain = PurePosixPath(lower).suffix
    return known or (plain if re.fullmatch(r"\.[a-z0-9]{1,8}", plain) else "")


def _unpack(raw: Path, work: Path, shown: str, settings: Settings) -> Path:
    """The path to read: the upload itself (renamed ``study<ext>``) or the one study inside a zip."""
    with raw.open("rb") as handle:
        is_zip = handle.read(4) == _ZIP_MAGIC
    if not is_zip:
        target = work / "input" / f"study{_suffix(shown)}"
        target.parent.mkdir()
        raw.rename(target)
        return target
    extracted = work / "input"
    safe_extract(raw, extracted, settings, shown)
    raw.unlink()
    studies = find_studies(extracted)
    if not studies:
        raise UploadRejected(415, f"{shown}: the archive holds no readable image (supported: {SUPPORTED})")
    if len(studies) > 1:
        msg = f"{shown}: the archive holds {len(studies)} studies; upload one series (or one image) per archive"
        raise UploadRejected(400, msg)
    return studies[0]


def _member_problem(info: zipfile.ZipInfo) -> str | None:
    name = info.filename.replace("\\", "/")
    parts = PurePosixPath(name).parts
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name) or ".." in parts or "\x00" in name:
        return f"unsafe path {info.filename!r} (absolute or leaving the archive)"
    if stat.S_ISLNK(info.external_attr >> 16):
        return f"symbolic link {info.filename!r}"
    if info.flag_bits & 0x1:
        return f"encrypted member {info.filename!r}"
    return None


def _check_archive(archive: zipfile.ZipFile, size: int, settings: Settings, shown: str) -> list[zipfile.ZipInfo]:
    members = [info for info in archive.infolist() if not info.is_dir()]
    if len(members) > settings.max_archive_files:
        msg = f"{shown}: the archive holds {len(members)} files, more than the limit of {settings.max_archive_files}"
        raise UploadRejected(413, msg)
    for info in members:
        problem = _member_problem(info)
        if problem:
            raise UploadRejected(400, f"{shown}: refused archive with {problem}")
    declared = sum(info.file_size for info in members)
    if declared > settings.max_uncompressed_bytes:
        limit = settings.max_uncompressed_bytes / 2**20
        raise UploadRejected(413, f"{shown}: the archive unpacks to {declared / 2**20:.0f} MiB, over {limit:.0f} MiB")
    ratio = declared / max(size, 1)
    if ratio > settings.max_compression_ratio:
        msg = (
            f"{shown}: compression ratio {ratio:.0f}:1 exceeds {settings.max_compression_ratio:.0f}:1 "
            "(possible zip bomb); upload the series uncompressed or in smaller parts"
        )
        raise UploadRejected(413, msg)
    return [info for info in members if not _SKIPPED_MEMBERS.search(info.filename.replace("\\", "/"))]


def safe_extract(path: Path, out: Path, settings: Settings, shown: str) -> None:
    """Extract a zip after :func:`_check_archive`, counting real bytes against the declared sizes and the limit.

    Raises:
        UploadRejected: A bad, unsafe or too large archive.
    """
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as error:
        raise UploadRejected(400, f"{shown}: not a valid zip archive ({error})") from None
    with archive:
        members = _check_archive(archive, path.stat().st_size, settings, shown)
        out.mkdir(parents=True)
        folders: dict[str, Path] = {}
        total = 0
        for index, info in enumerate(members):
            parent = PurePosixPath(info.filename.replace("\\", "/")).parent.as_posix()
            folder = folders.setdefault(parent, out / f"d{len(folders):04d}" if parent != "." else out)
            folder.mkdir(exist_ok=True)
            target = folder / f"{index:05d}{_suffix(info.filename)}"
            total += _extract_member(archive, info, target, settings.max_uncompressed_bytes - total, shown)


def _extract_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, budget: int, shown: str) -> int:
    written = 0
    try:
        with archive.open(info) as source, target.open("wb") as sink:
            while chunk := source.read(_CHUNK):
                written += len(chunk)
                if written > info.file_size or written > budget:
                    raise UploadRejected(413, f"{shown}: a member unpacks beyond its declared size (zip bomb?)")
                sink.write(chunk)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, RuntimeError) as error:
        raise UploadRejected(400, f"{shown}: corrupt archive member ({error})") from None
    return written


def _validate(target: Path, shown: str) -> dict[str, Any]:
    """Read the study once; the reader's message (without our temporary path) becomes the 4xx reason."""
    if target.is_file() and file_kind(target) is None:
        raise UploadRejected(415, f"{shown}: not a supported image file (supported: {SUPPORTED})")
    try:
        study = read_study(target)
    except InputError as error:
        hint = f" ({error.hint})" if error.hint else ""
        raise UploadRejected(422, f"{shown}: {error.problem}{hint}") from None
    except (ValueError, MemoryError) as error:
        raise UploadRejected(422, f"{shown}: cannot be read ({error})") from None
    meta = study.meta
    return {
        "kind": meta.get("kind"),
        "modality": meta.get("modality"),
        "patient_id": meta.get("patient_id"),
        "study_uid": meta.get("study_uid"),
        "n_slices": study.n_slices,
    }

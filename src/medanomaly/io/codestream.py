"""Checks of a compressed DICOM frame's own codestream header (JPEG, JPEG-LS, JPEG 2000), made before decoding.

Decoders trust their codestream header, not the DICOM header: a corrupt JPEG 2000 SIZ marker can make a 1 KB file
decode into gigabytes, and a JPEG-LS frame whose SOF55 segment declares 0 lines makes CharLS abort the whole process
(a native crash no ``except`` can catch). So each frame's marker segments are walked first and compared with the DICOM
header: frame size, components and bits (ITU-T T.81 B.2.2, T.87 C.2.2-C.2.4 and T.800 A.5.1). The verdict is
``problem`` (refuse the file), or ``vouched`` (safe to decode in this process), or neither: a legal but unusual
stream (JPEG-LS mapping tables, an unfinished marker walk) that :mod:`medanomaly.io.isolated` decodes in a separate
process.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_SOF55, _LSE, _SOS, _EOI, _DRI = 0xF7, 0xF8, 0xDA, 0xD9, 0xDD
_HEADER_OK = {_DRI, 0xFE, *range(0xE0, 0xF0)}  # DRI, COM, APPn: skipped
_SCAN_MARKER = re.compile(rb"\xff[\x80-\xfe]")  # T.87 A.1: inside scan data an 0xFF is followed by a 0 bit
_Sof = tuple[int, int, int, int, list[tuple[int, int]]]  # precision, lines, columns, components, [(id, sampling)]


@dataclass(frozen=True)
class Frame:
    """What the DICOM header says one frame holds."""

    rows: int
    columns: int
    samples: int
    bits_allocated: int


@dataclass(frozen=True)
class Verdict:
    """Outcome of a codestream check: ``problem`` (corrupt), else ``vouched`` (True: decode here)."""

    problem: str | None = None
    vouched: bool = True


UNVOUCHED = Verdict(vouched=False)


def check_frame(data: bytes, frame: Frame, jpeg_ls: bool) -> Verdict:
    """Check one compressed frame against the DICOM header (``jpeg_ls``: the transfer syntax is JPEG-LS)."""
    if data[:2] == b"\xff\x4f" or (data[:4] != b"\xff\xd8\xff\xe0" and data.find(b"\xff\x51", 0, 4096) >= 0):
        return _check_j2k(data, frame)
    if data[:2] != b"\xff\xd8":
        return Verdict(f"frame does not start with a JPEG or JPEG 2000 marker ({data[:4].hex() or 'empty'})")
    try:
        return _check_jpeg(data, frame, jpeg_ls)
    except (struct.error, IndexError):
        return Verdict("JPEG marker segment is malformed (its length does not match its content)")


def _check_jpeg(data: bytes, frame: Frame, jpeg_ls: bool) -> Verdict:
    """Walk the marker segments from SOI to the first SOS, then (JPEG-LS) the markers inside and after the scans."""
    pos, maxval = 2, 0
    sof: _Sof | None = None
    while True:
        marker, body, pos = _segment(data, pos)
        if marker is None:
            return Verdict(f"JPEG marker segment at byte {pos} is malformed or runs past the end of the frame")
        if marker in _SOF or marker == _SOF55:
            if sof is not None or (marker == _SOF55) != jpeg_ls:
                return Verdict(f"unexpected start-of-frame marker 0xFF{marker:02X}")
            sof = _sof(body)
            problem = _compare_sof(sof, frame, jpeg_ls)
            if problem:
                return Verdict(problem)
        elif marker == _LSE and jpeg_ls:
            verdict, maxval = _lse(body, sof, maxval)
            if verdict is not None:
                return verdict
        elif marker == _SOS:
            if sof is None:
                return Verdict("scan starts before any start-of-frame segment")
            problem = _sos(body, sof, maxval, jpeg_ls)
            if problem:
                return Verdict(problem)
            return _scan_markers(data, pos, sof, maxval) if jpeg_ls else Verdict()
        elif not jpeg_ls:
            continue  # tables of the DCT/lossless JPEG processes: libjpeg checks them itself
        elif marker not in _HEADER_OK:
            return Verdict(f"unexpected marker 0xFF{marker:02X} before the JPEG-LS scan")


def _segment(data: bytes, pos: int) -> tuple[int | None, bytes, int]:
    """(marker, payload, next position) of the segment at ``pos`` (fill bytes skipped); marker None if malformed."""
    while data[pos : pos + 2] == b"\xff\xff":
        pos += 1
    if pos + 4 > len(data) or data[pos] != 0xFF:
        return None, b"", pos
    length = int.from_bytes(data[pos + 2 : pos + 4], "big")
    if length < 2 or pos + 2 + length > len(data):
        return None, b"", pos
    return data[pos + 1], data[pos + 4 : pos + 2 + length], pos + 2 + length


def _sof(body: bytes) -> _Sof:
    """(precision, lines, columns, components, [(id, sampling)]) of a start-of-frame payload."""
    precision, lines, columns, count = struct.unpack(">BHHB", body[:6])
    if len(body) != 6 + 3 * count:
        raise IndexError
    return precision, lines, columns, count, [(body[6 + 3 * i], body[7 + 3 * i]) for i in range(count)]


def _compare_sof(sof: _Sof, frame: Frame, jpeg_ls: bool) -> str | None:
    precision, lines, columns, count, components = sof
    if (columns, lines) != (frame.columns, frame.rows):
        return f"compressed frame declares {columns}x{lines} pixels, the DICOM header {frame.columns}x{frame.rows}"
    if count != frame.samples:
        return f"compressed frame declares {count} component(s), the DICOM header {frame.samples} sample(s)"
    if not 2 <= precision <= min(16, max(frame.bits_allocated, 8)):
        return f"compressed frame declares {precision}-bit samples, BitsAllocated is {frame.bits_allocated}"
    if len({c for c, _ in components}) != count or (jpeg_ls and any(s != 0x11 for _, s in components)):
        return "compressed frame declares duplicate component ids or subsampled components"
    return None


def _lse(body: bytes, sof: _Sof | None, maxval: int) -> tuple[Verdict | None, int]:
    """JPEG-LS preset parameters (T.87 C.2.4.1.1); mapping tables and oversize dimensions are left unvouched."""
    if body[:1] != b"\x01":
        return UNVOUCHED, maxval
    if len(body) != 11 or sof is None:
        return Verdict("JPEG-LS preset-parameter segment is malformed or precedes the frame header"), maxval
    new_max, t1, t2, t3, reset = struct.unpack(">5H", body[1:11])
    limit = (1 << sof[0]) - 1
    maxval = new_max or limit
    thresholds_ok = all(t == 0 or 1 <= t <= maxval for t in (t1, t2, t3)) and (
        0 in (t1, t2, t3) or t1 <= t2 <= t3
    )
    if maxval > limit or not thresholds_ok or (reset and not 3 <= reset <= max(255, maxval)):
        return Verdict(f"JPEG-LS preset parameters out of range (MAXVAL {new_max}, T1-T3 {t1}/{t2}/{t3}, "
                       f"RESET {reset} for {sof[0]}-bit samples)"), maxval
    return None, maxval


def _sos(body: bytes, sof: _Sof, maxval: int, jpeg_ls: bool) -> str | None:
    count = body[0] if body else 0
    if not 1 <= count <= sof[3] or len(body) != 4 + 2 * count:
        return "scan header is malformed"
    ids = {c for c, _ in sof[4]}
    if any(body[1 + 2 * i] not in ids for i in range(count)):
        return "scan names a component the frame header does not declare"
    if not jpeg_ls:
        return None
    near, interleave, transform = body[-3], body[-2], body[-1]
    if any(body[2 + 2 * i] for i in range(count)):
        return "JPEG-LS scan uses a mapping table"
    maxval = maxval or (1 << sof[0]) - 1
    if near > min(255, maxval // 2) or interleave > 2 or transform or (count > 1) != (interleave > 0):
        return f"JPEG-LS scan header out of range (NEAR {near}, ILV {interleave}, point transform {transform})"
    return None


def _scan_markers(data: bytes, pos: int, sof: _Sof, maxval: int) -> Verdict:
    """Markers inside and after the JPEG-LS scans: further scans, restart markers, then EOI."""
    for match in _SCAN_MARKER.finditer(data, pos):
        if match.start() < pos:
            continue
        marker = data[match.start() + 1]
        if marker == _EOI:
            return Verdict()
        if 0xD0 <= marker <= 0xD7:
            continue
        if marker not in (_SOS, _LSE):
            return Verdict(f"JPEG-LS scan data holds an invalid marker 0xFF{marker:02X} at byte {match.start()}")
        found, body, pos = _segment(data, match.start())
        if found is None:
            return Verdict(f"JPEG-LS marker segment at byte {match.start()} is malformed")
        if found == _LSE:
            verdict, maxval = _lse(body, sof, maxval)
            if verdict is not None:
                return verdict
        else:
            problem = _sos(body, sof, maxval, True)
            if problem:
                return Verdict(problem)
    # T.87 requires EOI; CharLS loops for minutes on a stream cut short (measured), so a missing EOI is refused
    return Verdict("JPEG-LS frame ends without its end-of-image marker (truncated)")


def _check_j2k(data: bytes, frame: Frame) -> Verdict:
    """JPEG 2000 SIZ segment (T.800 A.5.1): image size, components and bit depth."""
    siz = data.find(b"\xff\x51", 0, 4096)
    if siz < 0 or len(data) < siz + 40:
        return Verdict("JPEG 2000 frame has no complete SIZ segment")
    length, _, xsiz, ysiz, xo, yo, xt, yt, xto, yto, count = struct.unpack(">HHIIIIIIIIH", data[siz + 2 : siz + 40])
    if length != 38 + 3 * count or len(data) < siz + 2 + length:
        return Verdict("JPEG 2000 SIZ segment is malformed")
    width, height = max(xsiz - xo, 0), max(ysiz - yo, 0)
    if width * height > frame.rows * frame.columns:
        return Verdict(f"compressed frame declares {width}x{height} pixels, the DICOM header "
                       f"{frame.columns}x{frame.rows}")
    if count != frame.samples or not xt or not yt or xto > xo or yto > yo:
        return Verdict(f"JPEG 2000 SIZ segment declares {count} component(s) or an empty tile grid")
    components = [data[siz + 40 + 3 * i : siz + 43 + 3 * i] for i in range(count)]
    depths = [(c[0] & 0x7F) + 1 for c in components]
    if max(depths) > max(frame.bits_allocated, 8) or any(0 in c[1:] for c in components):
        return Verdict(f"JPEG 2000 SIZ segment declares {max(depths)}-bit samples or zero sub-sampling, "
                       f"BitsAllocated is {frame.bits_allocated}")
    return Verdict()

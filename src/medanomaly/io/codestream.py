"""Image size declared inside a compressed DICOM frame (JPEG, JPEG-LS, JPEG 2000), read before decoding.

Decoders allocate what their own codestream header announces, not what the DICOM header says: a corrupt JPEG 2000
SIZ marker can make a 1 KB file decode into gigabytes. The size is read from the first fragment: the SIZ segment
(ITU-T T.800 A.5.1: Xsiz, Ysiz, XOsiz, YOsiz) or a JPEG start-of-frame segment (ITU-T T.81 B.2.2 and T.87:
SOF0-SOF15 and SOF55, holding Y then X).
"""

from __future__ import annotations

import struct

_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF, 0xF7}


def declared_size(fragment: bytes) -> tuple[int, int] | None:
    """(width, height) announced by a compressed frame's own header, or None when none is found."""
    siz = fragment.find(b"\xff\x51", 0, 4096)
    if fragment[:2] == b"\xff\x4f" or (siz >= 0 and fragment[:4] != b"\xff\xd8\xff\xe0"):
        if siz >= 0 and len(fragment) >= siz + 22:
            xsiz, ysiz, xo, yo = struct.unpack(">IIII", fragment[siz + 6 : siz + 22])
            return max(xsiz - xo, 0), max(ysiz - yo, 0)
    return _jpeg_size(fragment)


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """Size from the first JPEG start-of-frame segment, walking the marker segments from SOI."""
    if data[:2] != b"\xff\xd8":
        return None
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:
            pos += 1
            continue
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker in _SOF and pos + 9 <= len(data):
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return width, height
        pos += 2 + length
    return None

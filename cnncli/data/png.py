"""The common PNG (8-bit grey, RGB or RGBA, not interlaced) opened without PIL's Python chunk
parser: the file read in one call, its chunks walked here and its pixels decoded by PIL's own
C decoder, so the pixels are PIL's exactly. Anything else is left to ``PIL.Image.open``.

Streaming an image folder spends most of its time in PIL's per-file Python work, not in zlib:
this path does the same decoding for about half the CPU time (benchmarks/RESULTS.md).
"""

from __future__ import annotations

import struct
from pathlib import Path

SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: (bit depth, colour type) -> the PIL mode its pixels decode to (PngImagePlugin's own).
MODES = {(8, 0): "L", (8, 2): "RGB", (8, 6): "RGBA"}
#: Ancillary chunks (lower-case first letter) are skipped; of the critical ones only these.
CRITICAL = (b"IHDR", b"IDAT", b"IEND")
_IHDR = struct.Struct(">I4sIIBBBBB")
_CHUNK = struct.Struct(">I4s")


def open_simple_png(path: Path, max_pixels: int):
    """``path`` as a decoded PIL image when it is a simple PNG of at most ``max_pixels``,
    else None (not a PNG, another kind of PNG, or damaged: ``Image.open`` then says why)."""
    from PIL import Image

    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    if data[:8] != SIGNATURE or len(data) < 33:
        return None
    _, kind, width, height, depth, colour, compression, filtering, interlace = \
        _IHDR.unpack_from(data, 8)
    mode = MODES.get((depth, colour))
    if kind != b"IHDR" or mode is None or compression or filtering or interlace \
            or not 0 < width * height <= max_pixels:
        return None
    pieces, pos, end = [], 33, len(data)
    while True:
        if pos + 8 > end:
            return None                    # no IEND: truncated
        length, kind = _CHUNK.unpack_from(data, pos)
        if kind == b"IEND":
            break
        if kind == b"IDAT":
            pieces.append(data[pos + 8:pos + 8 + length])
        elif kind[0] < 97 and kind not in CRITICAL:
            return None                    # PLTE, or a critical chunk PIL may know better
        elif kind == b"tRNS":
            return None                    # a transparent colour changes conversions
        pos += 12 + length
    try:
        return Image.frombytes(mode, (width, height), b"".join(pieces), "zip", mode)
    except Exception:  # noqa: BLE001  (damaged pixels: Image.open reports it in full)
        return None


def png_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from a PNG's header without decoding it; None if not a PNG."""
    try:
        with open(path, "rb") as f:
            head = f.read(24)
    except OSError:
        return None
    if len(head) < 24 or head[:8] != SIGNATURE or head[12:16] != b"IHDR":
        return None
    return struct.unpack_from(">II", head, 16)

"""Reading .npy and .npz files without trusting their headers.

A header states an array's shape and dtype, and NumPy allocates what it states before reading
the data: a damaged or hostile file claiming terabytes gets the process killed. Here every
header is checked against the bytes the file really holds first, and nothing is unpickled.
"""

from __future__ import annotations

import math
import os
import struct
import zipfile
import zlib

import numpy as np

#: Deflate cannot expand data by more than about 1032:1, so a zip member claiming more than
#: this many times its compressed size is lying.
MAX_DEFLATE_RATIO = 1100


#: What reading a damaged .npz or .npy can raise besides CorruptArrayFile (a bad zip directory,
#: an unknown compression method, a truncated member, a bad checksum, ...).
READ_ERRORS = (OSError, EOFError, ValueError, KeyError, NotImplementedError, RuntimeError,
               struct.error, zipfile.BadZipFile, zlib.error)


class CorruptArrayFile(ValueError):
    """A header that does not fit the file (the message says what it claims and what is there)."""


def _header(fp):
    """(shape, fortran_order, dtype) of the .npy stream ``fp``, positioned after its header."""
    version = np.lib.format.read_magic(fp)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(fp)
    if version in ((2, 0), (3, 0)):
        return np.lib.format.read_array_header_2_0(fp)
    raise CorruptArrayFile(f"unknown .npy format version {version}")


def _checked_header(fp, size: int, what: str):
    """Read the header and check the data it claims fits in the ``size`` bytes of the member."""
    try:
        shape, fortran, dtype = _header(fp)
    except CorruptArrayFile:
        raise
    except Exception as err:  # NumPy parses the header text: a damaged one fails in many ways
        raise CorruptArrayFile(f"corrupt file: {what} has an unreadable .npy header "
                               f"({type(err).__name__})") from None
    if dtype.hasobject:   # NumPy's own words, which the callers turn into their message
        raise ValueError("Object arrays cannot be loaded when allow_pickle=False")
    claimed = math.prod(shape) * dtype.itemsize   # Python ints: no overflow
    have = size - fp.tell()
    if claimed > have:
        raise CorruptArrayFile(f"corrupt file: {what}'s header claims {claimed:,} bytes, the "
                               f"file has {max(have, 0):,} bytes")
    return shape, fortran, dtype


def read_npy(path) -> np.ndarray:
    """The array of one .npy file, its header checked against the file's size first."""
    with open(path, "rb") as fp:
        _checked_header(fp, os.fstat(fp.fileno()).st_size, os.path.basename(path))
        fp.seek(0)
        return _valid_text(np.lib.format.read_array(fp, allow_pickle=False),
                           os.path.basename(path))


def read_npz(path) -> dict[str, np.ndarray]:
    """Every array of an .npz by name (without ``.npy``), each member's header checked first.

    A member that is not a .npy array, or whose sizes do not fit the archive, raises
    CorruptArrayFile (a ValueError); a damaged archive raises zipfile.BadZipFile or OSError.
    """
    arrays = {}
    archive_size = os.path.getsize(path)
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            name = info.filename
            if not name.endswith(".npy"):
                raise CorruptArrayFile(f"member {name!r} is not a .npy array")
            stored = info.compress_type == zipfile.ZIP_STORED
            limit = info.compress_size * (1 if stored else MAX_DEFLATE_RATIO)
            if info.compress_size > archive_size or info.file_size > limit:
                raise CorruptArrayFile(f"corrupt file: member {name} claims {info.file_size:,} "
                                       f"bytes, the file has {archive_size:,} bytes")
            with zf.open(info) as fp:
                _checked_header(fp, info.file_size, name)
            with zf.open(info) as fp:
                arrays[name[:-len(".npy")]] = _valid_text(
                    np.lib.format.read_array(fp, allow_pickle=False), name)
    return arrays


def _valid_text(array: np.ndarray, what: str) -> np.ndarray:
    """A string array's code points must be Unicode's (str() of another fails with SystemError)."""
    if array.dtype.kind == "U" and array.size:
        codes = np.ascontiguousarray(array).reshape(-1).view(
            np.dtype("u4").newbyteorder(array.dtype.byteorder))
        if codes.max() > 0x10FFFF:
            raise CorruptArrayFile(f"corrupt file: {what} holds characters beyond Unicode")
    return array

"""The safetensors format, read and written with NumPy alone (no code runs on reading).

A file is an 8-byte little-endian header length, a JSON header (``{name: {dtype, shape,
data_offsets}}`` plus an optional ``__metadata__`` of strings), then the raw little-endian data.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

from cnncli.errors import CheckpointError
from cnncli.files import atomic_write

DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2",
          "I8": "i1", "U8": "u1", "BOOL": "?"}
_CODES = {np.dtype(v): k for k, v in DTYPES.items()}
#: A header larger than this is not a header (the reference implementation's limit too).
MAX_HEADER = 100 * 2**20


def encode(tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> bytes:
    """The bytes of a safetensors file holding ``tensors`` in the given order."""
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    blobs, offset = [], 0
    for name, value in tensors.items():
        arr = np.asarray(value)
        code = _CODES.get(arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">"
                          else arr.dtype)
        if code is None:
            raise CheckpointError(f"{name}: dtype {arr.dtype} has no safetensors code")
        blob = np.ascontiguousarray(arr, dtype=DTYPES[code]).tobytes()
        header[name] = {"dtype": code, "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


def write(path, tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> Path:
    """Write a safetensors file atomically."""
    path = Path(path)
    blob = encode(tensors, metadata)
    atomic_write(path, lambda f: f.write(blob))
    return path


def decode(blob: bytes, where="<bytes>") -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(tensors, metadata) of safetensors bytes; anything malformed is one CheckpointError."""
    def bad(problem: str) -> CheckpointError:
        return CheckpointError(f"{where} is not a readable safetensors file ({problem})",
                               hint="pass a .safetensors written by 'cnncli export' or PyTorch")

    if len(blob) < 8:
        raise bad("shorter than its 8-byte header length")
    (size,) = struct.unpack("<Q", blob[:8])
    if size > min(MAX_HEADER, len(blob) - 8):
        if blob[8:9] == b"{":   # a JSON header begins: the end of the file is missing
            raise bad(f"header length {size} exceeds the file's {len(blob)} bytes; truncated?")
        raise bad(f"header length {size} exceeds the file's {len(blob)} bytes and no JSON "
                  "header follows; it is some other kind of file")
    try:
        header = json.loads(blob[8:8 + size].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise bad(f"header is not JSON: {err}") from None
    if not isinstance(header, dict):
        raise bad("header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise bad("__metadata__ must map strings to strings")
    data = memoryview(blob)[8 + size:]
    tensors, spans = {}, []
    for name, info in header.items():
        try:
            code, shape, (begin, end) = info["dtype"], info["shape"], info["data_offsets"]
            dtype = np.dtype(DTYPES[code])
            ok = (all(isinstance(d, int) and d >= 0 for d in shape) and isinstance(begin, int)
                  and isinstance(end, int) and 0 <= begin <= end <= len(data))
        except (KeyError, TypeError, ValueError):
            raise bad(f"tensor {name!r} has a malformed entry {info!r}"[:200] + ")") from None
        if not ok:
            raise bad(f"tensor {name!r} has shape {shape} and offsets [{begin}, {end}] outside "
                      f"the {len(data)} data bytes; truncated?")
        if (end - begin) != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize:
            raise bad(f"tensor {name!r}: {end - begin} bytes do not hold {code} {shape}")
        tensors[name] = np.frombuffer(data[begin:end], dtype=dtype).reshape(shape).astype(
            dtype.newbyteorder("="))
        spans.append((begin, end))
    spans.sort()
    if any(a[1] != b[0] for a, b in zip(spans, spans[1:], strict=False)) or \
            (spans and (spans[0][0] != 0 or spans[-1][1] != len(data))):
        raise bad("tensor data overlaps, leaves gaps or does not fill the file")
    return tensors, dict(metadata)


def read(path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(tensors, metadata) of a safetensors file."""
    path = Path(path)
    try:
        blob = path.read_bytes()
    except OSError as err:
        raise CheckpointError(f"cannot read {path}: {err.strerror or err}") from None
    return decode(blob, path)

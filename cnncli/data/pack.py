"""``cnncli data pack``: an image folder, IDX or .npz written once as an npy_dir (x_train.npy,
y_train.npy, x_test.npy, y_test.npy, meta.json), which training then memory-maps."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from cnncli.config.schema import DataConfig
from cnncli.data import _check_classes, read_path, sources
from cnncli.data.sources import NPY_DIR_META
from cnncli.data.streaming import ImageRows
from cnncli.errors import DataError
from cnncli.files import atomic_write, make_folder

#: Images decoded and written per piece: the packed data is never all in memory.
PACK_ROWS = 1024


#: What pack's images of another size need (pack's own argument names).
PACK_RESIZE_HINT = "give size=HxW with resize=fit (stretch) or resize=crop (scale and centre-crop)"


def pack_dataset(src: Path, out: Path, *, channels: int = 1,
                 size: tuple[int, int] | None = None, resize: str | None = None,
                 threads: int = 2) -> dict:
    """Write ``src`` into the folder ``out`` as an npy_dir; returns what was written
    ({"x_train": shape, ..., "class_names": [...]}). A failed pack leaves no folder behind."""
    out, src = Path(out), Path(src)
    if out.exists() and any(out.iterdir()):
        raise DataError(f"out={str(out)!r} is not empty", hint="choose a new folder")
    if src.is_dir() and not sources.is_idx_dir(src) and not sources.is_npy_dir(src):
        raw = sources.read_image_folder(src, channels, size, resize, threads,
                                        size_hint=PACK_RESIZE_HINT)
        _check_classes(raw.class_names, raw.y_train, DataConfig(dataset=None, path=str(src)))
    else:
        raw = read_path(str(src), channels, data_cfg=DataConfig(dataset=None, path=str(src)))
    created = not out.exists()
    make_folder(out)
    try:
        return _write_all(raw, out)
    except BaseException:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise


def _write_all(raw, out: Path) -> dict:
    written: dict = {}
    for key in ("x_train", "y_train", "x_test", "y_test"):
        array = getattr(raw, key)
        if array is not None:
            _write_npy(out / f"{key}.npy", array)
            written[key] = list(array.shape)
    meta = {"class_names": raw.class_names, "layout": raw.layout, "value_max": raw.value_max}
    meta = {k: v for k, v in meta.items() if v is not None}
    text = json.dumps(meta, indent=2) + "\n"
    atomic_write(out / NPY_DIR_META, lambda f: f.write(text.encode("utf-8")))
    return {**written, **meta}


def _write_npy(path: Path, array) -> None:
    """An .npy written piece by piece into a temp file that replaces ``path`` at the end."""
    shape, dtype = tuple(array.shape), np.dtype(array.dtype)

    def write(f):
        np.lib.format.write_array_header_1_0(
            f, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
                "shape": shape})
        if not isinstance(array, ImageRows):
            f.write(np.ascontiguousarray(array).tobytes())
            return
        for start in range(0, len(array), PACK_ROWS):
            f.write(np.ascontiguousarray(array[start:start + PACK_ROWS]).tobytes())

    atomic_write(path, write)

"""How much memory a dataset will take once loaded, from file headers and sizes only.

For the memory guard (nn/memory.py): it runs before anything is read. Unknown or unreadable
sources count 0; reading them later gives the proper error.
"""

from __future__ import annotations

import gzip
import math
import zipfile
from pathlib import Path

import numpy as np

from cnncli.config.schema import DataConfig
from cnncli.data import sources

#: (images, bytes per stored value) of the public datasets, train and test splits together.
KNOWN_SIZES = {"mnist": (70_000, 1), "fashion-mnist": (70_000, 1), "cifar10": (60_000, 1)}


def dataset_bytes(data_cfg: DataConfig, input_shape, root: Path | None = None,
                  batch_size: int = 1) -> int:
    """Bytes of the loaded dataset: every image as float32 (what training keeps) plus the
    source arrays as stored (held while it is split and normalised); 0 when unknown. A
    streamed dataset (image folder, npy_dir) holds only its prefetch queue: the batches read
    ahead, the one being read and the one in use."""
    values = math.prod(int(s) for s in input_shape)
    try:
        if _streamed(data_cfg, root):
            images, stored_itemsize = (data_cfg.prefetch + 2) * batch_size, 1
        else:
            images, stored_itemsize = _images(data_cfg, root)
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, gzip.BadGzipFile):
        return 0
    return images * values * (np.dtype(np.float32).itemsize + stored_itemsize)


def _streamed(data_cfg: DataConfig, root) -> bool:
    path = data_cfg.path
    if path is None or isinstance(path, (list, tuple)):
        return False
    p = _where(path, root)
    return data_cfg.format == "npy_dir" or (p.is_dir() and not sources.is_idx_dir(p))


def _images(data_cfg: DataConfig, root) -> tuple[int, int]:
    path = data_cfg.path
    if path is None:
        name = data_cfg.dataset or "digits"
        if name == "digits":
            return _npz_images(sources.digits_path())
        return KNOWN_SIZES.get(name, (0, 0))
    if isinstance(path, (list, tuple)):
        if len(path) == 2:
            return _idx_images(_where(path[0], root))
        path = path[0]
    p = _where(path, root)
    name = p.name.lower()
    if p.is_dir():
        if sources.is_idx_dir(p):
            found = [_idx_images(f) for f in p.iterdir() if "idx3-ubyte" in f.name]
            return sum(n for n, _ in found), max((s for _, s in found), default=1)
        return sum(1 for f in p.rglob("*") if sources.is_image(f) and f.is_file()), 1
    if name.endswith(".npz"):
        return _npz_images(p)
    if name.endswith((".tar.gz", ".tgz")):
        return KNOWN_SIZES["cifar10"]
    if "idx3-ubyte" in name:
        return _idx_images(p)
    return 0, 0


def _where(path, root) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() or root is None else Path(root) / p


def _npz_images(path: Path) -> tuple[int, int]:
    """Images in x_train and x_test of an .npz, from the arrays' headers (nothing unzipped
    beyond them)."""
    images, itemsize = 0, 1
    with zipfile.ZipFile(path) as archive:
        for key in ("x_train.npy", "x_test.npy"):
            if key not in archive.namelist():
                continue
            with archive.open(key) as f:
                version = np.lib.format.read_magic(f)
                read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                        else np.lib.format.read_array_header_2_0)
                shape, _, dtype = read(f)
            images += int(shape[0]) if shape else 0
            itemsize = max(itemsize, dtype.itemsize)
    return images, itemsize


#: The most bytes deflate can expand one compressed byte to: a .gz IDX whose header claims more
#: than this allows is corrupt, not big.
DEFLATE_MAX_RATIO = 1032


def _idx_images(path: Path) -> tuple[int, int]:
    """Images in an IDX file (raw or .gz), from its header; (0, 0) for a header that claims
    more data than the file can hold (a corrupt file, which loading then reports as such)."""
    with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as f:
        head = f.read(4 + 4 * 4)
    if len(head) < 8 or head[2] not in sources.IDX_DTYPES or not 1 <= head[3] <= 4 \
            or len(head) < 4 + 4 * head[3]:
        return 0, 0
    dims = [int.from_bytes(head[4 + 4 * i:8 + 4 * i], "big") for i in range(head[3])]
    itemsize = np.dtype(sources.IDX_DTYPES[head[2]]).itemsize
    claimed = math.prod(dims) * itemsize
    room = path.stat().st_size * (DEFLATE_MAX_RATIO if path.suffix == ".gz" else 1)
    if claimed > room:
        return 0, 0
    return dims[0], itemsize

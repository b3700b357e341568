"""Readers that turn files on disk into raw (unnormalised) arrays: npz, IDX, CIFAR-10, images."""

from __future__ import annotations

import gzip
import itertools
import math
import tarfile
import threading
import time
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cnncli import arrayfiles
from cnncli.data.png import open_simple_png, png_size
from cnncli.data.streaming import ImageRows, open_npy
from cnncli.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
DIGITS_FILE = "digits.npz"
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot"]


@dataclass
class RawData:
    """Arrays as stored in the source; ``x_*`` keep their on-disk layout and dtype."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    class_names: list[str] | None = None
    value_max: float | None = None   # the source's known pixel maximum (digits: 16)
    layout: str | None = None        # known layout of 4-D arrays, else inferred
    skipped: list[str] = field(default_factory=list)  # hidden folders left out (.ipynb_...)


# ---------------------------------------------------------------- npz / npy

def read_array_file(path: Path) -> dict[str, np.ndarray]:
    """All arrays of an .npz (or the one array of an .npy), never unpickling."""
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
    except OSError as err:
        raise DataError(f"cannot read {path}: {err.strerror or err}") from None
    if not (magic.startswith(b"PK") or magic == b"\x93NUMPY"):
        raise DataError(f"{path} is not a readable NumPy file (no .npz/.npy header)")
    try:
        if magic == b"\x93NUMPY":
            return {"": arrayfiles.read_npy(path)}
        return arrayfiles.read_npz(path)
    except arrayfiles.CorruptArrayFile as err:
        raise DataError(f"{path}: {err}") from None
    except ValueError as err:
        if "pickle" in str(err).lower():
            raise DataError(f"{path} holds Python objects (pickled arrays), which cnncli "
                            f"refuses to load", hint="save plain numeric arrays") from None
        raise DataError(f"{path} is not a readable NumPy file: {err}") from None
    except arrayfiles.READ_ERRORS as err:
        raise DataError(f"{path} is not a readable NumPy file: {err}") from None


def read_npz(path: Path) -> RawData:
    arrays = read_array_file(path)
    missing = [k for k in ("x_train", "y_train") if k not in arrays]
    if missing:
        raise DataError(f"{path} lacks {' and '.join(missing)} (it has "
                        f"{', '.join(sorted(arrays)) or 'no arrays'})",
                        hint="save x_train, y_train and optionally x_test, y_test, class_names")
    if ("x_test" in arrays) != ("y_test" in arrays):
        have = "x_test" if "x_test" in arrays else "y_test"
        raise DataError(f"{path} has {have} but not its partner", hint="save x_test with y_test")
    names = arrays.get("class_names")
    if names is not None and (names.ndim != 1 or names.dtype.kind not in "US"):
        raise DataError(f"{path}: class_names must be a 1-D array of strings, got "
                        f"{names.dtype} {names.shape}")
    if names is not None:
        _check_name_count(path, len(names), [arrays["y_train"], arrays.get("y_test")])
    return RawData(arrays["x_train"], arrays["y_train"], arrays.get("x_test"),
                   arrays.get("y_test"),
                   None if names is None else [str(n) for n in names.astype(str)])


def _check_name_count(path: Path, count: int, labels: list) -> None:
    """class_names must name every class the labels use (bad labels are reported later)."""
    tops = [int(y.max()) for y in labels if y is not None and y.size and y.dtype.kind in "iu"]
    if tops and max(tops) >= count:
        top = max(tops)
        raise DataError(f"{path}: class_names has {count} name{'s' if count != 1 else ''} but "
                        f"the labels have {top + 1} classes (0..{top})",
                        key="path", hint="give one name per class, in label order")


def digits_path() -> Path:
    """The bundled digits: the package copy first, then the repository's data/ directory."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "datasets" / DIGITS_FILE,
                      here.parent.parent / "data" / DIGITS_FILE):
        if candidate.is_file():
            return candidate
    raise DataError(f"the bundled {DIGITS_FILE} is missing from {here.parent / 'datasets'}",
                    hint="reinstall cnncli")


def read_digits() -> RawData:
    raw = read_npz(digits_path())
    raw.value_max = 16.0
    return raw


# ---------------------------------------------------------------- IDX (MNIST format)

IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
#: Labels are 1-D, images (N, H, W) or (N, H, W, C).
IDX_MAX_DIMS = 4
_CHUNK = 1 << 24


def read_idx(path: Path) -> np.ndarray:
    """One IDX file (raw or .gz) as an array with its native shape.

    A .gz file is decompressed only as far as its header's size, checked first against what
    the compressed file could hold: a damaged header cannot make it allocate terabytes.
    """
    try:
        if path.suffix != ".gz":
            return parse_idx(path.read_bytes(), path)
        with gzip.open(path, "rb") as f:
            head = f.read(4)
            head += f.read(4 * head[3]) if len(head) == 4 else b""
            shape, dtype = _idx_header(head, path)
            need = math.prod(shape) * dtype.itemsize
            compressed = path.stat().st_size
            if need > compressed * arrayfiles.MAX_DEFLATE_RATIO:
                raise DataError(f"{path}: corrupt file: IDX header claims {shape} = {need:,} "
                                f"bytes, more than {compressed:,} compressed bytes can hold")
            chunks, got = [head], 0
            while got <= need:   # one byte more than needed shows trailing data
                chunk = f.read(min(_CHUNK, need + 1 - got))
                if not chunk:
                    break
                chunks.append(chunk)
                got += len(chunk)
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as err:
        raise DataError(f"cannot read IDX file {path}: {err}") from None
    return parse_idx(b"".join(chunks), path)


def _idx_header(blob: bytes, where) -> tuple[tuple[int, ...], np.dtype]:
    if len(blob) < 4 or blob[0] != 0 or blob[1] != 0 or blob[2] not in IDX_DTYPES:
        raise DataError(f"{where} is not an IDX file (bad magic number {blob[:4].hex()!r})")
    ndim = blob[3]
    if not 1 <= ndim <= IDX_MAX_DIMS:
        raise DataError(f"{where}: corrupt IDX header: {ndim} dimensions (labels have 1, images "
                        f"3 or {IDX_MAX_DIMS})")
    if len(blob) < 4 + 4 * ndim:
        raise DataError(f"{where}: truncated IDX header")
    shape = tuple(int(d) for d in np.frombuffer(blob, ">u4", ndim, 4))
    return shape, np.dtype(IDX_DTYPES[blob[2]])


def parse_idx(blob: bytes, where) -> np.ndarray:
    shape, dtype = _idx_header(blob, where)
    header = 4 + 4 * len(shape)
    need = math.prod(shape) * dtype.itemsize   # Python ints: a huge header cannot wrap around
    if len(blob) - header != need:
        raise DataError(f"{where}: corrupt file: IDX header claims {shape} = {need:,} bytes of "
                        f"data, the file has {len(blob) - header:,} bytes")
    return np.frombuffer(blob, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def _find_idx(folder: Path, split_names: tuple[str, ...], kind: str) -> Path | None:
    for split in split_names:
        for sep in ("-", "."):
            base = f"{split}-{kind}{sep}idx{3 if kind == 'images' else 1}-ubyte"
            for name in (base, base + ".gz"):
                if (folder / name).is_file():
                    return folder / name
    return None


def is_idx_dir(folder: Path) -> bool:
    return _find_idx(folder, ("train",), "images") is not None


def read_idx_dir(folder: Path) -> RawData:
    """train-images-idx3-ubyte[.gz] etc., plus optional t10k-* / test-* files."""
    files = {(split, kind): _find_idx(folder, names, kind)
             for split, names in (("train", ("train",)), ("test", ("t10k", "test")))
             for kind in ("images", "labels")}
    if files["train", "labels"] is None:
        raise DataError(f"{folder} has {files['train', 'images'].name} but no "
                        f"train-labels-idx1-ubyte[.gz]")
    if (files["test", "images"] is None) != (files["test", "labels"] is None):
        have = files["test", "images"] or files["test", "labels"]
        raise DataError(f"{folder} has {have.name} but not its images/labels partner")
    test = files["test", "images"]
    return RawData(read_idx(files["train", "images"]), read_idx(files["train", "labels"]),
                   None if test is None else read_idx(test),
                   None if test is None else read_idx(files["test", "labels"]))


def read_idx_pair(images: Path, labels: Path) -> RawData:
    return RawData(read_idx(images), read_idx(labels))


# ---------------------------------------------------------------- CIFAR-10 binary

CIFAR_RECORD = 1 + 3 * 32 * 32


def read_cifar10(archive: Path) -> RawData:
    """cifar-10-binary.tar.gz read in place: 1 label byte + 3072 CHW bytes per record."""
    def batch(tar, name):
        member = tar.extractfile(f"cifar-10-batches-bin/{name}")
        records = np.frombuffer(member.read(), np.uint8)
        if records.size % CIFAR_RECORD:
            raise DataError(f"{archive}: {name} is not a whole number of CIFAR-10 records")
        records = records.reshape(-1, CIFAR_RECORD)
        return records[:, 1:].reshape(-1, 3, 32, 32), records[:, 0].astype(np.int64)

    try:
        with tarfile.open(archive, "r:gz") as tar:
            train = [batch(tar, f"data_batch_{i}.bin") for i in range(1, 6)]
            x_test, y_test = batch(tar, "test_batch.bin")
            meta = tar.extractfile("cifar-10-batches-bin/batches.meta.txt").read()
    except (OSError, EOFError, KeyError, AttributeError, tarfile.TarError) as err:
        raise DataError(f"{archive} is not a complete CIFAR-10 binary archive ({err})",
                        hint="delete it so it is downloaded again") from None
    names = [n.strip() for n in meta.decode("ascii", "replace").splitlines() if n.strip()]
    return RawData(np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train]),
                   x_test, y_test, names, layout="NCHW")


# ---------------------------------------------------------------- image folders

def _pillow():
    try:
        from PIL import Image
    except ImportError:
        raise DataError("reading image files needs pillow",
                        hint="pip install 'cnncli[images]'") from None
    return Image


def pil_mode(channels: int) -> str:
    modes = {1: "L", 3: "RGB", 4: "RGBA"}
    if channels not in modes:
        raise DataError(f"images can be read for 1, 3 or 4 channels, but the model input has "
                        f"{channels}", key="input_shape")
    return modes[channels]


#: Larger images are refused before decoding (a tiny PNG can claim gigapixels). Below PIL's
#: own limit, so its DecompressionBombWarning never fires.
MAX_IMAGE_PIXELS = 1 << 26


def read_image(path: Path, channels: int, size: tuple[int, int] | None = None,
               resize: str = "fit", size_hint: str = "use resize=fit or resize=crop",
               out: np.ndarray | None = None) -> np.ndarray:
    """One image as uint8 (C, H, W), brought to ``size`` = (H, W) when given: stretched
    (bilinear, ``fit``), scaled to cover it and centre-cropped (``crop``), or refused.
    Written into ``out`` (a (C, H, W) uint8 view, e.g. a batch's row) when given."""
    Image = _pillow()
    try:
        opened = open_simple_png(path, MAX_IMAGE_PIXELS) if path.suffix.lower() == ".png" \
            else None
        if opened is None:
            with warnings.catch_warnings():  # a size past PIL's limit is refused below
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                opened = Image.open(path)
        with opened as img:
            width, height = img.size
            if width * height > MAX_IMAGE_PIXELS:
                raise DataError(_too_many_pixels(path, f"{width}x{height} pixels"))
            if size is not None and img.size != (size[1], size[0]):
                if resize == "none":
                    raise DataError(f"{path} is {width}x{height} (WxH) but the model "
                                    f"takes {size[1]}x{size[0]} images",
                                    hint=size_hint)
                if img.format == "JPEG":  # decode at 1/2, 1/4 or 1/8 scale when that still
                    img.draft(img.mode, (size[1], size[0]))  # covers the size: far cheaper
            if img.mode != pil_mode(channels):
                img = img.convert(pil_mode(channels))
            if size is not None and img.size != (size[1], size[0]):
                if resize == "crop":
                    img = _cover(img, size, Image.BILINEAR)
                img = img.resize((size[1], size[0]), Image.BILINEAR)
            arr = np.asarray(img, dtype=np.uint8)
    except DataError:
        raise
    except Image.DecompressionBombError:  # past twice PIL's limit: it refuses to open it
        raise DataError(_too_many_pixels(path, "over 178 million pixels")) from None
    except Exception as err:  # pillow raises many types for a bad file
        raise DataError(f"cannot read image {path}: {err}") from None
    arr = arr[None] if arr.ndim == 2 else np.moveaxis(arr, -1, 0)
    if out is None:
        return arr
    out[...] = arr
    return out


def _cover(img, size: tuple[int, int], resample):
    """Scale ``img`` so that it covers (H, W), keeping its aspect ratio, then cut the centre."""
    (h, w), (iw, ih) = size, img.size
    scale = max(h / ih, w / iw)
    sw, sh = max(w, round(iw * scale)), max(h, round(ih * scale))
    img = img.resize((sw, sh), resample)
    left, top = (sw - w) // 2, (sh - h) // 2
    return img.crop((left, top, left + w, top + h))


def _too_many_pixels(path: Path, size: str) -> str:
    return (f"image {path} is too large to read ({size}; cnncli reads up to "
            f"{MAX_IMAGE_PIXELS:,}): a damaged file or a decompression bomb?")


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def _class_dirs(folder: Path, skipped: list[Path] | None = None) -> list[Path]:
    """Subfolders, without hidden ones (.ipynb_checkpoints, .git), which go to ``skipped``
    so that the user is told."""
    dirs = sorted(p for p in folder.iterdir() if p.is_dir())
    if skipped is not None:
        skipped.extend(p for p in dirs if p.name.startswith("."))
    return [p for p in dirs if not p.name.startswith(".")]


class FileList:
    """Files under one folder, held as one array of their relative names and handed out as
    Paths: a list of 100k Path objects costs about 38 MiB, this array a tenth of that, so
    a streamed image folder's memory grows little with its size."""

    def __init__(self, root: Path, names: list[str]):
        self.root = root
        self._names = np.array(names, dtype=str) if names else np.empty(0, "U1")

    def __len__(self) -> int:
        return len(self._names)

    def __getitem__(self, index: int) -> Path:
        return self.root / str(self._names[index])

    def __iter__(self):
        return (self.root / str(name) for name in self._names)

    @property
    def nbytes(self) -> int:
        return self._names.nbytes


def _class_files(folder: Path, class_names: list[str]) -> tuple[FileList, np.ndarray]:
    names, labels = [], []
    for label, name in enumerate(class_names):
        sub = folder / name
        found = sorted(p.name for p in sub.iterdir() if p.is_file() and is_image(p)) \
            if sub.is_dir() else []
        names.extend(f"{name}/{file}" for file in found)
        labels.extend([label] * len(found))
    if not names:
        raise DataError(f"{folder} holds no images (.png, .jpg, ...) in its class subfolders")
    return FileList(folder, names), np.asarray(labels, np.int64)


def _check_one_size(files, size_hint: str) -> None:
    """Every image of the same size, from the files' headers (no pixel is decoded); a file
    that is not an image is refused now, not half way through an epoch."""
    Image = _pillow()
    first = None
    for file in files:
        found = png_size(file)
        if found is None:
            try:
                with Image.open(file) as img:
                    found = img.size
            except Exception as err:  # noqa: BLE001  (pillow raises many types)
                raise DataError(f"cannot read image {file}: {err}") from None
        if first is None:
            first, first_size = file, found
        elif found != first_size:
            raise DataError(f"{file} is {found[0]}x{found[1]} but {first} is "
                            f"{first_size[0]}x{first_size[1]}; all images must have one size",
                            hint=size_hint)


#: What an image folder's images of another size than the model's input need.
RESIZE_HINT = "set data.resize: fit (stretch) or crop (scale and centre-crop)"


class ImageFiles:
    """Image files decoded on demand to uint8 (C, H, W) of one size, in ``threads`` threads."""

    def __init__(self, paths, shape: tuple[int, int, int], resize: str | None,
                 threads: int = 1, size_hint: str = RESIZE_HINT):
        """``paths``: a sequence of Paths (a FileList, or a list)."""
        self.paths, self.image_shape = paths, tuple(shape)
        self.resize, self.size_hint = resize or "none", size_hint
        self.dtype = np.dtype(np.uint8)
        self.threads = threads
        self._pool: ThreadPoolExecutor | None = None
        self.decoded, self.decode_seconds = 0, 0.0  # images so far, and their decoding's CPU
        self._counting = threading.Lock()

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def shape(self) -> tuple:
        return (len(self.paths),) + self.image_shape

    def decode(self, rows: np.ndarray, out: np.ndarray) -> None:
        """Images ``rows`` decoded into ``out[0], out[1], ...``."""
        c, h, w = self.image_shape
        started = time.thread_time()
        for i, row in enumerate(rows.tolist()):
            read_image(self.paths[row], c, (h, w), self.resize, self.size_hint, out[i])
        with self._counting:
            self.decoded += len(rows)
            self.decode_seconds += time.thread_time() - started

    def read(self, rows: np.ndarray) -> np.ndarray:
        out = np.empty((len(rows),) + self.image_shape, np.uint8)
        parts = min(self.threads, len(rows))
        if parts <= 1:
            self.decode(rows, out)
            return out
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="cnncli-decode")
        # One contiguous share of the batch per thread, each image written at its own row:
        # the result does not depend on the thread count.
        bounds = np.linspace(0, len(rows), parts + 1).astype(int)
        shares = [self._pool.submit(self.decode, rows[lo:hi], out[lo:hi])
                  for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]
        for share in shares:
            share.result()
        return out


def read_image_folder(folder: Path, channels: int, size: tuple[int, int] | None = None,
                      resize: str | None = None, threads: int = 1, prefetch: int = 4,
                      size_hint: str = RESIZE_HINT) -> RawData:
    """<folder>/<class>/*.png, or <folder>/train/<class>/... with an optional test/, listed
    now and decoded when indexed, to (H, W) = ``size`` (default: the first image's)."""
    train_dir = folder / "train" if (folder / "train").is_dir() else folder
    skipped: list[Path] = []
    class_dirs = _class_dirs(train_dir, skipped)
    if not class_dirs:
        hidden = f" (only hidden ones: {', '.join(p.name for p in skipped)})" if skipped else ""
        raise DataError(f"{train_dir} has no class subfolders{hidden}",
                        hint="put the images of each class in their own subfolder")
    names = [d.name for d in class_dirs]
    train_files, y_train = _class_files(train_dir, names)
    test_dir = folder / "test" if train_dir != folder and (folder / "test").is_dir() else None
    test_files, y_test = _class_files(test_dir, names) if test_dir else (FileList(folder, []),
                                                                        None)
    if not resize:  # refused now, not half way through an epoch
        _check_one_size(itertools.chain(train_files, test_files), size_hint)
    if size is None:
        size = read_image(train_files[0], channels).shape[1:]
    else:
        read_image(train_files[0], channels, size, resize or "none", size_hint)

    def lazy(files):
        source = ImageFiles(files, (channels, *size), resize, threads, size_hint)
        return ImageRows(source, prefetch=prefetch)

    x_train, x_test = lazy(train_files), None
    if test_dir is not None:
        extra = sorted(set(d.name for d in _class_dirs(test_dir, skipped)) - set(names))
        if extra:
            raise DataError(f"{test_dir} has class folders missing from train/: "
                            f"{', '.join(extra)}")
        x_test = lazy(test_files)
    return RawData(x_train, y_train, x_test, y_test, names, layout="NCHW",
                   skipped=[str(p.relative_to(folder)) for p in skipped])



# ---------------------------------------------------------------- npy_dir (cnncli data pack)

NPY_DIR_META = "meta.json"


def is_npy_dir(folder: Path) -> bool:
    return (folder / "x_train.npy").is_file()


def read_npy_dir(folder: Path) -> RawData:
    """x_train.npy, y_train.npy [, x_test.npy, y_test.npy] memory-mapped, and meta.json's
    class_names, layout and value_max: the images stay on disk until indexed."""
    import json

    if not is_npy_dir(folder):
        raise DataError(f"{folder} has no x_train.npy, so it is not an npy_dir",
                        key="format", hint="write one with: cnncli data pack SRC OUT")
    arrays = {}
    for key in ("x_train", "y_train", "x_test", "y_test"):
        if (folder / f"{key}.npy").is_file():
            arrays[key] = open_npy(folder / f"{key}.npy")
    if "y_train" not in arrays:
        raise DataError(f"{folder} has x_train.npy but no y_train.npy")
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise DataError(f"{folder} has {'x_test' if 'x_test' in arrays else 'y_test'}.npy but "
                        f"not its partner")
    meta = {}
    if (folder / NPY_DIR_META).is_file():
        try:
            meta = json.loads((folder / NPY_DIR_META).read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise DataError(f"cannot read {folder / NPY_DIR_META}: {err}") from None
        if not isinstance(meta, dict):
            raise DataError(f"{folder / NPY_DIR_META} must hold a JSON object")
    names = meta.get("class_names")
    if names is not None:
        _check_name_count(folder, len(names), [arrays["y_train"], arrays.get("y_test")])
    return RawData(arrays["x_train"], np.asarray(arrays["y_train"]), arrays.get("x_test"),
                   None if "y_test" not in arrays else np.asarray(arrays["y_test"]),
                   None if names is None else [str(n) for n in names],
                   value_max=meta.get("value_max"), layout=meta.get("layout"))

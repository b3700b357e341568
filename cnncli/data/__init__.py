"""Datasets for training and inputs for prediction: read, check, split, normalise, batch."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cnncli.config.schema import DATASETS, DataConfig
from cnncli.data import download, sources
from cnncli.data.batching import iterate_batches
from cnncli.data.streaming import ImageRows, MappedArray
from cnncli.data.transforms import (
    as_labels,
    check_images,
    fit_normalization,
    normalize,
    stratified_split,
    to_nchw,
)
from cnncli.errors import DataError

__all__ = ["Dataset", "load_dataset", "download_dataset", "normalize", "load_inputs",
           "iterate_batches", "decoding_cost", "keep_decoded"]

IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")


@dataclass
class Dataset:
    """Normalised float32 NCHW splits with int64 labels, plus what is needed to redo it."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: list[str]
    normalization: dict
    skipped: list[str] = field(default_factory=list)  # hidden folders the source left out


def load_dataset(data_cfg: DataConfig, input_shape: tuple, num_classes: int, seed: int,
                 root: Path | None = None, normalization: dict | None = None, *,
                 training: bool = False, progress: download.Progress | None = None,
                 decoded_cache: Path | None = None) -> Dataset:
    """Read the source ``data_cfg`` names, check it fits the model, split and normalise it.

    ``normalization`` (e.g. a checkpoint's) is reused instead of fitting the training split.
    ``training``: data that names its classes must have two or more, each with an image.
    ``progress`` is told about first-use downloads (see ``download.fetch``).
    ``decoded_cache``: a folder where an image folder's decoded images may have been kept
    (``keep_decoded``); read, never written, here.
    """
    input_shape = _image_shape(input_shape)
    raw = read_source(data_cfg, input_shape[0], root, progress=progress, size=input_shape[1:])
    try:
        x_train, y_train, x_test, y_test = _checked_arrays(raw, data_cfg, input_shape,
                                                           num_classes)
    except DataError as err:
        path = data_cfg.path
        if err.key is None and path is not None:  # unlocated: name the file it is about
            path = path[0] if isinstance(path, (list, tuple)) else path
            err.message = f"{path}: {err.message}"
        raise
    if decoded_cache is not None:  # the statistics below read a cache too
        keep_decoded(Dataset(x_train, y_train, x_train, y_train, x_test, y_test, [], {}),
                     decoded_cache, writing=False)
    if training:
        _check_classes(raw.class_names, y_train, data_cfg)
    class_names = _class_names(raw.class_names, num_classes)

    fraction = float(data_cfg.val_split or 0.0)
    train_idx, val_idx = stratified_split(y_train, fraction, np.random.default_rng([seed, 2]))
    if fraction > 0 and len(val_idx) == 0:
        raise DataError(f"val_split {fraction} of {len(y_train)} training images leaves no "
                        f"validation images", key="val_split",
                        hint=f"use val_split >= {0.5 / max(np.bincount(y_train).max(), 1):.3g} "
                             f"or 0")
    if len(train_idx) == 0:
        raise DataError(f"val_split {fraction} leaves no training images", key="val_split")
    stats = normalization if normalization is not None else fit_normalization(
        _rows(x_train, train_idx), data_cfg.normalize or "none", raw.value_max)
    return Dataset(_normalized(x_train, train_idx, stats), y_train[train_idx],
                   _normalized(x_train, val_idx, stats), y_train[val_idx],
                   _normalized(x_test, None, stats), y_test, class_names, stats, raw.skipped)


def decoding_cost(dataset: Dataset) -> float | None:
    """CPU seconds per image that decoding the training images from files has cost so far;
    None when they are not decoded from image files (arrays, an npy_dir)."""
    source = getattr(dataset.x_train, "source", None)
    source = getattr(source, "files", source)  # decoded_cache.DecodedCache's files
    if not isinstance(source, sources.ImageFiles) or source.decoded == 0:
        return None
    return source.decode_seconds / source.decoded


def keep_decoded(dataset: Dataset, folder: Path, *, writing: bool = True) -> None:
    """Keep the images of a streamed image folder, once decoded, in ``folder`` (``data.cache``):
    a cache there of the same files is read; else, when ``writing``, one is written as the
    first epoch decodes them. Arrays and npy_dirs are left as they are."""
    from cnncli.data.decoded_cache import DecodedCache

    splits = [("train", (dataset.x_train, dataset.x_val)), ("test", (dataset.x_test,))]
    for name, views in splits:
        streamed = [x for x in views if isinstance(x, ImageRows)]
        source = streamed[0].source if streamed else None
        if isinstance(source, DecodedCache):
            source.writing = source.writing or writing
        elif isinstance(source, sources.ImageFiles):
            cache = DecodedCache(source, Path(folder) / f"{name}.npy", writing=writing)
            for x in streamed:  # the train and validation views share their source
                x.source = cache


def _rows(x, rows):
    """``x[rows]``: a copy of an array, a view of a streamed dataset."""
    return x.subset(rows) if isinstance(x, ImageRows) else x[rows]


def _normalized(x, rows, stats: dict):
    """Model input of ``x[rows]`` (all rows for None): computed now for an array, batch by
    batch when indexed for a streamed dataset."""
    if isinstance(x, ImageRows):
        return (x if rows is None else x.subset(rows)).normalized(stats)
    return normalize(x if rows is None else x[rows], stats)


def _nchw(x, input_shape: tuple, layout: str | None, what: str, prefetch: int):
    """Images as NCHW: a memory-mapped file stays on disk (streamed), as does an image folder."""
    if isinstance(x, ImageRows):
        return x
    if isinstance(x, np.memmap):
        return ImageRows(MappedArray(x, to_nchw(x, input_shape, layout, what)),
                         prefetch=prefetch)
    return to_nchw(x, input_shape, layout, what)


def _checked_arrays(raw, data_cfg: DataConfig, input_shape: tuple, num_classes: int):
    """NCHW images and int64 labels of the train and test splits, checked against the model."""
    layout = raw.layout or data_cfg.layout
    x_train = _nchw(raw.x_train, input_shape, layout, "x_train", data_cfg.prefetch)
    if len(x_train) == 0:
        raise DataError("the training split is empty (x_train has 0 images)")
    check_images(x_train, input_shape, "x_train")
    y_train = as_labels(raw.y_train, len(x_train), num_classes, "train")
    if raw.x_test is not None:
        x_test = _nchw(raw.x_test, input_shape, layout, "x_test", data_cfg.prefetch)
        check_images(x_test, input_shape, "x_test")
        y_test = as_labels(raw.y_test, len(x_test), num_classes, "test")
    else:
        x_test, y_test = np.zeros((0,) + input_shape, x_train.dtype), np.zeros(0, np.int64)
    return x_train, y_train, x_test, y_test


def _image_shape(input_shape) -> tuple:
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 3:
        raise DataError(f"image data needs a model input_shape [C, H, W], got {list(shape)}",
                        key="input_shape")
    return shape


def _check_classes(names: list[str] | None, y_train: np.ndarray, data_cfg: DataConfig) -> None:
    """One class alone trains nothing (loss 0, "100%"), and a named class without training
    images (an empty class folder) can never be learnt."""
    source = data_cfg.path or data_cfg.dataset
    present = np.unique(y_train)
    if len(present) < 2:
        only = names[present[0]] if names else int(present[0])
        raise DataError(f"{source}: every training image is of class {only!r}; a classifier "
                        f"needs at least two classes", key="path",
                        hint="for an image folder, put each class's images in its own "
                             "subfolder")
    empty = [name for i, name in enumerate(names or []) if i not in present]
    if empty:
        raise DataError(f"{source}: class {empty[0]!r} has no training images, so the model "
                        f"could never learn it", key="path",
                        hint="add images to its subfolder, or remove the class")


def _class_names(names: list[str] | None, num_classes: int) -> list[str]:
    if names is None:
        return [str(i) for i in range(num_classes)]
    if len(names) != num_classes:
        raise DataError(f"the data has {len(names)} classes but the model outputs "
                        f"{num_classes} scores",
                        hint=f"make the last layer output {len(names)} units")
    return list(names)


def download_dataset(data_cfg: DataConfig, root: Path | None = None, *,
                     progress: download.Progress | None = None) -> dict[str, Path]:
    """The cached files of the public dataset ``data_cfg`` names, downloading the missing
    ones; {} for data that needs no download (``path``, or the bundled digits)."""
    name = data_cfg.dataset or "digits"
    if data_cfg.path is not None or name not in download.SOURCES:
        return {}
    cache = data_cfg.cache_dir
    if cache and root is not None:
        cache = Path(root) / Path(cache).expanduser()
    return download.fetch(name, cache, progress=progress)


def read_source(data_cfg: DataConfig, channels: int, root: Path | None = None, *,
                progress: download.Progress | None = None,
                size: tuple[int, int] | None = None) -> sources.RawData:
    """Raw arrays of the configured ``dataset`` or ``path``; an image folder is listed, its
    images decoded when indexed and brought to ``size`` (H, W) as ``data.resize`` says."""
    path = data_cfg.path
    if path is not None:
        return read_path(path, channels, root, size=size, data_cfg=data_cfg)
    name = data_cfg.dataset or "digits"
    if name == "digits":
        return sources.read_digits()
    if name in ("mnist", "fashion-mnist"):
        files = download_dataset(data_cfg, root, progress=progress)
        raw = sources.read_idx_dir(next(iter(files.values())).parent)
        raw.class_names = (sources.FASHION_CLASSES if name == "fashion-mnist"
                           else [str(i) for i in range(10)])
        return raw
    if name == "cifar10":
        files = download_dataset(data_cfg, root, progress=progress)
        return sources.read_cifar10(files["cifar-10-binary.tar.gz"])
    raise DataError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}",
                    key="dataset")


def _resolve(path, root: Path | None) -> Path:
    p = Path(path).expanduser()
    p = p if p.is_absolute() or root is None else Path(root) / p
    if not p.exists():
        raise DataError(f"data.path {str(path)!r} does not exist"
                        + (f" (looked in {p.parent})" if root is not None else ""), key="path")
    return p


def read_path(path, channels: int, root: Path | None = None, *,
              size: tuple[int, int] | None = None,
              data_cfg: DataConfig | None = None) -> sources.RawData:
    """An .npz, an IDX directory / file / [images, labels] pair, CIFAR-10 archive, a folder
    of images or an npy_dir (``cnncli data pack``); ``data_cfg`` gives format, resize,
    loader_threads and prefetch."""
    cfg = data_cfg or DataConfig()
    if isinstance(path, (list, tuple)):
        if len(path) == 2:
            return sources.read_idx_pair(_resolve(path[0], root), _resolve(path[1], root))
        path = path[0]
    p = _resolve(path, root)
    name = p.name.lower()
    if cfg.format == "npy_dir" or (p.is_dir() and sources.is_npy_dir(p)):
        return sources.read_npy_dir(p)
    if p.is_dir():
        if sources.is_idx_dir(p):
            return sources.read_idx_dir(p)
        return sources.read_image_folder(p, channels, size, cfg.resize, cfg.loader_threads,
                                         cfg.prefetch)
    if name.endswith(".npz"):
        return sources.read_npz(p)
    if name.endswith((".tar.gz", ".tgz")):
        return sources.read_cifar10(p)
    if "idx3-ubyte" in name:
        base = p.name.removesuffix(".gz").replace("images", "labels").replace("idx3", "idx1")
        labels = [q for q in (p.with_name(base), p.with_name(base + ".gz")) if q.is_file()]
        if not labels:
            raise DataError(f"no labels file next to {p}",
                            hint="give path: [images-file, labels-file]", key="path")
        return sources.read_idx_pair(p, labels[0])
    raise DataError(f"data.path {str(path)!r} is not an .npz, IDX file, CIFAR-10 archive or "
                    f"image folder", key="path")


# ---------------------------------------------------------------- predict inputs

def load_inputs(paths: list[str], input_shape, normalization: dict, resize: str = "fit"
                ) -> tuple[np.ndarray, list[str]]:
    """Images, .npy or .npz files -> normalised float32 NCHW and one label per row. Images of
    another size are stretched (``fit``), scaled and centre-cropped (``crop``) or refused.

    Labels are file names ("digit.png", "batch.npy[3]"); full paths if two names clash.
    """
    input_shape = _image_shape(input_shape)
    if not paths:
        raise DataError("no inputs given")
    batches, labels = [], []
    names = [Path(text).name for text in paths]
    unique = len(set(names)) == len(names)  # short labels unless two files share a name
    for text, name in zip(paths, names, strict=True):
        p, label = Path(text), name if unique else text
        if not p.is_file():
            raise DataError(f"input {text!r} does not exist or is not a file")
        if sources.is_image(p):
            img = sources.read_image(p, input_shape[0], size=input_shape[1:],
                                     resize=resize)[None]
            batches.append(normalize(img, _image_normalization(normalization)))
            labels.append(label)
            continue
        if p.suffix.lower() not in (".npz", ".npy"):
            raise DataError(f"input {text!r} is not an image, .npy or .npz file")
        array = _pick_array(p)
        if array.size == 0:
            raise DataError(f"input {text!r} holds no images (an empty array of shape "
                            f"{array.shape})", hint="save at least one image in it")
        x = _input_images(array, input_shape, text)
        check_images(x, input_shape, text)
        batches.append(normalize(x, normalization))
        labels.extend(f"{label}[{i}]" for i in range(len(x)))
    x = np.concatenate(batches)
    if len(x) == 0:
        raise DataError(f"the inputs {', '.join(paths)} hold no images")
    return np.ascontiguousarray(x, dtype=np.float32), labels


def _image_normalization(normalization: dict) -> dict:
    """Image files are 0..255 whatever the training data's range: map 255 to the scaled 1."""
    if str(normalization.get("mode", "none")) == "none":
        return dict(normalization)
    return {**normalization, "scale": np.float32(255.0)}


def _pick_array(p: Path) -> np.ndarray:
    arrays = sources.read_array_file(p)
    if not arrays:
        raise DataError(f"input {str(p)!r} is an .npz file with no arrays in it",
                        hint="save the images in it as x, e.g. np.savez(path, x=images)")
    for key in ("", "x", "x_test"):
        if key in arrays:
            return arrays[key]
    if len(arrays) == 1:
        return next(iter(arrays.values()))
    raise DataError(f"{p} holds {', '.join(sorted(arrays))}; cannot tell which are the images",
                    hint="name the image array x")


def _input_images(x: np.ndarray, input_shape: tuple, what: str) -> np.ndarray:
    """Accept one image ((H, W), (C, H, W), (H, W, C)) or a batch, as an NCHW batch."""
    c, h, w = input_shape
    if x.ndim == 2:
        x = x[None]
    elif x.ndim == 3 and c > 1 and x.shape in ((c, h, w), (h, w, c)):
        x = x[None]
    return to_nchw(x, input_shape, None, what)

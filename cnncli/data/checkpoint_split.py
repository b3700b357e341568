"""The data a checkpoint is evaluated on (``cnncli eval``): one split of the run's own data,
re-split exactly as in training, or of other data (``data``), normalised with the
checkpoint's statistics and with its classes matched to the checkpoint's by name."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from cnncli.config.schema import DATASETS, DataConfig, RunConfig
from cnncli.data import load_dataset, read_source
from cnncli.data.transforms import as_labels, check_images, normalize, stratified_split, to_nchw
from cnncli.errors import DataError


def data_config(run: RunConfig, data: str | None) -> DataConfig:
    """The run's data config, with other data swapped in (a dataset name or a path)."""
    cfg = run.data
    if data is None:
        return cfg
    if data in DATASETS:
        return dataclasses.replace(cfg, dataset=data, path=None)
    if not Path(data).exists():
        raise DataError(f"data={data!r} is neither a dataset name ({', '.join(DATASETS)}) "
                        f"nor an existing path", key="data")
    return dataclasses.replace(cfg, dataset=None, path=data)


SPLITS = ("test", "val", "train", "all")


def _empty_split(split: str, sizes: dict) -> DataError:
    others = [s for s, n in sizes.items() if n and s != split]
    hint = f"use split={others[0]}" if others else None
    if split == "test" and others:  # e.g. a flat image folder: no test/ subfolder
        hint = ("use split=all for every image, or split=train for the images not held "
                "out by val_split")
    return DataError(f"the {split} split of this data is empty", hint=hint)


def checkpoint_split(ckpt, model, data: str | None, split: str, *, progress=None):
    """Images and labels of one split, normalised with the checkpoint's own statistics.

    The run's own data is re-split exactly as in training (same seed). Other data (``data``) is
    read raw and normalised with the stored training statistics, never its own. ``split``
    "all" is every image: train, val and test together. ``progress`` hears about first-use
    downloads (``download.fetch``).
    """
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    cfg = data_config(ckpt.run, data)
    seed = ckpt.run.seed
    shape, num_classes = tuple(model.input_shape), model.output_shape[0]
    if data is None:
        try:
            ds = load_dataset(cfg, shape, num_classes, seed,
                              normalization=ckpt.normalization or None,  # the stored stats
                              progress=progress)
        except DataError as err:
            if err.key == "path" and not Path(str(cfg.path)).is_absolute():
                err.message = f"the run's {err.message}"
                err.hint = ("relative paths are read from the current directory: run eval "
                            "where you trained, or pass data=PATH")
            raise
        parts = ("train", "val", "test") if split == "all" else (split,)
        x = np.concatenate([getattr(ds, f"x_{s}") for s in parts])
        y = np.concatenate([getattr(ds, f"y_{s}") for s in parts])
        y = _checkpoint_classes(y, ds.class_names, ckpt, "the run's data")
        if len(y) == 0:
            raise _empty_split(split, {s: len(getattr(ds, f"y_{s}"))
                                       for s in ("test", "val", "train")})
        return x, y
    raw = read_source(cfg, shape[0], progress=progress)
    layout = raw.layout or cfg.layout
    has_test = raw.x_test is not None and len(raw.x_test) > 0
    if split == "test" and not has_test:
        raise _empty_split("test", {"train": len(raw.x_train)})
    pieces = [(raw.x_test, raw.y_test)] if split == "test" else [(raw.x_train, raw.y_train)]
    if split == "all" and has_test:
        pieces.append((raw.x_test, raw.y_test))
    x = np.concatenate([to_nchw(x_raw, shape, layout, f"{data} {split}")
                        for x_raw, _ in pieces])
    check_images(x, shape, f"{data} {split}")
    names = raw.class_names
    y_raw = pieces[0][1] if len(pieces) == 1 else np.concatenate(  # (N,) or (N, 1) labels
        [np.asarray(y_part).reshape(len(y_part), -1) for _, y_part in pieces])
    y = as_labels(y_raw, len(x), len(names) if names else num_classes, f"{data} {split}")
    y = _checkpoint_classes(y, names, ckpt, f"data={data}")
    if split in ("val", "train"):
        fraction = cfg.val_split
        train_idx, val_idx = stratified_split(y, fraction, np.random.default_rng([seed, 2]))
        pick = val_idx if split == "val" else train_idx
        if len(pick) == 0:
            raise _empty_split(split, {"test": 0 if raw.x_test is None else len(raw.x_test)})
        x, y = x[pick], y[pick]
    return normalize(x, ckpt.normalization), y


def _checkpoint_classes(y, names, ckpt, what: str):
    """Labels index the data's own class list: map them onto the checkpoint's by name, so an
    image folder without one class (or with other classes) is not scored against wrong ones."""
    trained = list(ckpt.class_names)
    if not names or not trained or list(names) == trained:
        return y
    unknown = [n for n in names if n not in trained]
    if unknown:
        shown = ", ".join(unknown[:5]) + (", ..." if len(unknown) > 5 else "")
        raise DataError(f"{what} has classes the checkpoint was not trained on: {shown}",
                        hint=f"its classes are {', '.join(trained[:10])}"
                             + (", ..." if len(trained) > 10 else ""))
    return np.array([trained.index(n) for n in names], dtype=np.int64)[y]

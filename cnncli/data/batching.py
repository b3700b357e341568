"""Shuffled mini-batches with vectorised augmentation (random crop, horizontal flip)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from cnncli.config.schema import AugmentConfig
from cnncli.errors import ConfigError


def iterate_batches(x: np.ndarray, y: np.ndarray, batch_size: int, rng: np.random.Generator,
                    *, shuffle: bool = True, augment: AugmentConfig | None = None,
                    min_last_batch: int = 1) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """One epoch of (x_batch, y_batch); a fresh permutation per call, last partial batch kept.

    A final batch smaller than ``min_last_batch`` joins the one before it (batch norm cannot
    train on a single sample).
    """
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive int, got {batch_size!r}",
                          key="batch_size")
    n = len(y)
    order = rng.permutation(n) if shuffle else np.arange(n)
    pad = augment.random_crop if augment is not None else 0
    flip = augment.horizontal_flip if augment is not None else False
    starts = batch_starts(n, batch_size, min_last_batch)
    indices = [order[start:stop] for start, stop in zip(starts, starts[1:] + [n], strict=True)]
    # A streamed dataset reads batches ahead in the background; augmentation stays here, in
    # order, so the random numbers and the batches do not depend on it.
    prefetched = getattr(x, "prefetched", None)
    loaded = prefetched(indices) if prefetched else (x[idx] for idx in indices)
    for idx, xb in zip(indices, loaded, strict=True):
        if pad:
            xb = random_crop(xb, pad, rng)
        if flip:
            xb = random_hflip(xb, rng)
        yield np.ascontiguousarray(xb), y[idx]


def batch_starts(n: int, batch_size: int, min_last_batch: int = 1) -> list[int]:
    """Start index of each batch of one epoch over ``n`` samples."""
    starts = list(range(0, n, batch_size))
    if len(starts) > 1 and n - starts[-1] < min_last_batch:
        starts.pop()
    return starts


def random_crop(x: np.ndarray, pad: int, rng: np.random.Generator) -> np.ndarray:
    """Zero-pad H and W by ``pad`` and crop back to H x W at a random offset per image."""
    n, c, h, w = x.shape
    padded = np.zeros((n, c, h + 2 * pad, w + 2 * pad), dtype=x.dtype)
    padded[:, :, pad:pad + h, pad:pad + w] = x
    dy = rng.integers(0, 2 * pad + 1, size=n)
    dx = rng.integers(0, 2 * pad + 1, size=n)
    rows = (dy[:, None] + np.arange(h))[:, None, :, None]
    cols = (dx[:, None] + np.arange(w))[:, None, None, :]
    return padded[np.arange(n)[:, None, None, None], np.arange(c)[None, :, None, None],
                  rows, cols]


def random_hflip(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Mirror each image left-right with probability 1/2."""
    flip = rng.random(len(x)) < 0.5
    return np.where(flip[:, None, None, None], x[..., ::-1], x)

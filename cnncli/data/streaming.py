"""Datasets that stay on disk: rows read on demand, image files decoded in background threads.

``ImageRows`` behaves like the NCHW array it stands for (``len``, ``shape``, ``dtype``,
indexing with slices and index arrays), so batching, validation and the trainer need no
change; ``prefetched`` reads the batches of an epoch ahead in a bounded queue.
"""

from __future__ import annotations

import mmap
import queue
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from cnncli.data.transforms import normalize
from cnncli.errors import DataError

#: Mapped pages of an .npy are handed back to the kernel after about this many bytes were read,
#: so the resident memory of a memory-mapped dataset stays flat however large the file. Small,
#: because what is kept counts in the process's resident memory; pages handed back stay in the
#: page cache, so reading them again is cheap (benchmarks/RESULTS.md has the trade).
MAPPED_BYTES_KEPT = 4 << 20
#: What one row read can map: the kernel maps up to 64 KiB of cached pages around a fault.
FAULT_AROUND = 64 << 10


class MappedArray:
    """Rows of a memory-mapped array, whose pages are released as reading goes on."""

    def __init__(self, mapped: np.memmap, view: np.ndarray):
        self.mapped, self.view = mapped, view
        self.shape, self.dtype = view.shape, view.dtype
        self._row_bytes = max(1, int(np.prod(view.shape[1:])) * view.dtype.itemsize)
        self._touched = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.view)

    def read(self, rows: np.ndarray) -> np.ndarray:
        out = self.view[rows]
        with self._lock:
            self._touched += len(rows) * (self._row_bytes + FAULT_AROUND)
            if self._touched > MAPPED_BYTES_KEPT:
                self._touched = 0
                handle = getattr(self.mapped, "_mmap", None)
                if handle is not None and hasattr(handle, "madvise"):
                    handle.madvise(mmap.MADV_DONTNEED)  # clean file pages: read again if needed
        return out


class ImageRows:
    """Rows ``rows`` of a source (``sources.ImageFiles``, ``MappedArray`` or an array) as an
    array of raw images, or of model input once given normalisation statistics."""

    def __init__(self, source, rows: np.ndarray | None = None, normalization: dict | None = None,
                 prefetch: int = 4):
        self.source = source
        self.rows = np.arange(len(source)) if rows is None else np.asarray(rows, np.int64)
        self.normalization = normalization
        self.prefetch = prefetch

    # -- what makes it look like an array
    @property
    def shape(self) -> tuple:
        return (len(self.rows),) + tuple(self.source.shape[1:])

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.float32) if self.normalization is not None else self.source.dtype

    @property
    def ndim(self) -> int:
        return len(self.source.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, tuple):  # x[i, c] or x[rows, ...]: rows first, then the rest
            rows = self[key[0]]
            return rows[key[1:]] if np.ndim(key[0]) == 0 and not isinstance(key[0], slice) \
                else rows[(slice(None),) + key[1:]]
        if isinstance(key, (int, np.integer)):
            return self[np.array([key])][0]
        rows = self.rows[key]
        raw = self.source.read(rows) if hasattr(self.source, "read") else self.source[rows]
        if self.normalization is None:
            return np.asarray(raw)
        return normalize(raw, self.normalization)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        whole = self[:]
        return whole if dtype is None else whole.astype(dtype, copy=False)

    # -- views
    def subset(self, rows: np.ndarray) -> ImageRows:
        return ImageRows(self.source, self.rows[rows], self.normalization, self.prefetch)

    def normalized(self, normalization: dict) -> ImageRows:
        return ImageRows(self.source, self.rows, normalization, self.prefetch)

    def prefetched(self, batches: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """``self[idx]`` for each index array, read up to ``prefetch`` batches ahead."""
        return _read_ahead(self.__getitem__, batches, self.prefetch)


def _read_ahead(read, batches: Iterable[np.ndarray], depth: int) -> Iterator[np.ndarray]:
    """``read(b)`` for each ``b`` in order, computed in a background thread that keeps at most
    ``depth`` results waiting; an error there is raised here, at the batch it belongs to."""
    done = object()
    waiting: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                waiting.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work():
        try:
            for batch in batches:
                if not put((read(batch), None)):
                    return
        except BaseException as err:  # noqa: BLE001  (handed to the consumer, raised there)
            put((None, err))
            return
        put((done, None))

    worker = threading.Thread(target=work, name="cnncli-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item, err = waiting.get()
            if err is not None:
                raise err
            if item is done:
                return
            yield item
    finally:
        stop.set()
        worker.join()


def open_npy(path: Path) -> np.ndarray:
    """A memory-mapped .npy (never unpickling): its rows are read from disk when indexed."""
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as err:
        if "pickle" in str(err).lower() or "object" in str(err).lower():
            raise DataError(f"{path} holds Python objects (pickled arrays), which cnncli "
                            f"refuses to load", hint="save plain numeric arrays") from None
        raise DataError(f"{path} is not a readable NumPy file: {err}") from None
    except OSError as err:
        raise DataError(f"cannot read {path}: {err.strerror or err}") from None

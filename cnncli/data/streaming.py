"""Datasets that stay on disk: rows read on demand, image files decoded in background threads.

``ImageRows`` behaves like the NCHW array it stands for (``len``, ``shape``, ``dtype``,
indexing with slices and index arrays), so batching, validation and the trainer need no
change; ``prefetched`` gives the batches of an epoch: decoded ahead in a bounded queue for
image files, read in place with the kernel reading ahead for an .npy.
"""

from __future__ import annotations

import collections
import itertools
import mmap
import os
import queue
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from cnncli.data.transforms import normalize
from cnncli.errors import DataError

#: Mapped pages of an .npy are handed back to the kernel after about this many bytes were read,
#: so the resident memory of a memory-mapped dataset stays flat however large the file. Only
#: for arrays that cannot be read with ``os.preadv`` (Fortran order, or no preadv: not Linux).
MAPPED_BYTES_KEPT = 4 << 20
#: What one row read can map: the kernel maps up to 64 KiB of cached pages around a fault.
FAULT_AROUND = 64 << 10
#: An npy file of at most 1/WARM_SHARE of the memory is read whole into the page cache at the
#: start of each epoch, in pieces of WARM_PIECE bytes; a larger one is only read ahead by rows.
WARM_SHARE = 4
WARM_PIECE = 1 << 20


class MappedArray:
    """Rows of a memory-mapped array, read from its file without mapping them.

    A C-ordered .npy's rows are read with one ``os.preadv`` per run of consecutive rows into
    a fresh array: nothing of the file is mapped, so the process's memory does not grow with
    the file (the page cache is not its memory) and no page fault is taken per row. Touching
    the mapping instead cost about 3 us per row in page faults once its pages were handed
    back (benchmarks/RESULTS.md). Other arrays are read through the mapping, whose pages are
    handed back every ``MAPPED_BYTES_KEPT`` bytes.
    """

    #: Read in the training thread, not ahead in a background one: on two cores busy with
    #: the step, a reading thread cost more (its Python lock handed back and forth at every
    #: row's read) than the reads it would hide (about 1 us a row from the page cache).
    read_ahead = False

    def __init__(self, mapped: np.memmap, view: np.ndarray):
        self.mapped, self.view = mapped, view
        self.shape, self.dtype = view.shape, view.dtype
        self._row_bytes = max(1, int(np.prod(mapped.shape[1:])) * mapped.dtype.itemsize)
        self._touched = 0
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._whole_file_read = False
        self._warming: threading.Thread | None = None  # the last whole-file read
        self._path = getattr(mapped, "filename", None)  # None for an anonymous mapping
        self._direct = (hasattr(os, "preadv") and mapped.flags.c_contiguous
                        and self._path is not None)

    def __len__(self) -> int:
        return len(self.view)

    def __del__(self):
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)

    def read(self, rows: np.ndarray) -> np.ndarray:
        if self._direct:
            return self._as_view(self._pread(np.asarray(rows, np.int64)))
        out = self.view[rows]
        with self._lock:
            self._touched += len(rows) * (self._row_bytes + FAULT_AROUND)
            if self._touched > MAPPED_BYTES_KEPT:
                self._touched = 0
                handle = getattr(self.mapped, "_mmap", None)
                if handle is not None and hasattr(handle, "madvise"):
                    handle.madvise(mmap.MADV_DONTNEED)  # clean file pages: read again if needed
        return out

    def warm_up(self) -> None:
        """Read the whole file once, in large pieces, in a background thread, when it takes
        at most 1/``WARM_SHARE`` of the machine's memory: the rows' reads then find it in the
        page cache (not this process's memory). A file read a row at a time from the disk
        costs several times more CPU and waits (benchmarks/RESULTS.md)."""
        if not self._direct or (self._warming is not None and self._warming.is_alive()):
            return  # (a read of the whole file is still under way: one is enough)
        fd = self._open()
        size = os.fstat(fd).st_size
        try:
            memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            return
        if size * WARM_SHARE > memory:
            return

        def read_through():
            piece, offset = bytearray(WARM_PIECE), 0
            try:
                while offset < size:
                    got = os.preadv(fd, [piece], offset)
                    if got <= 0:
                        return
                    offset += got
            except OSError:  # the file closed meanwhile: only a hint was lost
                return

        self._warming = threading.Thread(target=read_through, name="cnncli-warm-up",
                                         daemon=True)
        self._warming.start()
        self._whole_file_read = True  # so no hint per row is needed

    def will_need(self, rows: np.ndarray) -> None:
        """Ask the kernel to start reading rows ``rows`` into the page cache (no wait), so
        that their read a few batches later does not wait for the disk."""
        if self._direct and hasattr(os, "posix_fadvise") and len(rows) \
                and not self._whole_file_read:
            fd, size = self._open(), self._row_bytes
            for start, stop, row in self._runs(np.asarray(rows, np.int64)):
                os.posix_fadvise(fd, self.mapped.offset + row * size, (stop - start) * size,
                                 os.POSIX_FADV_WILLNEED)

    def _open(self) -> int:
        with self._lock:
            if self._fd is None:
                self._fd = os.open(self._path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        return self._fd

    def _runs(self, rows: np.ndarray):
        """(first, stop, file row) of each run of consecutive rows: one for a slice."""
        n, first = len(rows), int(rows[0])
        if int(rows[-1]) - first == n - 1 and (n == 1 or bool((np.diff(rows) == 1).all())):
            return [(0, n, first)]
        return zip(range(n), range(1, n + 1), rows.tolist(), strict=True)

    def _pread(self, rows: np.ndarray) -> np.ndarray:
        """File rows ``rows`` (in the file's own layout), one read per run of consecutive rows."""
        out = np.empty((len(rows),) + self.mapped.shape[1:], self.mapped.dtype)
        if not len(rows):
            return out
        if rows.min() < 0 or rows.max() >= len(self.mapped):
            raise IndexError(f"rows {rows.min()}..{rows.max()} of {len(self.mapped)}")
        fd, size, offset = self._open(), self._row_bytes, self.mapped.offset
        flat = out.reshape(len(rows), -1).view(np.uint8)
        for start, stop, row in self._runs(rows):
            got = os.preadv(fd, [flat[start:stop]], offset + row * size)
            if got != (stop - start) * size:
                raise DataError(f"{self._path} is shorter than its header says "
                                f"(row {row + got // size} is missing)",
                                hint="write it again, e.g. with cnncli data pack")
        return out

    def _as_view(self, raw: np.ndarray) -> np.ndarray:
        """Rows in the file's layout -> the layout of ``view`` (NCHW)."""
        if self.view.ndim != self.mapped.ndim:
            return raw[:, None]
        if self.view.strides == self.mapped.strides:
            return raw
        return raw.transpose(0, 3, 1, 2)


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
        """``self[idx]`` for each index array, read (or for an .npy, asked of the kernel) up to
        ``prefetch`` batches ahead."""
        if not getattr(self.source, "read_ahead", True):
            return self._hinted(batches)
        return _read_ahead(self.__getitem__, batches, self.prefetch)

    def _hinted(self, batches: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """``self[idx]`` for each index array, read here; the kernel is asked for each batch's
        rows ``prefetch`` batches ahead, so that it reads them from the disk meanwhile."""
        self.source.warm_up()
        batches, upcoming = iter(batches), collections.deque()
        for idx in itertools.islice(batches, self.prefetch):
            self.source.will_need(self.rows[idx])
            upcoming.append(idx)
        while upcoming:
            following = next(batches, None)
            if following is not None:
                self.source.will_need(self.rows[following])
                upcoming.append(following)
            yield self[upcoming.popleft()]


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

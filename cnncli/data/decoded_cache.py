"""An image folder's decoded images kept in the run directory (``data.cache: true``).

Decoding a PNG costs about as much CPU as LeNet-5's step per image on two cores, so an
image folder cannot train at in-memory speed if it is decoded every epoch. With the cache,
the first epoch decodes as before and also writes each decoded image (uint8, C x H x W) to
its row of one .npy file; once every row is there the file is renamed into place beside a
fingerprint of the folder (each file's path, size and mtime), and later epochs, and resumed
runs, read the file like an npy_dir. A folder whose files changed gets a new cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import threading
from pathlib import Path

import numpy as np

from cnncli.data.streaming import MappedArray, open_npy
from cnncli.errors import DataError
from cnncli.files import atomic_write, make_folder, new_file_mode

#: The folder of the run directory that holds the caches.
CACHE_FOLDER = "data_cache"
#: Bumped when the file's content or layout changes, so an old cache is not taken for new.
CACHE_VERSION = 1


def fingerprint(files) -> str:
    """What the decoded images depend on: every file's path, size and mtime, the size they
    are brought to and how (``files`` is a ``sources.ImageFiles``)."""
    digest = hashlib.sha256(json.dumps([CACHE_VERSION, list(files.image_shape),
                                        files.resize]).encode())
    for path in files.paths:
        try:
            stat = path.stat()
        except OSError as err:
            raise DataError(f"cannot read image {path}: {err.strerror or err}") from None
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


class DecodedCache:
    """An ``ImageFiles`` source whose images, once decoded, are kept in ``path`` (.npy)."""

    def __init__(self, files, path: Path, *, writing: bool = False):
        """``writing``: decoded images are written to the cache (else only a finished cache
        is read): set once the run directory is locked."""
        self.files, self.path, self.writing = files, Path(path), writing
        self.shape, self.dtype = files.shape, files.dtype
        self.meta = self.path.with_suffix(".json")
        self.fingerprint = fingerprint(files)
        self.stored: MappedArray | None = self._open_stored()
        self._lock = threading.Lock()
        self._part: tuple[int, str] | None = None   # (fd, path) of the file being filled
        self._filled: np.ndarray | None = None
        self._offset = 0

    def __len__(self) -> int:
        return len(self.files)

    @property
    def read_ahead(self) -> bool:
        """Decoding is read ahead in background threads; the finished file is read in place.
        Asked at each epoch's start, when a reader that does not write (an MPI rank other than
        0) takes up the file another process has finished since."""
        if self.stored is None and not self.writing:
            self.stored = self._open_stored()
        return self.stored is None

    def read(self, rows: np.ndarray) -> np.ndarray:
        if self.stored is not None:
            return self.stored.read(rows)
        images = self.files.read(rows)
        try:
            self._keep(np.asarray(rows, np.int64), images)
        except OSError as err:  # a full disk, say: one line, not a traceback
            self._abandon()
            raise DataError(f"cannot write the decoded images to {self.path}: "
                            f"{err.strerror or err}",
                            hint="free space there, or set data.cache: false") from None
        return images

    def will_need(self, rows: np.ndarray) -> None:
        if self.stored is not None:
            self.stored.will_need(rows)

    def warm_up(self) -> None:
        if self.stored is not None:
            self.stored.warm_up()

    # -- the finished file
    def _open_stored(self) -> MappedArray | None:
        """The cache of an earlier epoch or run, if it is of these very files."""
        try:
            meta = json.loads(self.meta.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(meta, dict) or meta.get("fingerprint") != self.fingerprint:
            return None
        try:
            mapped = open_npy(self.path)
        except DataError:
            return None
        if mapped.shape != self.shape or mapped.dtype != self.dtype:
            return None
        return MappedArray(mapped, mapped)

    # -- filling it during the first epoch
    def _keep(self, rows: np.ndarray, images: np.ndarray) -> None:
        with self._lock:
            if self.stored is not None or not self.writing:
                return
            if self._part is None:
                self._start()
            fd, _ = self._part
            row_bytes = images[0].nbytes if len(images) else 0
            flat = np.ascontiguousarray(images).reshape(len(images), -1)
            for i, row in enumerate(rows.tolist()):
                if not self._filled[row]:
                    _write_at(fd, flat[i], self._offset + row * row_bytes)
                    self._filled[row] = True
            if self._filled.all():
                self._finish()

    def _start(self) -> None:
        make_folder(self.path.parent)
        with contextlib.suppress(FileNotFoundError):  # an old cache is of other files
            self.meta.unlink()
        for stale in self.path.parent.glob(f".{self.path.name}.*.part"):
            with contextlib.suppress(OSError):  # a run killed while filling it
                stale.unlink()
        fd, part = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".part",
                                    dir=self.path.parent)
        os.chmod(part, new_file_mode())
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
                  "shape": self.shape}
        with os.fdopen(os.dup(fd), "wb") as f:
            np.lib.format.write_array_header_1_0(f, header)
            self._offset = f.tell()
        os.ftruncate(fd, self._offset + int(np.prod(self.shape)) * self.dtype.itemsize)
        self._part = (fd, part)
        self._filled = np.zeros(len(self.files), bool)

    def _finish(self) -> None:
        fd, part = self._part
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(part, self.path)
        atomic_write(self.meta, lambda f: f.write(json.dumps(
            {"fingerprint": self.fingerprint, "shape": list(self.shape),
             "files": len(self.files)}).encode()))
        self._part, self._filled = None, None
        self.stored = self._open_stored()

    def _abandon(self) -> None:
        """Stop filling the cache and delete the unfinished file."""
        part, self._part, self.writing = getattr(self, "_part", None), None, False
        if part is not None:
            with contextlib.suppress(OSError):
                os.close(part[0])
            with contextlib.suppress(OSError):
                os.unlink(part[1])

    def __del__(self):
        self._abandon()  # never finished (an interrupted first epoch): not kept

def _write_at(fd: int, data: np.ndarray, offset: int) -> None:
    """``data`` written at byte ``offset`` of the file (callers hold the cache's lock)."""
    if hasattr(os, "pwritev"):
        written = os.pwritev(fd, [data], offset)
    else:  # Windows: no positioned write
        os.lseek(fd, offset, os.SEEK_SET)
        written = os.write(fd, data.tobytes())
    if written != data.nbytes:
        raise OSError(f"wrote {written} of {data.nbytes} bytes")

"""A run directory: what cnncli writes there, the rules that protect what a user already had,
and the checkpoint writer that keeps last.npz, best.npz and metrics.csv consistent.

A folder is a run directory when cnncli made it (it holds ``MARKER``) or, for runs of earlier
versions, when it holds a run's files. Any other non-empty folder is refused; ``overwrite``
deletes only files cnncli writes. One training at a time: an exclusive lock (``LOCK``, holding
the pid) is taken for the whole run and released by the kernel if the process dies.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import numpy as np

from cnncli.errors import CheckpointError, ConfigError
from cnncli.files import atomic_write, make_folder
from cnncli.training.checkpoint import save_checkpoint
from cnncli.training.metrics import write_metrics_csv

MARKER = ".cnncli-run"
LOCK = ".cnncli-lock"
#: What makes a directory hold a run that a new one would overwrite.
RUN_FILES = ("last.npz", "best.npz", "metrics.csv")
#: The test-split scores of best.npz at the end of training (what ``cnncli runs`` lists).
TEST_FILE = "test.json"
#: Every file a training run writes (``overwrite`` deletes only these).
WRITTEN = (*RUN_FILES, "config.yaml", TEST_FILE, MARKER)
#: ``train.tensorboard``'s event files (``events.out.tfevents.*``) go into this subfolder.
TENSORBOARD_FOLDER = "tensorboard"


class RunBusy(ConfigError):
    """Another training holds the run directory."""


def same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and a.samefile(b)
    except OSError:
        return False


def stored_epoch(path: Path) -> int | None:
    """The ``epoch`` of a checkpoint, without loading its arrays (None if unreadable)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return int(data["epoch"])
    except Exception:  # a corrupt file holds nothing worth keeping
        return None


class RunDirectory:
    """The files of one run, and the writes that keep them a consistent set."""

    def __init__(self, path: Path):
        if str(path) == "":
            raise ConfigError("the run directory is an empty path",
                              hint="give a folder name, e.g. runs/NAME")
        self.path = Path(path)
        self.disk_epoch: int | None = None       # the epoch last.npz holds
        self.best_disk_epoch: int | None = None  # the epoch best.npz holds
        self._lock_fd: int | None = None

    @property
    def last(self) -> Path:
        return self.path / "last.npz"

    @property
    def best(self) -> Path:
        return self.path / "best.npz"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.csv"

    # -- ownership and locking
    def is_run(self) -> bool:
        return (self.path / MARKER).exists() or any((self.path / n).exists() for n in RUN_FILES)

    def claim(self) -> None:
        """Make the folder (if new), refuse one that holds a user's own files, mark it ours."""
        if self.path.exists() and self.path.is_dir() and not self.is_run():
            foreign = sorted(p.name for p in self.path.iterdir() if p.name != LOCK)
            if foreign:
                shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
                raise ConfigError(f"{self.path} is not a cnncli run directory and is not empty "
                                  f"({shown}); training there could overwrite those files",
                                  hint="choose a new or empty run directory (out_dir=DIR)")
        make_folder(self.path)
        marker = self.path / MARKER
        if not marker.exists():
            atomic_write(marker, lambda f: f.write(b"a run directory made by cnncli\n"))

    @contextlib.contextmanager
    def locked(self):
        """Hold the run directory's lock while the block runs."""
        self.acquire()
        try:
            yield self
        finally:
            self.release()

    def acquire(self) -> None:
        make_folder(self.path)
        try:
            import fcntl
        except ImportError:  # no flock (Windows): no protection against a second run
            return
        lock = self.path / LOCK
        while True:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise RunBusy(f"{self.path} is in use by another training (pid {holder})",
                              hint="wait for it to finish, or train into another out_dir=DIR"
                              ) from None
            try:
                current = os.stat(lock)
            except FileNotFoundError:
                current = None
            if current is not None and current.st_ino == os.fstat(fd).st_ino:
                break  # not unlinked by a run that released it meanwhile
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def release(self) -> None:
        if self._lock_fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.path / LOCK)
        os.close(self._lock_fd)
        self._lock_fd = None

    def remove_stale_temporaries(self) -> list[str]:
        """Delete temporaries of our atomic writes that a killed run left (``.last.npz.*.tmp``).
        Called with the lock held, so no other training is writing them."""
        removed = []
        for name in WRITTEN:
            for tmp in self.path.glob(f".{name}.*.tmp"):
                with contextlib.suppress(OSError):
                    tmp.unlink()
                    removed.append(tmp.name)
        return removed

    # -- rules for a new run and for resuming
    def refuse_overwrite(self, overwrite: bool) -> None:
        """A new run must not silently replace the checkpoints of a run already here; with
        ``overwrite`` they are deleted first, so no file of the old run is mistaken for the
        new one's."""
        found = [name for name in RUN_FILES if (self.path / name).exists()]
        if not found:
            return
        if overwrite:   # the old test scores and curves too, or they pass for the new run's
            events = (self.path / TENSORBOARD_FOLDER).glob("events.out.tfevents.*")
            for path in (*(self.path / name for name in (*found, TEST_FILE)), *events):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            return
        epoch = stored_epoch(self.last)
        held = ", ".join(found) + (f"; last.npz at epoch {epoch}" if epoch is not None else "")
        raise ConfigError(f"{self.path} already holds a run ({held}); training there would "
                          "overwrite it",
                          hint=f"continue it with resume={self.path}, train into another "
                               f"out_dir=DIR, or pass overwrite=True to replace it")

    def refuse_rollback(self, ckpt) -> None:
        """Resuming from an older checkpoint (best.npz) into its own run directory would
        overwrite the later epochs of last.npz and metrics.csv."""
        if not self.last.exists() or same_file(self.last, ckpt.path):
            return
        later = stored_epoch(self.last)
        if later is not None and later > ckpt.epoch:
            raise CheckpointError(
                f"{self.last} holds epoch {later}, later than {ckpt.path} (epoch "
                f"{ckpt.epoch}); resuming into {self.path} would overwrite it",
                hint=f"continue the run with resume={self.path}, or branch off from epoch "
                     f"{ckpt.epoch} with out_dir=NEW_DIR")

    # -- writes
    def write_test_scores(self, report: dict) -> Path:
        """``RUN_DIR/test.json``: best.npz's test-split report (``cnncli runs``/``report``)."""
        path = self.path / TEST_FILE
        text = json.dumps(report, indent=2) + "\n"
        atomic_write(path, lambda f: f.write(text.encode("utf-8")))
        return path

    def write_config(self, text: str) -> None:
        atomic_write(self.path / "config.yaml", lambda f: f.write(text.encode()))

    def save(self, snapshot: dict, *, best: bool) -> None:
        """last.npz (and best.npz when this epoch is the best), then metrics.csv."""
        save_checkpoint(self.last, **snapshot)
        self.disk_epoch = snapshot["epoch"]
        if best:
            save_checkpoint(self.best, **snapshot)
            self.best_disk_epoch = snapshot["epoch"]
        write_metrics_csv(self.metrics, snapshot["metrics"])

    def finish_interrupted(self, snapshot: dict) -> None:
        """Ctrl-C may land between an epoch's writes: finish the ones it skipped."""
        if self.disk_epoch != snapshot["epoch"]:
            save_checkpoint(self.last, **snapshot)
        best_epoch = snapshot["run_state"]["best_epoch"]
        if best_epoch == snapshot["epoch"] and self.best_disk_epoch != best_epoch:
            save_checkpoint(self.best, **snapshot)
        if snapshot["metrics"]:
            write_metrics_csv(self.metrics, snapshot["metrics"])

    def start_from(self, ckpt, snapshot: dict, best_epoch: int | None) -> None:
        """A new run directory continuing ``ckpt`` (out_dir, or resuming from best.npz): it
        starts with the resumed state, so a Ctrl-C, a later resume and the final report find
        the files they name; it gets the best.npz of the run it continues."""
        save_checkpoint(self.last, **snapshot)
        self.disk_epoch = snapshot["epoch"]
        self.best_disk_epoch = self._carry_best(ckpt, snapshot, best_epoch)

    def _carry_best(self, ckpt, snapshot: dict, best_epoch: int | None) -> int | None:
        if best_epoch is None:
            return None
        source = ckpt.path.parent / "best.npz"
        if same_file(source, self.best):
            return stored_epoch(source)
        if source.exists() and stored_epoch(source) == best_epoch:
            atomic_write(self.best, lambda f: f.write(source.read_bytes()))
            return best_epoch
        if ckpt.epoch == best_epoch:  # the resumed checkpoint is itself the best one
            save_checkpoint(self.best, **snapshot)
            return best_epoch
        return None


class FollowerRunDirectory(RunDirectory):
    """The run directory as MPI ranks other than 0 see it: rank 0 checks, locks and writes it;
    the others write nothing (so nothing is written twice, nor anywhere but rank 0's disk)."""

    def acquire(self) -> None: ...

    def release(self) -> None: ...

    def claim(self) -> None: ...

    def remove_stale_temporaries(self) -> list[str]:
        return []

    def refuse_overwrite(self, overwrite: bool) -> None: ...

    def refuse_rollback(self, ckpt) -> None: ...

    def write_test_scores(self, report: dict) -> Path:
        return self.path / TEST_FILE

    def write_config(self, text: str) -> None: ...

    def save(self, snapshot: dict, *, best: bool) -> None:
        self.disk_epoch = snapshot["epoch"]

    def finish_interrupted(self, snapshot: dict) -> None: ...

    def start_from(self, ckpt, snapshot: dict, best_epoch: int | None) -> None:
        self.disk_epoch = snapshot["epoch"]

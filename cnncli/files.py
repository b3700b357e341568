"""File safety shared by every layer: new files get the user's umask, folders are made with a
clear error, and writes are atomic (temp file beside the target, fsync, ``os.replace``)."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path


def new_file_mode() -> int:
    """The mode ``open()`` would give a new file (0o666 minus the umask); mkstemp uses 0o600."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def make_folder(folder: Path) -> None:
    """``mkdir -p``; a file in the way is named (mkdir alone says 'File exists')."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in (folder, *folder.parents) if p.is_file()), folder)
        raise NotADirectoryError(errno.ENOTDIR, f"{blocker} is a file, not a folder",
                                 str(folder)) from None


def atomic_write(path: Path, write) -> None:
    """Call ``write(file)`` on a temp file beside ``path``, then swap it in durably."""
    make_folder(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, new_file_mode())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:  # platforms without directory fds (Windows)
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)

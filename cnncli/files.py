"""Files cnncli writes: where they may go (``safe_path``), the user's umask for new files,
folders made with a clear error, and atomic writes (temp file beside the target, fsync,
``os.replace``)."""

from __future__ import annotations

import errno
import os
import re
import tempfile
from pathlib import Path

from cnncli.errors import ConfigError


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


#: A file-name part built from a layer, class or run name (the config loader's name rule): no
#: separators, no leading "." (so never "." or ".."), no control characters.
SAFE_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


def safe_path(folder, *parts: str) -> Path:
    """``folder/part/...`` after checking that no part can lead outside ``folder``.

    Parts come from names stored in configs and checkpoints, which may be hostile (a layer
    named ``../../x``): a part that is not a plain file name, or a result whose real location
    (symlinks resolved) is not inside ``folder``, raises ConfigError naming the part.
    """
    folder = Path(folder)
    for part in parts:
        if not isinstance(part, str) or not SAFE_PART.fullmatch(part):
            raise ConfigError(f"refusing to write a file named {part!r}: a name used in a file "
                              f"name may hold only letters, digits and _ . - (no / or ..)",
                              hint="rename it, or choose the file with out=PATH")
    path = folder.joinpath(*parts)
    root = folder.resolve()
    if not path.resolve().is_relative_to(root):  # a symlink inside folder pointing out
        raise ConfigError(f"refusing to write {path}: it leads outside {folder} (through a "
                          f"symbolic link)",
                          hint="remove the link, or choose the file with out=PATH")
    return path

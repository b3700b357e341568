"""Files cnncli writes: where they may go and how they are written."""

from __future__ import annotations

import re
from pathlib import Path

from cnncli.errors import ConfigError

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
                              hint="rename it, or choose the file with --out")
    path = folder.joinpath(*parts)
    root = folder.resolve()
    if not path.resolve().is_relative_to(root):  # a symlink inside folder pointing out
        raise ConfigError(f"refusing to write {path}: it leads outside {folder} (through a "
                          f"symbolic link)", hint="remove the link, or choose the file with --out")
    return path

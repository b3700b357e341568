"""One module per CLI command family; each adds its commands to ``cnncli.cli.main``."""

import importlib

for _name in ("summary", "train", "bench", "show"):
    try:
        importlib.import_module(f"{__name__}.{_name}")
    except ModuleNotFoundError as _err:  # a command family not written yet
        if _err.name != f"{__name__}.{_name}":
            raise

"""The command line: the Click group (``app``) and one module per command family.

Each command module parses options, calls the library and renders the result; importing them
here registers their commands on ``main``. The library never imports this package.
"""

from cnncli.cli import bench, data, interop, runs, show, summary, train  # noqa: F401  (register them)
from cnncli.cli.app import main

__all__ = ["main"]

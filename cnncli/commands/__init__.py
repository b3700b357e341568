"""One module per CLI command family; importing each adds its commands to ``cnncli.cli.main``."""

from . import bench, show, summary, train  # noqa: F401

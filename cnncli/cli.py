"""The command line: thin Click commands that call one library function and render it."""

from __future__ import annotations

import sys

import click

from .errors import CnncliError


class _Group(click.Group):
    """Turns a project error into one line on stderr and its exit code; never a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except CnncliError as err:
            click.echo(f"cnncli: error: {err}", err=True)
            sys.exit(err.exit_code)
        except MemoryError as err:   # a model or batch too big for this machine
            detail = f": {err}" if str(err) else ""
            click.echo(f"cnncli: error: out of memory{detail} (see the estimate of "
                       "'cnncli summary CONFIG --batch-size N'; use a smaller model or batch)",
                       err=True)
            sys.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="cnncli")
def main():
    """Train convolutional neural networks written in pure NumPy from a YAML file."""


# Commands live in their own modules and register themselves on `main`.
from . import commands  # noqa: E402,F401

"""The command line: thin Click commands that call one library function and render it."""

from __future__ import annotations

import re
import sys

import click
from click.exceptions import NoArgsIsHelpError

from cnncli.errors import CnncliError


class _OneLineUsageError(click.UsageError):
    """A Click usage error (bad option value, missing argument, no such file) shown as the
    project's one stderr line, not Click's four-line usage block; exit code 2 as before."""

    def show(self, file=None) -> None:
        where = self.ctx.command_path if self.ctx is not None else "cnncli"
        click.echo(f"cnncli: error: {' '.join(self.format_message().split())} "
                   f"(see '{where} --help')", err=True)


def _one_line(err: click.UsageError) -> click.UsageError:
    if isinstance(err, (_OneLineUsageError, NoArgsIsHelpError)):  # bare `cnncli`: the help
        return err
    return _OneLineUsageError(err.format_message(), err.ctx)


class _Group(click.Group):
    """Turns a project error into one line on stderr and its exit code; never a traceback."""

    def make_context(self, info_name, args, parent=None, **extra):
        try:  # the group's own options: `cnncli --bogus`
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as err:
            raise _one_line(err) from None

    def invoke(self, ctx):
        _reopen_closed_streams()
        try:
            return super().invoke(ctx)
        except click.UsageError as err:  # a command's arguments and options
            raise _one_line(err) from None
        except CnncliError as err:
            # One line whatever a quoted user value holds (a "\r" in a YAML string, say).
            click.echo(f"cnncli: error: {as_flags(' '.join(str(err).splitlines()))}", err=True)
            sys.exit(err.exit_code)
        except MemoryError as err:   # a model or batch too big for this machine
            detail = f": {err}" if str(err) else ""
            click.echo(f"cnncli: error: out of memory{detail} (see the estimate of "
                       "'cnncli summary CONFIG --batch-size N'; use a smaller model or batch)",
                       err=True)
            sys.exit(1)
        except KeyboardInterrupt:  # Ctrl-C outside a training loop (which saves and says so)
            click.echo("\ncnncli: interrupted", err=True)
            sys.exit(130)


#: The library names the arguments of its functions (``train(out_dir=...)``) as ``name=``; the
#: command line sets them with these flags.
ARGUMENT_FLAGS = (("overwrite=True", "--overwrite"), ("out_dir=", "--out "),
                  ("resume=", "--resume "), ("epochs=", "--epochs "),
                  ("batch_size=", "--batch-size "), ("lr=", "--lr "), ("seed=", "--seed "),
                  ("data=", "--data "), ("split=", "--split "), ("out=", "--out "),
                  ("at=", "--at "), ("terminal=True", "--terminal"), ("plot=", "--plot "),
                  ("errors=", "--errors "))


def as_flags(text: str) -> str:
    """A library message with its argument names turned into the flags that set them."""
    for argument, flag in ARGUMENT_FLAGS:
        text = re.sub(rf"(?<![\w.-]){re.escape(argument)}", flag, text)
    return text


def table_console():
    """The Rich console tables print on; not a terminal (pipe, file, test runner): wide enough
    that tables never wrap."""
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 200, highlight=False)


def _reopen_closed_streams() -> None:
    """``cnncli ... >&-`` starts Python with sys.stdout None: write to the null device instead
    of failing on the first print."""
    import os

    for name in ("stdout", "stderr"):
        if getattr(sys, name) is None:
            setattr(sys, name, open(os.devnull, "w"))  # noqa: SIM115 (for the whole run)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="cnncli")
def main():
    """Train convolutional neural networks written in pure NumPy from a YAML file."""


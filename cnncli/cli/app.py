"""The command line: thin Click commands that call one library function and render it."""

from __future__ import annotations

import errno
import re
import sys
import warnings

import click
from click.exceptions import NoArgsIsHelpError

from cnncli.errors import CnncliError, printable


class _OneLineUsageError(click.UsageError):
    """A Click usage error (bad option value, missing argument, no such file) shown as the
    project's one stderr line, not Click's four-line usage block; exit code 2 as before."""

    def show(self, file=None) -> None:
        where = self.ctx.command_path if self.ctx is not None else "cnncli"
        click.echo(printable(f"cnncli: error: {' '.join(self.format_message().split())} "
                             f"(see '{where} --help')"), err=True)


def _one_line(err: click.UsageError) -> click.UsageError:
    if isinstance(err, (_OneLineUsageError, NoArgsIsHelpError)):  # bare `cnncli`: the help
        return err
    return _OneLineUsageError(err.format_message(), err.ctx)


class _OutputFailed(Exception):
    """Standard output could not be written (a full disk, a closed pipe). Not an OSError, so a
    command's handler for its own files (`train`'s run directory) does not take it for one."""

    def __init__(self, err: OSError):
        super().__init__(err.strerror or str(err))
        self.errno = err.errno


class _GuardedOutput:
    """sys.stdout as the commands see it: a failed write raises _OutputFailed."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text):
        try:
            return self._stream.write(text)
        except OSError as err:
            raise _OutputFailed(err) from None

    def flush(self):
        try:
            self._stream.flush()
        except OSError as err:
            raise _OutputFailed(err) from None

    def __getattr__(self, name):
        return getattr(self._stream, name)


_FLOAT_WARNINGS = r"(overflow|invalid value|divide by zero|underflow) encountered"


def _interrupted():
    click.echo("\ncnncli: interrupted", err=True)
    sys.exit(130)


class _Group(click.Group):
    """Turns a project error into one line on stderr and its exit code; never a traceback."""

    def main(self, *args, **kwargs):
        _reopen_closed_streams()
        stdout = sys.stdout
        sys.stdout = _GuardedOutput(stdout)
        try:
            try:
                with warnings.catch_warnings():
                    # NumPy's float warnings (overflow in a layer of a damaged model, say): the
                    # library checks its results for inf/NaN and says what went wrong itself.
                    warnings.filterwarnings("ignore", _FLOAT_WARNINGS, RuntimeWarning)
                    return super().main(*args, **kwargs)
            finally:
                sys.stdout.flush()  # fail here, not in the interpreter's last flush
        except _OutputFailed as err:
            _silence(stdout)
            if err.errno == errno.EPIPE:  # `cnncli layers | head -1`: quietly, as SIGPIPE would
                sys.exit(141)
            click.echo(f"cnncli: error: cannot write to standard output: {err}", err=True)
            sys.exit(1)
        finally:
            sys.stdout = stdout

    def make_context(self, info_name, args, parent=None, **extra):
        try:  # the group's own options: `cnncli --bogus`
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as err:
            raise _one_line(err) from None
        except KeyboardInterrupt:
            _interrupted()

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except click.UsageError as err:  # a command's arguments and options
            raise _one_line(err) from None
        except CnncliError as err:
            from cnncli.parallel import mpi

            if isinstance(err, mpi.RunStopped):  # rank 0 has told the error
                mpi.stop_now(err.exit_code)
            # One line whatever a quoted user value holds (a "\r" in a YAML string, say).
            _fail(printable(as_flags(" ".join(str(err).splitlines()))), err.exit_code)
        except MemoryError as err:   # a model or batch too big for this machine
            detail = f": {err}" if str(err) else ""
            _fail(f"out of memory{detail} (see the estimate of 'cnncli summary CONFIG "
                  "--batch-size N'; use a smaller model or batch)", 1)
        except KeyboardInterrupt:  # Ctrl-C outside a training loop (which saves and says so)
            _interrupted()


def _fail(line: str, code: int) -> None:
    """``cnncli: error: line`` and exit ``code``. Under MPI, a rank other than 0 hands the line
    to rank 0, which tells it once (or its own error), and exits with the code rank 0 ends the
    run with; rank 0 ends the other ranks as it exits."""
    from cnncli.parallel import mpi

    stopped = mpi.tell_rank_0(line, code)
    if stopped is not None:
        mpi.stop_now(stopped)
    click.echo(f"cnncli: error: {line}", err=True)
    mpi.stop_now(code)
    sys.exit(code)


def _silence(stream) -> None:
    """Point a failed stdout's descriptor at the null device, so the output still buffered in
    it is dropped at exit instead of failing again with a traceback."""
    import os

    try:
        fd = stream.fileno()
    except (OSError, ValueError, AttributeError):  # not a real file (CliRunner's buffer)
        return
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, fd)
    os.close(null)


#: The library names the arguments of its functions (``train(out_dir=...)``) as ``name=``; the
#: command line sets them with these flags.
ARGUMENT_FLAGS = (("overwrite=True", "--overwrite"), ("out_dir=", "--out "),
                  ("resume=", "--resume "), ("epochs=", "--epochs "),
                  ("batch_size=", "--batch-size "), ("lr=", "--lr "), ("seed=", "--seed "),
                  ("data=", "--data "), ("split=", "--split "), ("out=", "--out "),
                  ("at=", "--at "), ("terminal=True", "--terminal"), ("plot=", "--plot "),
                  ("errors=", "--errors "), ("format=", "--format "), ("opset=", "--opset "),
                  ("reinit=", "--reinit "), ("freeze=", "--freeze "), ("resize=", "--resize "),
                  ("input_shape=", "--input-shape "), ("size=", "--size "))


def as_flags(text: str) -> str:
    """A library message with its argument names turned into the flags that set them."""
    for argument, flag in ARGUMENT_FLAGS:
        text = re.sub(rf"(?<![\w.-]){re.escape(argument)}", flag, text)
    return text


def table_console(table=None, piped_width: int = 200):
    """The Rich console tables print on; not a terminal (pipe, file, test runner): wide enough
    that tables never wrap (``piped_width`` columns, or as wide as ``table`` needs)."""
    from rich.console import Console

    if sys.stdout.isatty():
        return Console(highlight=False)
    width = piped_width
    if table is not None:
        width = max(width, Console(width=1 << 16).measure(table).maximum)
    return Console(width=width, highlight=False)


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

